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

With --sequence each input is one video (a folder of frames or a video file) whose faces are
tracked and smoothed through all its frames (restore_sequence.py). Under torchrun every process
restores its own share of the inputs (distributed.py: every world-th file, or a contiguous block
of each sequence's frames) and rank 0 prints the summary of all of them. Existing outputs are
skipped unless --overwrite: outputs are written to a temporary file and renamed (outputs.py),
so an output that exists is complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..options import (
    COLOR_MATCH_MODES,
    COMPILE_MODES,
    DEFAULT_DETECTOR,
    DEFAULT_ERODE,
    DEFAULT_FEATHER,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TRACK_GAP,
    DEFAULT_VIDEO_SMOOTHING,
    DETECTORS,
    MAX_ERODE,
    MAX_FEATHER,
    PRECISIONS,
)
from . import upscale
from .arguments import UsageError, finite_number, output_folder, readable_file, torch_device, whole_number
from .distributed import Ranks
from .jobs import Job, crop_target, plan_jobs

BATCH_PIXELS = 48_000_000  # images of one batch in memory at once (about 8 frames of 2560x2304)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore the faces in image files or folders",
        description=(
            "Detect faces, align them to the 512x512 template, restore them with a RestoreFormer / "
            "RestoreFormer++ weight file and paste them back. Writes one PNG per input image (or video "
            "frame, with --sequence) into --out. Runs under torchrun too: each process restores its own "
            "share of the inputs. Exit status: 0 all restored (or skipped), 1 some files or faces failed "
            "(the rest were written), 2 bad arguments or a refused weight file (nothing written); under "
            "torchrun, torchrun exits non-zero when any process does."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images (with --sequence: folders of frames or video files)")
    p.add_argument("--model", required=True, metavar="FILE", help="RestoreFormer weights (.safetensors, .ckpt, .pth)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the restored PNGs (created if needed); the input tree is mirrored inside it")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders of folder inputs")
    p.add_argument(
        "--sequence",
        action="store_true",
        help="each INPUT is one video: a folder of frames (in natural order: frame_2 before frame_10; written "
        "under their own names) or a video file (decoded frame by frame with OpenCV; frame k is written as "
        "NAME_<k, 6 digits>.png). Faces are tracked through all the frames and smoothed over time, as "
        "Detect Faces does with video_smoothing; frames are read twice (faces first, then restored), a "
        "batch at a time",
    )
    p.add_argument(
        "--video-smoothing",
        type=float,
        metavar="S",
        help=f"with --sequence: strength of the temporal smoothing from 0 (each frame on its own, exactly as "
        f"without --sequence) to 1 (default {DEFAULT_VIDEO_SMOOTHING})",
    )
    p.add_argument(
        "--max-gap",
        type=int,
        metavar="N",
        help="with --sequence: frames in a row a face may be missed by the detector and keep its track; those "
        f"frames get its interpolated position (default {DEFAULT_TRACK_GAP})",
    )
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
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing files in --out, crops included (default: skip them)")
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip inputs whose output exists in --out (the default, stated; for reruns of interrupted runs: "
        "outputs are written to a temporary file and renamed, so an output that exists is complete)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display and no line per restored file (failures and the summary still print)")
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
    sequences: list | None = None  # FrameSequence list with --sequence, else None
    smoothing: float = 0.0  # --video-smoothing
    max_gap: int = DEFAULT_TRACK_GAP


@dataclass
class Tally:
    """What the run did, for the summary and the exit status; `advance(count)` is told of every
    input finished (written, failed or skipped), for the progress display."""

    images: int = 0
    faces: int = 0
    failed_files: int = 0
    failed_faces: int = 0
    skipped: int = 0
    advance: Callable[[int], None] = field(default=lambda count: None, repr=False)

    def fail(self, source: Path | str, reason: str) -> None:
        print(f"{source}: {reason}; not restored", file=sys.stderr)
        self.failed_files += 1
        self.advance(1)

    def counts(self) -> list[int]:
        return [self.images, self.faces, self.failed_files, self.failed_faces, self.skipped]

    @classmethod
    def of_counts(cls, counts: list[int]) -> Tally:
        return cls(*counts)

    def summary(self, seconds: float) -> str:
        parts = [f"{self.images} image{'s' if self.images != 1 else ''}", f"{self.faces} face{'s' if self.faces != 1 else ''}"]
        if self.failed_files:
            parts.append(f"{self.failed_files} file{'s' if self.failed_files != 1 else ''} failed")
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
    smoothing, max_gap = DEFAULT_VIDEO_SMOOTHING, DEFAULT_TRACK_GAP
    if not args.sequence:
        for flag, value in (("--video-smoothing", args.video_smoothing), ("--max-gap", args.max_gap)):
            if value is not None:
                raise UsageError(f"{flag} is for videos: add --sequence (each input a folder of frames or a video file)")
        jobs = plan_jobs(args.inputs, out, args.recursive, args.save_crops)
        return Settings(out, jobs, device, strength, feather, erode, batch, max_pixels, detector_weights)
    if args.video_smoothing is not None:
        smoothing = finite_number("--video-smoothing", args.video_smoothing, 0.0, 1.0)
    if args.max_gap is not None:
        max_gap = whole_number("--max-gap", args.max_gap, 0)
    if args.recursive:
        raise UsageError("--recursive is for folders of images; --sequence reads the frames directly inside each folder")
    from .sequence import plan_sequences

    sequences = plan_sequences(args.inputs, out, args.save_crops)
    jobs = [job for sequence in sequences for job in sequence.jobs]
    return Settings(
        out, jobs, device, strength, feather, erode, batch, max_pixels, detector_weights, sequences, smoothing, max_gap
    )


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
            tally.fail(job.label, f"cannot be read: {error}")
            continue
        except Exception as error:  # a decoder's own failure on a hostile file: still this file only
            tally.fail(job.label, f"cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:300]})")
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

    def run_group(self, group: list, faces_for: Callable | None = None) -> None:
        """Restore a batch and write its files; when the batch fails as a whole, each image is
        tried alone, so one bad file costs only itself. faces_for(group) -> Faces gives faces found
        beforehand (a tracked sequence); without it the faces are detected here, per image."""
        try:
            results = self._restore(group, faces_for)
        except Exception as error:  # per-file failure: report it, keep going
            if len(group) > 1:
                for item in group:
                    self.run_group([item], faces_for)
            else:
                reason = " ".join(str(error).split())[:300]
                self.tally.fail(group[0][0].label, f"failed ({type(error).__name__}: {reason})")
            return
        for result in results:
            self._write(*result)

    def _restore(self, group: list, faces_for: Callable | None = None) -> list[tuple]:
        """(job, image, PNG bytes, crops as PNG bytes or None per face, failed face count) per image."""
        import torch

        from ..faces.detection import FaceSelection, find_faces
        from ..faces.pipeline import restore_faces
        from .images import encode_png

        args, settings = self.args, self.settings
        images = torch.stack([image.pixels for _, image in group])
        if faces_for is not None:
            faces = faces_for(group)
        else:
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
                print(f"{job.label}: {job.target} exists, skipped (use --overwrite to replace it)")
                tally.skipped += 1
                tally.advance(1)
                return
            for number, crop in enumerate(crops):
                target = crop_target(job, self.settings.out, number)
                if crop is not None and not self.folder.write(target, crop):
                    crop_lines.append(f"crop {target} exists, skipped (use --overwrite to replace it)")
        except OutputError as error:
            tally.fail(job.label, str(error))
            return
        good = len(crops) - bad
        tally.images += 1
        tally.faces += good
        tally.failed_faces += bad
        tally.advance(1)
        extra = f" ({'; '.join(image.notes)})" if image.notes else ""
        if not crops:
            if not args.quiet:
                print(f"{job.label}: no face found by {args.detector}; written unchanged -> {job.target}{extra}")
        elif bad or not args.quiet:
            text = f"{job.label}: {good} face{'s' if good != 1 else ''} restored"
            if bad:
                text += f", {bad} failed (the network's output was not finite; the original face was kept)"
            print(f"{text} -> {job.target}{extra}", file=sys.stderr if bad else sys.stdout)
        for line in crop_lines:
            print(f"{job.label}: {line}")


def open_restorer(args: argparse.Namespace, settings: Settings, device, tally: Tally, ranks: Ranks) -> Restorer:
    """The network, the detector and the upscaler loaded on `device`, and the line saying so."""
    from ..runtime import CompileOptions, compile_skipped, prepare
    from .outputs import OutputFolder

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
    print(f"{ranks.tag()}{Path(args.model).name}: {prepared.model.config.variant} on {device}{weights}{how}; "
          f"detector {args.detector}" + (f"; {upscaling.describe()}" if upscaling else ""))
    folder = OutputFolder(settings.out, overwrite=args.overwrite, protected=[job.source for job in settings.jobs])
    return Restorer(args, settings, prepared.model, detector, compile_options, upscaling, folder, tally)


def own_shares(settings: Settings, ranks: Ranks) -> list[tuple[object, list[Job]]]:
    """(sequence or None, this process's jobs of it): every world-th image file, or a contiguous
    block of each sequence's frames. Blocks are cut between the detector's chunks of frames
    (CHUNK_FRAMES; smaller for frames over ~2 megapixels, whose chunks may straddle the cut), so
    with a --batch that divides CHUNK_FRAMES the frames are searched and restored in the same
    batches as by one process, and the outputs are the same bit for bit."""
    from ..faces.detectors.base import CHUNK_FRAMES
    from .distributed import block, shard

    if settings.sequences is None:
        return [(None, shard(settings.jobs, ranks))]
    return [(seq, [seq.jobs[k] for k in block(len(seq.jobs), ranks, CHUNK_FRAMES)]) for seq in settings.sequences]


def run(args: argparse.Namespace) -> int:
    from .distributed import add_up, finish, rank_device, start
    from .progress import progress_bar

    settings = check_arguments(args)
    try:
        ranks = start()
    except ValueError as error:
        raise UsageError(str(error)) from None
    started = time.perf_counter()
    tally = Tally()
    shares = own_shares(settings, ranks)
    todos = [[job for job in jobs if args.overwrite or not job.target.exists()] for _, jobs in shares]
    tally.skipped = sum(len(jobs) for _, jobs in shares) - sum(map(len, todos))
    if tally.skipped:
        print(f"{ranks.tag()}{tally.skipped} output{'s' if tally.skipped != 1 else ''} already in {settings.out}, "
              "skipped (--overwrite replaces them)")
    needed = add_up([len(todo) for todo in todos], ranks)  # per share, over all processes
    tracking = settings.sequences is not None and settings.smoothing > 0
    # with tracking, a needed sequence's frames are read twice: searched for faces (by every process
    # for its block, whatever it restores itself), then restored
    searched = sum(len(jobs) for (_, jobs), count in zip(shares, needed) if tracking and count)
    if any(todos) or (tracking and any(needed)):  # (tracked sequences: every process joins the exchange)
        restorer = open_restorer(args, settings, rank_device(settings.device, ranks), tally, ranks)
        label = "frame reads" if tracking else "frames" if settings.sequences else "files"
        with progress_bar(
            searched + sum(map(len, todos)), "off" if args.quiet else "on", label, prefix=ranks.tag(),
            live=not ranks.distributed,  # several processes on one terminal: lines, not a redrawn bar
        ) as bar:
            tally.advance = bar.advance
            for (sequence, jobs), todo, count in zip(shares, todos, needed):
                if sequence is None:
                    for group in loaded_batches(todo, settings, tally):
                        restorer.run_group(group)
                elif count:
                    from .restore_sequence import restore_sequence

                    restore_sequence(sequence, jobs, todo, restorer, ranks, bar.advance)
    total = Tally.of_counts(add_up(tally.counts(), ranks))
    if ranks.lead:
        print(total.summary(time.perf_counter() - started))
    finish(ranks)
    return total.status
