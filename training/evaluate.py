"""`python -m training evaluate`: restore a test set and report the paper's metrics.

Inputs, one of:
  --restored DIR               already restored faces (any method), or
  --model FILE --input DIR     degraded faces restored here with a RestoreFormer weight file, or
  --model FILE --degrade       the ground-truth folder degraded here with a fixed seed, then restored.
With --gt DIR (ground truth, paired by relative path without extension) PSNR, SSIM, LPIPS and IDD are
computed per image; FID needs a reference: --fid-reference (an .npz of FFHQ-512 Inception statistics,
as the paper uses for every test set) or, without it, the ground-truth folder itself.

Outputs in --out: `metrics.csv` (one row per image and method), `summary.md` (a table laid out like
the paper's Table 1: Methods | FID | PSNR | SSIM | LPIPS | IDD, with the degraded input as a row when
it is known), `summary.json`, and the restored (and degraded) images as PNG.

Networks with downloaded weights take local files: LPIPS (--lpips-vgg, --lpips-heads) and ArcFace
(--arcface, GFPGAN's arcface_resnet18.pth). A metric whose files are not given is left out and the
summary says why; --allow-random-networks builds them randomly initialised (tests only).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .metrics import InceptionFeatures, feature_statistics, frechet_distance, load_statistics, psnr, ssim

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
COLUMNS = ("FID", "PSNR", "SSIM", "LPIPS", "IDD")
ARROWS = {"FID": "↓", "PSNR": "↑", "SSIM": "↑", "LPIPS": "↓", "IDD": "↓"}


@dataclass
class EvalOptions:
    out: str
    gt: str | None = None
    restored: str | None = None
    model: str | None = None
    input: str | None = None
    degrade: bool = False
    seed: int = 0
    degradation: str = "paper"
    name: str | None = None
    fid: bool = True
    fid_reference: str | None = None
    lpips_vgg: str | None = None
    lpips_heads: str | None = None
    arcface: str | None = None
    allow_random_networks: bool = False
    device: str = "cpu"
    batch_size: int = 4


@dataclass
class EvalResult:
    rows: list[dict] = field(default_factory=list)  # per image and method
    summary: dict[str, dict[str, float | None]] = field(default_factory=dict)  # method -> column -> value
    notes: list[str] = field(default_factory=list)


def list_images(root: str | Path) -> dict[str, Path]:
    """{relative path without extension: file} for the images under `root` (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"{str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    out: dict[str, Path] = {}
    for p in files:
        key = p.relative_to(root).with_suffix("").as_posix()
        if key in out:
            raise ValueError(f"{str(root)!r} has two images named {key!r} with different extensions")
        out[key] = p
    return out


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> HxWx3 uint8 (rounded)."""
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def degrade_images(gt: dict[str, np.ndarray], seed: int, preset: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Degrade each ground truth with the training degradation, seeded by (seed, file name) so the
    result does not depend on which other files are in the folder. Returns (gt, degraded): the
    RF++ preset may change the ground truth too (shift, grayscale)."""
    from .config import DegradationConfig, apply_degradation_preset, from_dict
    from .degradation import Degradation

    cfg = from_dict(DegradationConfig, apply_degradation_preset({"preset": preset}), "degradation")
    degradation = Degradation(cfg)
    new_gt, lq = {}, {}
    for name, image in gt.items():
        g = torch.Generator().manual_seed((seed << 32) ^ zlib.crc32(name.encode()))
        target, degraded = degradation(to_tensor(image), g)
        new_gt[name], lq[name] = to_uint8(target), to_uint8(degraded)
    return new_gt, lq


@torch.no_grad()
def restore_images(model, images: dict[str, np.ndarray], device: torch.device, batch_size: int) -> dict[str, np.ndarray]:
    """Restore faces with `model.restore` in batches of images of one size."""
    out: dict[str, np.ndarray] = {}
    names = list(images)
    multiple = model.config.size_multiple
    for i in range(0, len(names), batch_size):
        chunk = names[i : i + batch_size]
        shapes = {images[n].shape for n in chunk}
        if len(shapes) != 1:  # mixed sizes: one by one
            for n in chunk:
                out.update(restore_images(model, {n: images[n]}, device, 1))
            continue
        h, w, _ = shapes.pop()
        if h % multiple or w % multiple:
            raise ValueError(f"input {chunk[0]!r} is {w}x{h}; the model needs sides that are multiples of {multiple}")
        batch = torch.stack([to_tensor(images[n]) for n in chunk]).to(device)
        restored = model.restore(batch).float().cpu()
        for n, img in zip(chunk, restored):
            out[n] = to_uint8(img)
    return out


def _build_lpips(opts: EvalOptions, notes: list[str]):
    if not (opts.lpips_vgg and opts.lpips_heads) and not opts.allow_random_networks:
        notes.append("LPIPS left out: pass --lpips-vgg (torchvision vgg16 weights) and --lpips-heads (lpips vgg.pth)")
        return None
    from .losses.perceptual import LPIPS, load_weights_file

    backbone = load_weights_file(opts.lpips_vgg or "", "LPIPS VGG-16 backbone", "--lpips-vgg", opts.allow_random_networks)
    heads = load_weights_file(opts.lpips_heads or "", "LPIPS linear heads", "--lpips-heads", opts.allow_random_networks)
    if backbone is None or heads is None:
        notes.append("LPIPS computed with RANDOM networks (--allow-random-networks): not a real LPIPS value")
    return LPIPS(backbone, heads).eval()


def _build_arcface(opts: EvalOptions, notes: list[str]):
    if not opts.arcface and not opts.allow_random_networks:
        notes.append("IDD left out: pass --arcface (GFPGAN's arcface_resnet18.pth)")
        return None
    from .losses.identity import load_arcface

    if not opts.arcface:
        notes.append("IDD computed with a RANDOM ArcFace (--allow-random-networks): not a real IDD value")
    return load_arcface(opts.arcface, allow_random=opts.allow_random_networks, config_key="--arcface")


def _fid(features: InceptionFeatures, images: list[np.ndarray], reference, batch: int) -> float:
    feats = [features(torch.stack([to_tensor(im) for im in images[i : i + batch]])) for i in range(0, len(images), batch)]
    mu, sigma = feature_statistics(np.concatenate(feats))
    return frechet_distance(mu, sigma, *reference)


def evaluate(opts: EvalOptions) -> EvalResult:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    result = EvalResult()
    device = torch.device(opts.device)

    if sum(bool(x) for x in (opts.restored, opts.model)) != 1:
        raise ValueError("give exactly one of --restored DIR or --model FILE")
    if opts.model and not (opts.input or opts.degrade):
        raise ValueError("--model needs --input DIR (degraded faces) or --degrade (degrade --gt here)")
    if opts.degrade and not opts.gt:
        raise ValueError("--degrade needs --gt DIR (the ground truth to degrade)")

    gt: dict[str, np.ndarray] = {k: read_rgb(p) for k, p in list_images(opts.gt).items()} if opts.gt else {}
    inputs: dict[str, np.ndarray] = {}
    if opts.degrade:
        gt, inputs = degrade_images(gt, opts.seed, opts.degradation)
        for name, image in inputs.items():
            _save(image, out / "input" / f"{name}.png")
    elif opts.input:
        inputs = {k: read_rgb(p) for k, p in list_images(opts.input).items()}

    if opts.model:
        from restoreformer_node.weights import load_restoreformer

        model = load_restoreformer(opts.model, device=device)
        method = opts.name or Path(opts.model).stem
        restored = restore_images(model, inputs, device, opts.batch_size)
        for name, image in restored.items():
            _save(image, out / "restored" / f"{name}.png")
    else:
        method = opts.name or Path(opts.restored).name
        restored = {k: read_rgb(p) for k, p in list_images(opts.restored).items()}

    methods: dict[str, dict[str, np.ndarray]] = {}
    if inputs:
        methods["Input"] = inputs
    methods[method] = restored

    if gt:
        for label, images in methods.items():
            missing = sorted(set(gt) - set(images))
            extra = sorted(set(images) - set(gt))
            if missing or extra:
                raise ValueError(
                    f"{label}: images and ground truth must pair by file name; "
                    f"without a partner: {(missing + extra)[:8]}"
                )
        lpips = _build_lpips(opts, result.notes)
        arcface = _build_arcface(opts, result.notes)
        if lpips is not None:
            lpips = lpips.to(device)
        if arcface is not None:
            arcface = arcface.to(device)
        from .losses.identity import identity_angle

        for label, images in methods.items():
            for name in sorted(gt):
                a, b = images[name], gt[name]
                if a.shape != b.shape:
                    raise ValueError(f"{label} image {name!r} is {a.shape[1]}x{a.shape[0]} but its ground truth is "
                                     f"{b.shape[1]}x{b.shape[0]}; resize one of them")
                row = {"method": label, "name": name, "PSNR": psnr(a, b), "SSIM": ssim(a, b), "LPIPS": None, "IDD": None}
                ta, tb = to_tensor(a)[None].to(device), to_tensor(b)[None].to(device)
                with torch.no_grad():
                    if lpips is not None:
                        row["LPIPS"] = float(lpips(ta * 2 - 1, tb * 2 - 1))
                    if arcface is not None:
                        row["IDD"] = float(identity_angle(arcface, ta, tb)[0])
                result.rows.append(row)
    else:
        result.notes.append("PSNR, SSIM, LPIPS and IDD left out: no --gt folder")

    reference = None
    if opts.fid:
        if opts.fid_reference:
            reference = load_statistics(opts.fid_reference)
        elif gt:
            result.notes.append("FID reference: the ground-truth folder (the paper uses FFHQ-512 statistics; "
                                "pass --fid-reference FILE.npz for that)")
        else:
            result.notes.append("FID left out: give --fid-reference FILE.npz or --gt DIR")
    else:
        result.notes.append("FID left out (--no-fid)")
    fid_values: dict[str, float] = {}
    if opts.fid and (reference is not None or gt):
        features = InceptionFeatures(device)
        if reference is None:
            reference = feature_statistics(
                np.concatenate([features(torch.stack([to_tensor(gt[n])])) for n in sorted(gt)])
            )
        for label, images in methods.items():
            fid_values[label] = _fid(features, [images[n] for n in sorted(images)], reference, opts.batch_size)

    for label in methods:
        rows = [r for r in result.rows if r["method"] == label]
        entry: dict[str, float | None] = {"FID": fid_values.get(label)}
        for col in ("PSNR", "SSIM", "LPIPS", "IDD"):
            values = [r[col] for r in rows if r[col] is not None]
            entry[col] = float(np.mean(values)) if values else None
        result.summary[label] = entry
    write_outputs(out, result)
    return result


def _fmt(col: str, value: float | None) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if col in ("FID", "PSNR") else f"{value:.4f}"


def summary_table(summary: dict[str, dict[str, float | None]]) -> str:
    """The paper's Table 1 layout as Markdown: one row per method."""
    head = "| Methods | " + " | ".join(f"{c}{ARROWS[c]}" for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for label, entry in summary.items():
        lines.append(f"| {label} | " + " | ".join(_fmt(c, entry.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, result: EvalResult) -> None:
    with (out / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "name", "PSNR", "SSIM", "LPIPS", "IDD"])
        for r in result.rows:
            writer.writerow([r["method"], r["name"]] + ["" if r[c] is None else repr(r[c]) for c in ("PSNR", "SSIM", "LPIPS", "IDD")])
    text = summary_table(result.summary)
    if result.notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in result.notes)
    (out / "summary.md").write_text(text + "\n")

    def clean(v):
        return None if v is None else ("inf" if math.isinf(v) else v)

    payload = {"summary": {m: {c: clean(v) for c, v in e.items()} for m, e in result.summary.items()}, "notes": result.notes}
    (out / "summary.json").write_text(json.dumps(payload, indent=2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for metrics.csv, summary.md and images")
    parser.add_argument("--gt", help="ground-truth faces (paired with the others by relative path)")
    parser.add_argument("--restored", help="faces already restored by some method")
    parser.add_argument("--model", help="RestoreFormer weight file to restore with")
    parser.add_argument("--input", help="degraded faces to restore with --model")
    parser.add_argument("--degrade", action="store_true", help="degrade --gt here (fixed seed) and restore that")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--degradation", default="paper", help="degradation preset: paper, released, restoreformer++")
    parser.add_argument("--name", help="method name in the summary (default: model or folder name)")
    parser.add_argument("--no-fid", dest="fid", action="store_false")
    parser.add_argument("--fid-reference", help=".npz with Inception 'mu' and 'sigma' (e.g. FFHQ-512)")
    parser.add_argument("--lpips-vgg", help="torchvision vgg16 weights file for LPIPS")
    parser.add_argument("--lpips-heads", help="lpips' vgg.pth linear heads")
    parser.add_argument("--arcface", help="ArcFace ResNet-18 weights (GFPGAN's arcface_resnet18.pth) for IDD")
    parser.add_argument("--allow-random-networks", action="store_true",
                        help="build LPIPS/ArcFace with random weights when files are missing (tests only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Entry point: a parsed namespace (from `python -m training evaluate`) or an argument list."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="python -m training evaluate", description=__doc__.split("\n")[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    fields = {f.name for f in dataclasses.fields(EvalOptions)}
    opts = EvalOptions(**{k: v for k, v in vars(args).items() if k in fields})
    result = evaluate(opts)
    print(summary_table(result.summary))
    for note in result.notes:
        print("-", note)
    return 0
