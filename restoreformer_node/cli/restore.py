"""`python -m restoreformer_node restore INPUT... --model FILE --out DIR`: restore faces in image files.

The same pipeline as the ComfyUI nodes, without ComfyUI: detect, align, restore in batches, paste
back. Inputs are files or folders (their images, optionally recursively); the outputs mirror the
input tree inside DIR (jobs.py). Every input image gives one PNG with the same pixel layout (gray,
gray+alpha, RGB, RGBA; alpha is kept; 16-bit and float gray as 16-bit PNG, see images.py). Files
of the same size are restored together in batches (video frames exported as images).

The run has three stages, each in its own place:
1. `check_arguments`: every argument and input is checked and the outputs are planned, then the
   network and the detector are loaded; any problem stops here with one line and status 2,
   before anything is written;
2. `restore_jobs`: images are read lazily in batches; a file that cannot be read, restored or
   written is reported and counted, and the rest of the batch and the run go on;
3. the summary: images, faces, failures; status 1 when anything failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..options import (
    COLOR_MATCH_MODES,
    COMPILE_MODES,
    DEFAULT_DETECTOR,
    DEFAULT_ERODE,
    DEFAULT_FEATHER,
    DEFAULT_MAX_PIXELS,
    DETECTORS,
    MAX_ERODE,
    MAX_FEATHER,
    PRECISIONS,
)
from . import upscale
from .arguments import UsageError, finite_number, output_folder, readable_file, torch_device, whole_number
from .jobs import Job, crop_target, plan_jobs

BATCH_PIXELS = 48_000_000  # images of one batch in memory at once (about 8 frames of 2560x2304)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore the faces in image files or folders",
        description=(
            "Detect faces, align them to the 512x512 template, restore them with a RestoreFormer / "
            "RestoreFormer++ weight file and paste them back. Writes one PNG per input image into --out. "
            "Exit status: 0 all restored, 1 some files or faces failed (the rest were written), "
            "2 bad arguments or a refused weight file (nothing written)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--model", required=True, metavar="FILE", help="RestoreFormer weights (.safetensors, .ckpt, .pth)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the restored PNGs (created if needed); the input tree is mirrored inside it")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders of folder inputs")
    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=DETECTORS,
        help="mtcnn (weights ship with facenet-pytorch), retinaface_resnet50 or retinaface_mobilenet0.25 "
        "(these need --detector-weights)",
    )
    p.add_argument("--detector-weights", metavar="FILE", help="facexlib's RetinaFace .pth for a retinaface detector")
    p.add_argument("--select", choices=("all", "largest"), default="all", help="restore all faces or the largest per image")
    p.add_argument("--strength", type=float, default=1.0, help="0 keeps the original face, 1 the restored one (default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="network arithmetic on a GPU (a CPU runs fp32); bf16 also stores the weights in bf16 (faster, half the memory)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the network through torch.compile: the first batch compiles (about a minute), later "
        "ones run faster; pays for many images (video frames) on a GPU. Falls back to normal runs if it "
        "fails; a CPU runs uncompiled, which is faster there (RESTOREFORMER_COMPILE_ON_CPU=1 forces it)",
    )
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default", help="torch.compile mode for --compile")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1, mps")
    p.add_argument("--feather", type=float, default=DEFAULT_FEATHER, help=f"soft edge of the paste mask, pixels of a 512 crop (0-{MAX_FEATHER:g})")
    p.add_argument("--erode", type=float, default=DEFAULT_ERODE, help=f"inset of the paste mask, pixels of a 512 crop (0-{MAX_ERODE:g})")
    p.add_argument("--color-match", choices=COLOR_MATCH_MODES, default="none", help="match restored colours to the original face")
    p.add_argument("--batch", type=int, default=8, help="images of one size restored together (default 8)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS:,}; a small file can "
        "declare a huge image)",
    )
    p.add_argument("--save-crops", action="store_true", help="also write the restored 512 crops to DIR/crops (mirroring the input tree)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out, crops included (default: skip them)")
    upscale.add_arguments(p)
    p.set_defaults(func=run)


@dataclass
class Settings:
    """The checked arguments of one run."""

    out: Path
    jobs: list[Job]
    device: object  # torch.device
    strength: float
    feather: float
    erode: float
    batch: int
    max_pixels: int
    detector_weights: Path | None


@dataclass
class Tally:
    """What the run did, for the summary and the exit status."""

    images: int = 0
    faces: int = 0
    failed_files: list[Path] = field(default_factory=list)
    failed_faces: int = 0
    skipped: int = 0

    def fail(self, source: Path, reason: str) -> None:
        print(f"{source}: {reason}; not restored", file=sys.stderr)
        self.failed_files.append(source)

    def summary(self, seconds: float) -> str:
        parts = [f"{self.images} image{'s' if self.images != 1 else ''}", f"{self.faces} face{'s' if self.faces != 1 else ''}"]
        if self.failed_files:
            parts.append(f"{len(self.failed_files)} file{'s' if len(self.failed_files) != 1 else ''} failed")
        if self.failed_faces:
            parts.append(f"{self.failed_faces} face{'s' if self.failed_faces != 1 else ''} failed")
        if self.skipped:
            parts.append(f"{self.skipped} skipped (exist)")
        return ", ".join(parts) + f", {seconds:.1f} s"

    @property
    def status(self) -> int:
        return 1 if self.failed_files or self.failed_faces else 0


def check_arguments(args: argparse.Namespace) -> Settings:
    """Every argument and input checked, outputs planned; raises UsageError. Nothing is read
    beyond file metadata and nothing is written."""
    strength = finite_number("--strength", args.strength, 0.0, 1.0)
    feather = finite_number("--feather", args.feather, 0.0, MAX_FEATHER)
    erode = finite_number("--erode", args.erode, 0.0, MAX_ERODE)
    batch = whole_number("--batch", args.batch, 1)
    max_pixels = whole_number("--max-pixels", args.max_pixels, 1)
    readable_file("--model", args.model)
    from ..faces.detectors import needs_weights

    detector_weights = None
    if needs_weights(args.detector):
        if not args.detector_weights:
            raise UsageError(f"--detector {args.detector} needs --detector-weights FILE (facexlib's RetinaFace .pth)")
        detector_weights = readable_file("--detector-weights", args.detector_weights)
    elif args.detector_weights:
        raise UsageError(f"--detector-weights is for the retinaface detectors; --detector {args.detector} takes none")
    device = torch_device(args.device)
    out = output_folder("--out", args.out)
    jobs = plan_jobs(args.inputs, out, args.recursive, args.save_crops)
    return Settings(out, jobs, device, strength, feather, erode, batch, max_pixels, detector_weights)


def open_detector(kind: str, weights: Path | None, device):
    """The face detector, loaded before any image is read; a bad weight file is a UsageError
    (a refused pickle stays a WeightLoadError, whose message says what the file tried)."""
    from ..faces.detection import load_detector
    from ..faces.detectors import DetectorWeightsMissing

    try:
        return load_detector(kind, weights, device)
    except (DetectorWeightsMissing, ValueError) as error:
        raise UsageError(f"--detector-weights {weights}: {' '.join(str(error).split())}") from None
    except ImportError as error:
        raise UsageError(f"--detector {kind} needs the facexlib package ({error}); pip install facexlib") from None


def loaded_batches(jobs: list[Job], settings: Settings, tally: Tally) -> Iterator[list]:
    """(job, LoadedImage) lists of one image size, read lazily, at most `batch` images and
    BATCH_PIXELS per list; unreadable files are reported and counted here."""
    from .images import ImageError, read_image

    current: list = []
    for job in jobs:
        try:
            image = read_image(job.source, settings.max_pixels)
        except ImageError as error:
            tally.fail(job.source, f"cannot be read: {error}")
            continue
        except Exception as error:  # a decoder's own failure on a hostile file: still this file only
            tally.fail(job.source, f"cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:300]})")
            continue
        shape = image.pixels.shape
        if current and (
            current[0][1].pixels.shape != shape
            or len(current) >= settings.batch
            or (len(current) + 1) * shape[0] * shape[1] > BATCH_PIXELS
        ):
            yield current
            current = []
        current.append((job, image))
    if current:
        yield current


@dataclass
class Restorer:
    """Runs the pipeline on batches and writes each result through the output folder."""

    args: argparse.Namespace
    settings: Settings
    model: object
    detector: object
    compile_options: object  # CompileOptions or None
    upscaling: object  # upscale.Upscale or None: images upscaled before their faces are restored
    folder: object  # OutputFolder
    tally: Tally
    told: set = field(default_factory=set)

    def run_group(self, group: list) -> None:
        """Restore a batch and write its files; when the batch fails as a whole, each image is
        tried alone, so one bad file costs only itself."""
        try:
            results = self._restore(group)
        except Exception as error:  # per-file failure: report it, keep going
            if len(group) > 1:
                for item in group:
                    self.run_group([item])
            else:
                reason = " ".join(str(error).split())[:300]
                self.tally.fail(group[0][0].source, f"failed ({type(error).__name__}: {reason})")
            return
        for result in results:
            self._write(*result)

    def _restore(self, group: list) -> list[tuple]:
        """(job, image, PNG bytes, crops as PNG bytes or None per face, failed face count) per image."""
        import torch

        from ..faces.detection import FaceSelection, find_faces
        from ..faces.pipeline import restore_faces
        from .images import encode_png

        args, settings = self.args, self.settings
        images = torch.stack([image.pixels for _, image in group])
        faces = find_faces(self.detector, images, FaceSelection(mode=args.select))
        if self.upscaling is not None:
            images, faces, _ = self.upscaling.apply(images, faces)
        result = restore_faces(
            images,
            self.model,
            faces,
            strength=settings.strength,
            precision=args.precision,
            feather=settings.feather,
            erode=settings.erode,
            color_match=args.color_match,
            device=settings.device,
            compile_options=self.compile_options,
        )
        note = result.report.precision_note
        if note and note not in self.told:  # said once per run, not once per batch
            self.told.add(note)
            print(note)
        failed = set(result.report.failed_faces)
        out = []
        for i, (job, image) in enumerate(group):
            mine = [k for k, face in enumerate(faces.faces) if face.image_index == i]
            crops = [
                None if k in failed or not args.save_crops else encode_png(result.crops[k], "RGB") for k in mine
            ]
            bad = sum(1 for k in mine if k in failed)
            out.append((job, image, encode_png(result.images[i], image.mode), crops, bad))
        return out

    def _write(self, job: Job, image, png: bytes, crops: list, bad: int) -> None:
        from .outputs import OutputError

        args, tally = self.args, self.tally
        crop_lines = []
        try:
            if not self.folder.write(job.target, png):
                print(f"{job.source}: {job.target} exists, skipped (use --overwrite to replace it)")
                tally.skipped += 1
                return
            for number, crop in enumerate(crops):
                target = crop_target(job, self.settings.out, number)
                if crop is not None and not self.folder.write(target, crop):
                    crop_lines.append(f"crop {target} exists, skipped (use --overwrite to replace it)")
        except OutputError as error:
            tally.fail(job.source, str(error))
            return
        good = len(crops) - bad
        tally.images += 1
        tally.faces += good
        tally.failed_faces += bad
        extra = f" ({'; '.join(image.notes)})" if image.notes else ""
        if not crops:
            print(f"{job.source}: no face found by {args.detector}; written unchanged -> {job.target}{extra}")
        else:
            text = f"{job.source}: {good} face{'s' if good != 1 else ''} restored"
            if bad:
                text += f", {bad} failed (the network's output was not finite; the original face was kept)"
            print(f"{text} -> {job.target}{extra}", file=sys.stderr if bad else sys.stdout)
        for line in crop_lines:
            print(f"{job.source}: {line}")


def run(args: argparse.Namespace) -> int:
    from ..runtime import CompileOptions, compile_skipped, prepare
    from .outputs import OutputFolder

    settings = check_arguments(args)
    tally = Tally()
    todo = []
    for job in settings.jobs:
        if job.target.exists() and not args.overwrite:
            print(f"{job.source}: {job.target} exists, skipped (use --overwrite to replace it)")
            tally.skipped += 1
        else:
            todo.append(job)
    if not todo:
        return 0
    started = time.perf_counter()
    device = settings.device
    # bf16 on a GPU: the weights are held in bf16 and run natively (a CPU keeps fp32 and says so).
    prepared = prepare(args.model, device, "bf16" if args.precision == "bf16" else "fp32")
    detector = open_detector(args.detector, settings.detector_weights, device)
    try:
        upscaling = upscale.prepare(args, device)  # an upscale model file: read (safely) before any image
    except ValueError as error:
        raise UsageError(str(error)) from None
    how = ""
    compile_options = CompileOptions(mode=args.compile_mode) if args.compile else None
    if compile_options is not None:
        skipped = compile_skipped(compile_options, device)
        how = f"; {skipped}" if skipped else f", {compile_options.describe()} (the first batch compiles: a minute or more)"
    weights = ", bf16 weights" if prepared.weight_dtype == "bf16" else ""
    print(f"{Path(args.model).name}: {prepared.model.config.variant} on {device}{weights}{how}; detector {args.detector}"
          + (f"; {upscaling.describe()}" if upscaling else ""))

    folder = OutputFolder(settings.out, overwrite=args.overwrite, protected=[job.source for job in settings.jobs])
    restorer = Restorer(args, settings, prepared.model, detector, compile_options, upscaling, folder, tally)
    for group in loaded_batches(todo, settings, tally):
        restorer.run_group(group)
    print(tally.summary(time.perf_counter() - started))
    return tally.status
