"""Device check for face detection: the same faces on the accelerator as on the CPU, and timings.

Run on a machine with a GPU (prints results; exits non-zero when a check fails):
    python -m bench.check_detection_device [--device cuda]

Checks: MTCNN on the two test photos (CUDA landmarks within 0.5 px of the CPU's); RetinaFace of
both backbones built from a generated weight file (random backbone, heads set so every detection
is a prior) gives the same boxes on both devices; the preview is drawn on the device; timings of
an 8-frame 1080p batch (batched vs one by one) and of an 8K frame. Needs facenet-pytorch 2.5.3,
facexlib 0.3.0 (and its filterpy), scikit-image and matplotlib.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from detection_fixtures import collage, image_batch, write_retinaface_weights  # noqa: E402

from restoreformer_node.faces.detection import load_detector  # noqa: E402
from restoreformer_node.faces.preview import draw_faces  # noqa: E402


def timed(fn, device, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args().device)
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = image_batch(np.asarray(Image.open(f).convert("RGB")))
    photos = {"astronaut": image_batch(data.astronaut()), "grace_hopper": grace}
    failures = []
    cpu, dev = load_detector("mtcnn", device="cpu"), load_detector("mtcnn", device=device)
    for name, photo in photos.items():
        a, b = cpu.detect(photo)[0], dev.detect(photo)[0]
        diff = (a.landmarks - b.landmarks).abs().max().item() if len(a) == len(b) == 1 else float("inf")
        print(f"MTCNN {name}: cpu {len(a)} face(s), {device} {len(b)}, landmark diff {diff:.3f} px")
        if diff > 0.5:
            failures.append(f"MTCNN {name}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("retinaface_mobilenet0.25", "retinaface_resnet50"):
            path = write_retinaface_weights(Path(tmp), kind, heads="priors")
            image = photos["astronaut"][:, :256, :384]
            a = load_detector(kind, path, "cpu").detect(image)[0]
            b = load_detector(kind, path, device).detect(image)[0]
            same = len(a) == len(b) and torch.allclose(
                a.boxes.sort(0).values, b.boxes.sort(0).values, atol=1e-3
            )
            print(f"{kind}: {len(a)} prior detections on cpu, {len(b)} on {device}, same boxes: {same}")
            if not same:
                failures.append(kind)
    frame = torch.nn.functional.interpolate(collage(data.astronaut()).permute(0, 3, 1, 2), size=(1080, 1920))
    frames = frame.permute(0, 2, 3, 1).repeat(8, 1, 1, 1).contiguous()
    batched, found = timed(lambda: dev.detect(frames), device)
    single, _ = timed(lambda: [dev.detect(frames[i : i + 1]) for i in range(8)], device)
    print(
        f"MTCNN 8x1080p on {device}: batched {batched * 1e3:.0f} ms, one by one {single * 1e3:.0f} ms, "
        f"ratio {single / batched:.2f}; faces per frame {[len(f) for f in found]}"
    )
    big = torch.nn.functional.interpolate(frame, size=(4320, 7680)).permute(0, 2, 3, 1).contiguous()
    t8k, found8k = timed(lambda: dev.detect(big), device)
    print(f"MTCNN 8K frame on {device} (searched at 1280 px): {t8k * 1e3:.0f} ms, {len(found8k[0])} faces")
    from restoreformer_node.faces.detection import find_faces

    faces = find_faces(dev, frames[:2].to(device))
    preview = draw_faces(frames[:2].to(device), faces)
    print(f"preview on {preview.device}, {len(faces)} faces drawn")
    if preview.device.type != device.type:
        failures.append("preview device")
    print("FAILED: " + ", ".join(failures) if failures else "all device checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
