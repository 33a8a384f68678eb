"""Device check for stage 2: `python3 -m bench.check_stage2_gpu` from the repo root on a CUDA machine.

Full-size RF (paper preset), RF++ (released preset) and the SFT ablation train a few steps with bf16
autocast and every loss on (random loss networks, random start, template landmarks, generated faces):
prints seconds per step, peak memory, every loss term per step and the bf16-vs-fp32 forward difference.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restoreformer_node.model import RestoreFormer
from training.config import apply_overrides, load_config
from training.stage2 import Stage2Config, build

ROOT = Path("/tmp/stage2_gpu_faces")


def write_faces() -> None:
    ROOT.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    try:
        from skimage import data

        Image.fromarray(data.astronaut()).save(ROOT / "astro.png")
    except ImportError:
        pass
    yy, xx = np.mgrid[0:512, 0:512] / 511.0
    for i in range(7):
        c = rng.random((3, 3))
        img = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * (1 - xx) for k in range(3)], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(ROOT / f"gen{i}.png")
    table = {p.name: None for p in ROOT.iterdir()}  # null: the aligned template (no detector needed)
    payload = {"format": "restoreformer-landmarks", "version": 1, "landmarks": table}
    ROOT.with_name(ROOT.name + "_landmarks5.json").write_text(json.dumps(payload))


def run(preset: str, steps: int, extra: tuple[str, ...] = ()):
    overrides = [
        f"data.root={ROOT}", f"run.out_dir=/tmp/stage2_gpu_{Path(preset).stem}", "init.stage1=''",
        "init.allow_random=true", "loss.allow_random_loss_networks=true", f"run.steps={steps}",
        "run.batch_size=4", "run.device=cuda", "run.precision=bf16", "run.num_workers=4", "run.log_every=1",
        "run.checkpoint_every=1000000", "run.tensorboard=false", "run.progress=false", "run.sample_every=0",
        *extra,
    ]
    cfg = load_config(Stage2Config, data=apply_overrides(f"training/configs/{preset}", overrides))
    trainer = build(cfg)
    seen: list[dict[str, float]] = []
    stamps: list[float] = []
    generator_loss = trainer.task.generator_loss

    def recording(tr, batch, state):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        loss, logs = generator_loss(tr, batch, state)
        seen.append({k: round(float(v), 5) for k, v in logs.items()})
        return loss, logs

    trainer.task.generator_loss = recording
    torch.cuda.reset_peak_memory_stats()
    trainer.fit()
    torch.cuda.synchronize()
    per_step = float(np.diff(stamps[1:]).mean()) if len(stamps) > 2 else float("nan")
    net_cfg = trainer.task.net_cfg
    print(f"{preset} {list(extra)}: {net_cfg.variant} fusion={net_cfg.fusion} s/step={per_step:.3f} "
          f"peak={torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    for row in seen:
        print("   ", row)
    assert all(np.isfinite(v) for row in seen for v in row.values())
    return trainer


def main() -> None:
    write_faces()
    trainer = run("stage2_paper.yaml", 6)
    net = trainer.modules["generator"].eval()
    x = torch.rand(2, 3, 512, 512, device="cuda") * 2 - 1
    with torch.no_grad():
        full = RestoreFormer.forward(net, x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = RestoreFormer.forward(net, x).float()
    print("bf16 vs fp32 forward: max abs diff", (full - half).abs().max().item())
    run("stage2_restoreformer_plusplus_released.yaml", 5,
        ("loss.discriminator.start_step=0", "loss.perceptual.kind=lpips"))
    run("stage2_ablation_sft.yaml", 3)


if __name__ == "__main__":
    main()
