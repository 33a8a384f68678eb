"""Benchmark of the face pipeline: memory per crop, precision drift, batched vs per-face throughput.

    python -m bench.pipeline_memory            # on the GPU if there is one, full-size networks
    python -m bench.pipeline_memory --quick    # tiny networks and images (a CPU smoke run)

Networks are randomly initialised (pretrained weights cannot be had offline), so the precision
figures say how far half precision moves the arithmetic, not how it changes image quality.
Timings are printed with ratios against a baseline run in the same process.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from restoreformer_node import testing
from restoreformer_node.faces.pipeline import restore_faces
from restoreformer_node.faces.template import TEMPLATE_512, similarity_transform
from restoreformer_node.faces.types import DetectedFace, Faces
from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, Trace, tiny_config
from restoreformer_node.runtime import activation_bytes_per_crop, pick_chunk_size


def random_model(config, device):
    return testing.random_model(config).to(device)


def smooth(n, c, h, w, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, c, max(2, h // 32), max(2, w // 32), generator=g)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).to(device)


def faces_for(batch, h, w, per_frame, face_px):
    items = []
    for b in range(batch):
        for k in range(per_frame):
            cx = w * (k + 1) / (per_frame + 1)
            cy = h / 2 + 10 * b
            scale = face_px / 300.0
            lm = (TEMPLATE_512 - torch.tensor([256.0, 300.0], dtype=torch.float64)) * scale + torch.tensor([cx, cy])
            items.append(DetectedFace(b, torch.zeros(4), lm.float(), 1.0, similarity_transform(lm, TEMPLATE_512)))
    return Faces(tuple(items), batch, h, w, detector="synthetic")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat=3):
    fn()
    sync(device)
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def memory_calibration(configs, device):
    print("== peak activation memory per crop (measured vs activation_bytes_per_crop)")
    for config in configs:
        model = random_model(config, device)
        for precision in ("fp32", "bf16", "fp16"):
            peaks = {}
            for n in (1, 4):
                x = torch.rand(n, 3, config.resolution, config.resolution, device=device) * 2 - 1
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                ctx = torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision]) \
                    if precision != "fp32" else torch.autocast("cuda", enabled=False)
                with torch.inference_mode(), ctx:
                    model(x)
                peaks[n] = torch.cuda.max_memory_allocated(device) - base
            per = (peaks[4] - peaks[1]) / 3
            est = activation_bytes_per_crop(config, precision)
            print(f"{config.variant:16s} {precision}: measured {per / 2**20:8.1f} MiB/crop (1 crop {peaks[1] / 2**20:8.1f} MiB), "
                  f"estimate {est / 2**20:8.1f} MiB, estimate/measured {est / per:5.2f}")
        del model
        torch.cuda.empty_cache()


def precision_drift(config, device):
    print("== half precision vs fp32 on a random network (arithmetic drift, not quality)")
    model = random_model(config, device)
    x = smooth(4, 3, config.resolution, config.resolution, device) * 2 - 1
    with torch.inference_mode():
        t32 = Trace()
        ref = model(x, t32)
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            t = Trace()
            with torch.autocast("cuda", dtype=dtype):
                out = model(x, t).float()
            finite = torch.isfinite(out).all().item()
            diff = ((out.clamp(-1, 1) - ref.clamp(-1, 1)) / 2).abs()
            psnr = -10 * math.log10(max(diff.pow(2).mean().item(), 1e-20))
            same = (t.indices == t32.indices).float().mean().item()
            print(f"{name}: finite={finite} max|diff|={diff.max().item():.4f} PSNR vs fp32 {psnr:.1f} dB, "
                  f"same dictionary entry for {100 * same:.1f}% of latent cells")


def throughput(config, device, batch, h, w, per_frame, face_px, precisions):
    print(f"== {batch} frames {w}x{h}, {per_frame} faces each, {config.variant} on {device}")
    model = random_model(config, device)
    images = smooth(batch, 3, h, w).permute(0, 2, 3, 1).contiguous()  # ComfyUI keeps IMAGE on the CPU
    faces = faces_for(batch, h, w, per_frame, face_px)
    n = len(faces)
    base = None
    for precision in precisions:
        chunk = pick_chunk_size(config, device, precision)
        t = timed(lambda p=precision: restore_faces(images, model, faces, precision=p, device=device), device)
        base = base or t
        print(f"{precision}: {t * 1000:8.1f} ms for {n} faces ({n / t:6.1f} faces/s, chunk {chunk}), "
              f"time / fp32 time {t / base:.2f}")
    t1 = timed(lambda: restore_faces(images, model, faces, chunk_size=1, device=device), device, repeat=1)
    print(f"fp32 one face per call: {t1 * 1000:8.1f} ms, batched speed-up x{t1 / base:.2f}")
    ident = torch.nn.Identity()
    t0 = timed(lambda: restore_faces(images, ident, faces, crop_size=config.resolution, device=device), device)
    print(f"align + paste alone (identity network): {t0 * 1000:8.1f} ms, share of the fp32 total {t0 / base:.2f}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        restore_faces(images, model, faces, device=device)
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def check_devices_agree(device):
    if device.type == "cpu":
        return
    print("== same result on the CPU and on the GPU (tiny network, fp32)")
    config = tiny_config(RESTOREFORMER)
    images = smooth(2, 3, 240, 320).permute(0, 2, 3, 1).contiguous()
    faces = faces_for(2, 240, 320, 2, 80)
    cpu = restore_faces(images, random_model(config, "cpu"), faces)
    gpu = restore_faces(images, random_model(config, device), faces)
    print(f"max |cpu - gpu| image {(cpu.images - gpu.images).abs().max().item():.2e}, "
          f"mask {(cpu.mask - gpu.mask).abs().max().item():.2e}, outside-mask equal "
          f"{torch.equal(gpu.images[gpu.mask == 0], images[gpu.mask == 0])}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    if args.quick:
        throughput(tiny_config(RESTOREFORMER), device, 2, 240, 320, 2, 80, ["fp32"])
        return
    check_devices_agree(device)
    memory_calibration([RESTOREFORMER, RESTOREFORMER_PLUSPLUS], device)
    precision_drift(RESTOREFORMER, device)
    throughput(RESTOREFORMER, device, 8, 1080, 1920, 3, 220, ["fp32", "bf16", "fp16"])
    throughput(RESTOREFORMER_PLUSPLUS, device, 8, 1080, 1920, 3, 220, ["fp32", "bf16"])
    throughput(RESTOREFORMER, device, 1, 4320, 7680, 4, 900, ["fp32", "bf16"])


if __name__ == "__main__":
    main()
