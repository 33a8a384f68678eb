"""Pipeline: our batched restore_faces against a facexlib-FaceRestoreHelper-style loop, one process.

    python -m bench.pipeline --device cuda --precisions fp32 bf16 fp16 --out bench_out/pipeline.md
    python -m bench.pipeline --device cpu --tiny --frames 2      # a dry run of the code paths

Two workloads, built from real photos (scikit-image's astronaut, matplotlib's Grace Hopper):
- "group photo": one 1920x1080 image with 6 faces of different sizes;
- "video": 32 frames of 1280x720 with one face each, moving and zooming from frame to frame.

Faces are detected once (MTCNN, facenet-pytorch) and shared by both sides; the timed part is
align -> restore -> paste back. Images start on the CPU as ComfyUI hands them over, and the
result is back on the CPU.

Baseline, as facexlib's FaceRestoreHelper does it: per face, cv2.warpAffine of the uint8 image to
a 512 crop (grey border), the network on that one crop, then per face cv2.warpAffine of the
restored crop and of a mask back to the full frame, erode + Gaussian-blurred soft mask and a
numpy blend, all on the CPU. It runs the same network (our fast model) at the same precision,
so the ratio measures the pipeline itself; one row also runs it with spandrel's fp32 network.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import time

import numpy as np
import torch

from bench.common import sync
from bench.model_forward import Table
from restoreformer_node.faces.alignment import face_arrays
from restoreformer_node.faces.pipeline import restore_faces
from restoreformer_node.model import RESTOREFORMER, tiny_config
from restoreformer_node.runtime import PrecisionPlan, cast_weights, optimize_for_inference
from restoreformer_node.testing import random_model, spandrel_twin


def _photos() -> list[np.ndarray]:
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return [data.astronaut(), hopper]


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def _place(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    h, w = img.shape[:2]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = img[y0 - y : y1 - y, x0 - x : x1 - x]


def group_photo() -> np.ndarray:
    """[1080, 1920, 3] uint8 with 6 faces of several sizes."""
    photos = _photos()
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    spots = [(0, 20, 40, 0.9), (1, 560, 60, 0.75), (0, 1060, 30, 0.6), (1, 1450, 80, 0.8),
             (0, 260, 560, 0.7), (1, 1100, 560, 0.85)]
    for k, (which, x, y, s) in enumerate(spots):
        img = _resize(photos[which], s)
        _place(canvas, img[:, ::-1] if k % 2 else img, x, y)
    return canvas


def video_frames(n: int) -> np.ndarray:
    """[n, 720, 1280, 3] uint8: one face drifting right and zooming in slowly."""
    face = _photos()[0]
    frames = np.empty((n, 720, 1280, 3), np.uint8)
    for i in range(n):
        frames[i] = 70
        img = _resize(face, 0.8 + 0.01 * i)
        _place(frames[i], img, 300 + 12 * i, 120 - 2 * i)
    return frames


def detect(images: np.ndarray, device):
    from restoreformer_node.faces.detection import FaceSelection, find_faces, load_detector

    detector = load_detector("mtcnn", device=device)
    t = torch.from_numpy(images).float() / 255.0
    return find_faces(detector, t, FaceSelection(mode="all"))


# --- the baseline: facexlib FaceRestoreHelper style ------------------------------------------


def _to_tensor(crop_rgb: np.ndarray, device) -> torch.Tensor:
    t = torch.from_numpy(crop_rgb).permute(2, 0, 1).float().div(255.0)
    return (t * 2 - 1).unsqueeze(0).to(device)


def _to_uint8(out: torch.Tensor) -> np.ndarray:
    out = ((out[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
    return (out * 255.0).round().astype(np.uint8)


def baseline_restore(images: np.ndarray, faces, net, device, precision: str, size: int) -> np.ndarray:
    """Per-face CPU warps, one network call per face, per-face numpy paste (facexlib style)."""
    import cv2

    index, affines, _ = face_arrays(faces, size)
    out = images.copy()
    for b in range(images.shape[0]):
        frame = images[b]
        h, w = frame.shape[:2]
        restored_faces = []
        for k in np.nonzero(index.numpy() == b)[0]:
            affine = affines[k].numpy()
            crop = cv2.warpAffine(frame, affine, (size, size), borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=(135, 133, 132))
            with torch.inference_mode(), PrecisionPlan.autocast_to(precision).scope(device):
                restored = net(_to_tensor(crop, device))
            restored_faces.append((affine, _to_uint8(restored)))
        img = out[b].astype(np.float32)
        for affine, face in restored_faces:
            inverse = cv2.invertAffineTransform(affine)
            inv_restored = cv2.warpAffine(face, inverse, (w, h)).astype(np.float32)
            mask = np.ones((size, size), np.float32)
            inv_mask = cv2.warpAffine(mask, inverse, (w, h))
            inv_mask_erosion = cv2.erode(inv_mask, np.ones((2, 2), np.uint8))
            pasted = inv_mask_erosion[:, :, None] * inv_restored
            w_edge = int(np.sum(inv_mask_erosion) ** 0.5) // 20
            center = cv2.erode(inv_mask_erosion, np.ones((w_edge * 2, w_edge * 2), np.uint8))
            soft = cv2.GaussianBlur(center, (w_edge * 2 + 1, w_edge * 2 + 1), 0)[:, :, None]
            img = soft * pasted + (1 - soft) * img
        out[b] = np.clip(img, 0, 255).round().astype(np.uint8)
    return out


def _spandrel_net(twin):
    def net(x):
        return twin(x)[0]

    return net


# --- the bench --------------------------------------------------------------------------------


def run(args) -> str:
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    config = tiny_config(RESTOREFORMER) if args.tiny else RESTOREFORMER
    base = random_model(config).to(dev)
    fast = optimize_for_inference(copy.deepcopy(base))
    # Load Model (RestoreFormer)'s weight_dtype bf16 (the CLI's --precision bf16 on a GPU); a GPU row (CPU: dry run).
    fast_bf16 = cast_weights(copy.deepcopy(fast), "bf16") if (cuda or args.tiny) and "bf16" in args.precisions else None
    twin = spandrel_twin(base) if args.spandrel_row else None
    size = config.resolution
    workloads = {"group photo (1920x1080, 6 faces)": group_photo()[None],
                 f"video ({args.frames} frames of 1280x720)": video_frames(args.frames)}
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    table = Table(
        f"Pipeline on {name}, torch {torch.__version__} (align + restore + paste back; median of {args.rounds})",
        ["workload", "faces", "precision", "ours s", "ours faces/s", "baseline s", "baseline faces/s",
         "speed-up", "ours peak GiB", "baseline peak GiB", "max abs diff (0..255)"],
    )
    for wname, frames in workloads.items():
        t0 = time.perf_counter()
        faces = detect(frames, dev)
        det_s = time.perf_counter() - t0
        n = len(faces)
        print(f"[{wname}: {n} faces detected by MTCNN in {det_s:.2f} s]", flush=True)
        if n == 0:
            continue
        images = torch.from_numpy(frames).float() / 255.0  # CPU, as ComfyUI hands it over
        rows = [(p, fast, "ours fast model") for p in args.precisions]
        if fast_bf16 is not None:
            rows.append(("bf16", fast_bf16, "bf16 weights"))
        if twin is not None:
            rows.append(("fp32", twin, "spandrel"))
        for precision, _net, _label in rows:
            if precision == "fp16" and not cuda:
                continue
            ours_net = fast_bf16 if _label == "bf16 weights" else fast
            baseline_net = _spandrel_net(twin) if _label == "spandrel" else ours_net

            def ours(precision=precision, net=ours_net, images=images, faces=faces):
                return restore_faces(images, net, faces, precision=precision).images

            def baseline(precision=precision, net=baseline_net, frames=frames, faces=faces):
                return baseline_restore(frames, faces, net, dev, precision, size)

            try:
                row = _time_pair(ours, baseline, dev, args.rounds)
            except Exception as exc:  # one broken row must not cost the whole one-shot run
                print(f"[{wname} {precision} {_label}: FAILED {type(exc).__name__}: {str(exc)[:500]}]", flush=True)
                continue
            o, b, mem, ours_img, base_img = row
            d = np.abs(ours_img.astype(np.int16) - base_img.astype(np.int16)).max()
            label = {"spandrel": "fp32 (baseline runs spandrel)", "bf16 weights": "bf16 weights"}.get(_label, precision)
            table.row(wname, n, label, f"{o:.3f}", f"{n / o:.1f}", f"{b:.3f}", f"{n / b:.1f}", f"{b / o:.2f}x",
                      f"{mem['ours']:.2f}", f"{mem['baseline']:.2f}", int(d))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return table.text() + f"\nProcess peak RSS: {rss:.1f} GiB. Random weights (real architecture): the paste " \
        "masks differ (ours: feathered template mask on the device; baseline: facexlib's eroded, blurred " \
        "mask), so the image difference is a sanity check, not a parity figure.\n"


def _time_pair(ours, baseline, dev, rounds: int):
    """Median seconds of ours and of the baseline, their peak GPU memory and last images."""
    cuda = dev.type == "cuda"
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    mem, images = {}, {}
    for name, fn in (("ours", ours), ("baseline", baseline)):
        fn()  # warm-up (cuDNN autotuning, allocator)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(rounds):
            sync(dev)
            t = time.perf_counter()
            result = fn()
            sync(dev)
            times[name].append(time.perf_counter() - t)
        mem[name] = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else float("nan")
        images[name] = result
    ours_img = (images["ours"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return (float(np.median(times["ours"])), float(np.median(times["baseline"])), mem, ours_img,
            images["baseline"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="tiny geometry (dry run)")
    p.add_argument("--spandrel-row", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    text = run(args)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
