"""`python -m restoreformer_node restore INPUT... --model FILE --out DIR`: restore faces in image files.

The same pipeline as the ComfyUI nodes, without ComfyUI: detect, align, restore in batches, paste
back. Inputs are files or folders (their images, optionally recursively). Every input image gives
one PNG in DIR with the same pixel layout (gray, gray+alpha, RGB, RGBA; alpha is kept). Files of
the same size are restored together in batches (video frames exported as images). A file with no
face is written unchanged and named in the output.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..options import (
    COLOR_MATCH_MODES,
    COMPILE_MODES,
    DEFAULT_DETECTOR,
    DEFAULT_ERODE,
    DEFAULT_FEATHER,
    DETECTORS,
    IMAGE_SUFFIXES,
    PRECISIONS,
)
from . import upscale

BATCH_PIXELS = 48_000_000  # images of one batch in memory at once (about 8 frames of 2560x2304)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore the faces in image files or folders",
        description=(
            "Detect faces, align them to the 512x512 template, restore them with a RestoreFormer / "
            "RestoreFormer++ weight file and paste them back. Writes one PNG per input image into --out."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--model", required=True, metavar="FILE", help="RestoreFormer weights (.safetensors, .ckpt, .pth)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the restored PNGs (created if needed)")
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
    p.add_argument("--feather", type=float, default=DEFAULT_FEATHER, help="soft edge of the paste mask, pixels of a 512 crop")
    p.add_argument("--erode", type=float, default=DEFAULT_ERODE, help="inset of the paste mask, pixels of a 512 crop")
    p.add_argument("--color-match", choices=COLOR_MATCH_MODES, default="none", help="match restored colours to the original face")
    p.add_argument("--batch", type=int, default=8, help="images of one size restored together (default 8)")
    p.add_argument("--save-crops", action="store_true", help="also write the restored 512 crops to DIR/crops")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out (default: skip them)")
    upscale.add_arguments(p)
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    walk = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walk if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def plan_jobs(inputs: Sequence[str], out: Path, recursive: bool) -> list[Job]:
    """Input files and folders -> (source, target PNG) pairs. Raises ValueError naming a missing
    input, an empty folder or two inputs that would write the same file."""
    jobs: list[Job] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = _images_in(path, recursive)
            if not found:
                raise ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            jobs += [Job(f, out / f.relative_to(path).with_suffix(".png")) for f in found]
        elif path.is_file():
            jobs.append(Job(path, out / (path.stem + ".png")))
        else:
            raise ValueError(f"{path}: no such file or folder")
    targets: dict[Path, Path] = {}
    for job in jobs:
        if job.target in targets:
            raise ValueError(
                f"{targets[job.target]} and {job.source} would both be written to {job.target}: "
                "rename one or restore them into different --out folders"
            )
        if job.target.resolve() == job.source.resolve():
            raise ValueError(f"{job.source}: --out would overwrite the input; choose another --out folder")
        targets[job.target] = job.source
    return jobs


def pick_device(name: str):
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _batches(items: list, batch: int) -> Iterator[list]:
    """Consecutive items with equal image shape, at most `batch` and BATCH_PIXELS per batch."""
    current: list = []
    for item in items:
        shape = item[1].shape
        if current and (
            current[0][1].shape != shape or len(current) >= batch or (len(current) + 1) * shape[0] * shape[1] > BATCH_PIXELS
        ):
            yield current
            current = []
        current.append(item)
    if current:
        yield current


def run(args: argparse.Namespace) -> int:
    import torch

    from ..faces.detection import FaceSelection, find_faces, load_detector
    from ..faces.pipeline import restore_faces
    from ..runtime import CompileOptions, compile_skipped, prepare
    from .images import read_image, write_image

    out = Path(args.out)
    if not 0.0 <= args.strength <= 1.0:
        print(f"error: --strength must be in [0, 1], got {args.strength}", file=sys.stderr)
        return 2
    try:
        jobs = plan_jobs(args.inputs, out, args.recursive)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    todo = []
    for job in jobs:
        if job.target.exists() and not args.overwrite:
            print(f"{job.source}: {job.target} exists, skipped (use --overwrite to replace it)")
        else:
            todo.append(job)
    if not todo:
        return 0
    device = pick_device(args.device)
    started = time.perf_counter()
    # bf16 on a GPU: the weights are held in bf16 and run natively (a CPU keeps fp32 and says so).
    prepared = prepare(args.model, device, "bf16" if args.precision == "bf16" else "fp32")
    model = prepared.model
    detector = load_detector(args.detector, args.detector_weights, device)
    try:
        upscaling = upscale.prepare(args, device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    selection = FaceSelection(mode=args.select)
    compile_options = CompileOptions(mode=args.compile_mode) if args.compile else None
    # A compile failure is logged once as a warning (stderr) by runtime/compile.py.
    how = ""
    if compile_options is not None:
        skipped = compile_skipped(compile_options, device)
        how = f"; {skipped}" if skipped else f", {compile_options.describe()} (the first batch compiles: a minute or more)"
    weights = ", bf16 weights" if prepared.weight_dtype == "bf16" else ""
    print(f"{Path(args.model).name}: {model.config.variant} on {device}{weights}{how}; detector {args.detector}"
          + (f"; {upscaling.describe()}" if upscaling else ""))

    failed = 0
    loaded = []
    for job in todo:
        try:
            image, mode, note = read_image(job.source)
        except Exception as error:  # an unreadable file is reported and the rest still run
            print(f"{job.source}: cannot read it as an image ({error}); skipped", file=sys.stderr)
            failed += 1
            continue
        loaded.append((job, image, mode, note))

    total_faces = 0
    told: set[str] = set()
    for group in _batches(loaded, max(1, args.batch)):
        images = torch.stack([item[1] for item in group])
        faces = find_faces(detector, images, selection)
        if upscaling is not None:
            images, faces, _ = upscaling.apply(images, faces)
        result = restore_faces(
            images,
            model,
            faces,
            strength=args.strength,
            precision=args.precision,
            feather=args.feather,
            erode=args.erode,
            color_match=args.color_match,
            device=device,
            compile_options=compile_options,
        )
        note = result.report.precision_note
        if note and note not in told:  # said once per run, not once per batch
            told.add(note)
            print(note)
        face_number = 0
        for i, (job, _, mode, note) in enumerate(group):
            count = len(faces.for_image(i))
            total_faces += count
            write_image(result.images[i], mode, job.target)
            extra = f" ({note})" if note else ""
            if count:
                print(f"{job.source}: {count} face{'s' if count != 1 else ''} restored -> {job.target}{extra}")
            else:
                print(f"{job.source}: no face found by {args.detector}; written unchanged -> {job.target}{extra}")
            if args.save_crops:
                for k in range(count):
                    crop_path = out / "crops" / f"{job.target.stem}_face{k}.png"
                    write_image(result.crops[face_number + k], "RGB", crop_path)
            face_number += count
    seconds = time.perf_counter() - started
    print(f"{len(loaded)} image{'s' if len(loaded) != 1 else ''}, {total_faces} face{'s' if total_faces != 1 else ''}, {seconds:.1f} s")
    return 1 if failed else 0
