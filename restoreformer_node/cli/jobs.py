"""Input planning for `restore`: which files are read and where each output goes.

An input file gives `OUT/<name>.png`; a folder input gives `OUT/<path inside the folder>.png`, so
the output tree mirrors the input tree. Crops (--save-crops) mirror it under `OUT/crops/`:
`OUT/crops/<path inside the folder>_face<k>.png`. Planning refuses, before anything is read or
written: missing inputs, folders without images, two inputs that would write one file (names
compared case-insensitively, so a plan is safe on any file system), an output that is an input
(resolved paths, links and case included), and restored images that would land among the crops.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..options import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .arguments import UsageError
from .outputs import path_key

CROPS_FOLDER = "crops"


@dataclass(frozen=True)
class Job:
    source: Path  # the image file read (for a frame of a video: the video file)
    target: Path  # the PNG written
    relative: PurePath  # the source's path below its input folder (its name for a file input)
    frame: int | None = None  # position in its sequence (restore --sequence), else None
    video: bool = False  # the frame is decoded from the video file `source`

    @property
    def label(self) -> str:
        """How messages name the input: its path, and the frame for a frame of a video."""
        return f"{self.source} frame {self.frame}" if self.video else str(self.source)


def images_in(folder: Path, recursive: bool) -> list[Path]:
    """Image files in `folder` (and its sub-folders with `recursive`; linked folders are not
    entered), sorted."""
    walk = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walk if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def plan_jobs(inputs: Sequence[str], out: Path, recursive: bool, save_crops: bool = False) -> list[Job]:
    """Input files and folders -> jobs. Raises UsageError (see the module docstring)."""
    jobs: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                found = images_in(path, recursive)
            except OSError as error:
                raise UsageError(f"{path}: the folder cannot be read ({error.strerror or error})") from None
            if not found:
                raise UsageError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            for f in found:
                relative = f.relative_to(path)
                jobs.append(Job(f, out / relative.with_suffix(".png"), relative))
        elif path.is_file():
            if path.suffix.lower() in VIDEO_SUFFIXES:
                raise UsageError(f"{path}: a video file; restore its frames with --sequence")
            jobs.append(Job(path, out / (path.stem + ".png"), PurePath(path.name)))
        elif path.exists():
            raise UsageError(f"{path}: not a file or folder")
        else:
            raise UsageError(f"{path}: no such file or folder")
    check_plan(jobs, out, save_crops)
    return jobs


def check_plan(jobs: Sequence[Job], out: Path, save_crops: bool) -> None:
    inputs = {path_key(job.source): job.source for job in jobs}
    targets: dict[str, Job] = {}
    crops = path_key(out / CROPS_FOLDER)
    for job in jobs:
        key = path_key(job.target)
        if key in targets:
            raise UsageError(
                f"{targets[key].source} and {job.source} would both be written to {job.target} (names that "
                "differ only in case are one file on Windows and macOS): rename one or restore them into "
                "different --out folders"
            )
        if key in inputs:
            raise UsageError(
                f"{job.source}: its output {job.target} is the input file {inputs[key]}; choose an --out "
                "folder outside the input tree"
            )
        if save_crops and _inside(key, crops):
            raise UsageError(
                f"{job.source}: its output {job.target} would be among the crops --save-crops writes to "
                f"{out / CROPS_FOLDER}; choose another --out folder"
            )
        targets[key] = job
    if save_crops:
        for key, source in inputs.items():
            if _inside(key, crops):
                raise UsageError(
                    f"{source}: an input inside {out / CROPS_FOLDER}, where --save-crops writes; choose another --out folder"
                )


def _inside(key: str, folder_key: str) -> bool:
    return key == folder_key or key.startswith(folder_key.rstrip(os.sep) + os.sep)


def crop_target(job: Job, out: Path, index: int) -> Path:
    """Where the restored crop of the job's face `index` goes (mirrors the input tree)."""
    return out / CROPS_FOLDER / job.relative.parent / f"{job.relative.stem}_face{index}.png"


__all__ = ["CROPS_FOLDER", "Job", "check_plan", "crop_target", "images_in", "plan_jobs"]
