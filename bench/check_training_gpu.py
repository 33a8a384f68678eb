"""GPU check for training/: the bf16 CUDA path, resume, export, TensorBoard, full-size throughput.

Run from the repository root on a CUDA machine (about 2-3 minutes on one H100/H200):
    OUT=/tmp/out python3 -m bench.check_training_gpu
Prints a JSON summary (also written to $OUT/res.json): the resume difference under bf16 (CUDA
kernels are not bitwise deterministic, so small but maybe non-zero), and images/s and peak memory
of the paper's 512x512 stage 1 with the discriminator active and random loss networks.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.config import apply_overrides, load_config
from training.export import export_checkpoint
from training.stage1 import Stage1Config, build


def config(path: str, overrides: list[str]) -> Stage1Config:
    return load_config(Stage1Config, data=apply_overrides(path, overrides))


def main() -> None:
    from skimage import data

    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    faces = Path("/tmp/faces")
    faces.mkdir(exist_ok=True)
    for i in range(8):
        Image.fromarray(np.roll(data.astronaut(), 16 * i, axis=1)).save(faces / f"{i:03d}.png")
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    tiny = "training/configs/stage1_tiny_cpu.yaml"
    tiny_ov = ["run.device=cuda", "run.precision=bf16", f"data.root={faces}", "run.progress=false",
               "run.steps=12", "run.checkpoint_every=6", "loss.discriminator.start_step=3", "run.sample_every=6"]
    full = build(config(tiny, [*tiny_ov, "run.out_dir=/tmp/full"]))
    full.fit()
    build(config(tiny, [*tiny_ov, "run.out_dir=/tmp/cut"])).fit(stop_at=8)
    resumed = build(config(tiny, [*tiny_ov, "run.out_dir=/tmp/cut"]))
    resumed.fit(resume=True)
    a, b = full.modules["generator"].state_dict(), resumed.modules["generator"].state_dict()
    res["tiny_bf16_resume_maxdiff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    res["tiny_last_logs"] = full.history[-1][1]
    export_checkpoint("/tmp/full", out / "tiny.safetensors")
    res["tensorboard_files"] = [p.name for p in Path("/tmp/full/tensorboard").iterdir()]

    for batch in (8, 16):
        ov = [f"data.root={faces}", "run.out_dir=/tmp/big", "run.progress=false", "run.tensorboard=false",
              "run.steps=8", f"run.batch_size={batch}", "run.checkpoint_every=1000", "run.num_workers=8",
              "loss.allow_random_loss_networks=true", "loss.perceptual.vgg_weights=''",
              "loss.discriminator.start_step=0", "run.sample_every=0", "run.log_every=1"]
        trainer = build(config("training/configs/stage1_paper.yaml", ov))
        torch.cuda.reset_peak_memory_stats()
        trainer.fit(stop_at=3)  # warm-up (cuDNN autotuning, workers)
        torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.fit(stop_at=8)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        res[f"full512_bs{batch}_img_per_s"] = 5 * batch / seconds
        res[f"full512_bs{batch}_peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
        res[f"full512_bs{batch}_logs"] = trainer.history[-1][1]
        print(json.dumps(res, indent=1), flush=True)
    (out / "res.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
