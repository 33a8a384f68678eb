"""Standalone training for RestoreFormer / RestoreFormer++ (never imports ComfyUI).

    python -m training stage1 --config training/configs/stage1_paper.yaml [--resume]
    torchrun --nproc_per_node 8 -m training stage1 --config ...
    python -m training samples --config ... --out grid.png
    python -m training export --checkpoint runs/stage1/checkpoints/step_00800000.pt --out hq_dictionary.safetensors

Reusable pieces: `config` (YAML -> dataclasses), `data` (FaceDataset, StepBatchSampler),
`degradation` (Eq. 19 and RF++ extensions), `losses` (perceptual, PatchGAN, adaptive weight),
`trainer` (Trainer, Task, Phase), `export`.
"""
