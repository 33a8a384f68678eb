"""Every active loss term of every preset moves the generator: at initialisation, on a tiny batch, each
weighted term's gradient is compared with the L1 term's, so a term that is effectively off (as the
paper preset's component style loss was: a mean where the paper sums) cannot hide again.

Each preset is run as written except what a CPU test must change: the network is the 3-level tiny
geometry of the same variant (`model.tiny`), faces are 64 px, the batch is 2, the loss networks
(VGG, LPIPS, ArcFace) and the stage-1 network are random initialisations of the real architectures
(pretrained files cannot be had offline), and the adversarial terms are switched on from step 0 so
that every term is active. Stage-2 presets start from a stage-1 training checkpoint written by the
matching stage-1 preset (the released ones copy its image discriminator).

For each term, gradients are taken over the trainable generator parameters that term reaches (the
dictionary term alone reaches the dictionary; the commitment / feature-to-prior term reaches only the
encoder). Printed per term (pytest -s shows the table): its share of the summed gradient norm of all
terms there, and its ratio to the L1 term's gradient there. The check uses the ratio: L1 is in every
preset at weight 1.0 and needs no pretrained network, so a term swamped by one large term (the
paper's summed style loss, the LPIPS style term on a random VGG) is still judged on its own scale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REPO
from helpers.training_data import face_folder_with_landmarks

from training.config import apply_overrides, load_config

CONFIGS = REPO / "training" / "configs"
# No term's gradient may be smaller than this fraction of the L1 term's on the parameters it reaches.
# The weakest live terms are the paper's commitment / feature-to-prior terms at weight 0.25; the
# paper preset's style term as a mean over the Gram entries fell below it (test_a_mean_style_loss_fails).
FLOOR = 3e-3

STAGE1 = ["stage1_paper", "stage1_released", "stage1_restoreformer_plusplus_released", "stage1_tiny_cpu"]
STAGE2 = {  # stage-2 preset -> the stage-1 preset it starts from
    "stage2_paper": "stage1_paper",
    "stage2_restoreformer_released": "stage1_released",
    "stage2_restoreformer_plusplus_released": "stage1_restoreformer_plusplus_released",
    "stage2_ablation_sft": "stage1_paper",
    "stage2_tiny_cpu": "stage1_tiny_cpu",
}


# Every test on one intra-op thread (conftest's fixture): the runs compare numbers across processes.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces(tmp_path_factory, astronaut, grace_hopper) -> Path:
    return face_folder_with_landmarks(tmp_path_factory.mktemp("shares") / "faces", astronaut, grace_hopper)


def cpu_overrides(faces: Path, out: Path) -> list[str]:
    return [
        f"run.out_dir={out}", "run.device=cpu", "run.precision=fp32", "run.num_workers=0", "run.progress=false",
        "run.tensorboard=false", "run.batch_size=2", "run.batch_per_process=0", "run.steps=1",
        f"data.root={faces}", "data.size=64", "data.resize=true", "data.hflip=false", "model.tiny=true",
        "loss.allow_random_loss_networks=true", "loss.perceptual.vgg_weights=''", "loss.perceptual.lpips_heads=''",
        "loss.discriminator.start_step=0",
    ]


def stage1_trainer(preset: str, faces: Path, out: Path):
    from training.stage1 import Stage1Config, build

    return build(load_config(Stage1Config, data=apply_overrides(CONFIGS / f"{preset}.yaml", cpu_overrides(faces, out))))


def stage1_checkpoint(preset: str, faces: Path, out: Path) -> Path:
    """A stage-1 training checkpoint of the tiny network that `preset` builds (untrained)."""
    return stage1_trainer(preset, faces, out).save_checkpoint()


def stage2_trainer(preset: str, faces: Path, out: Path, stage1: Path, *extra: str):
    from training.stage2 import Stage2Config, build

    overrides = cpu_overrides(faces, out) + [f"init.stage1={stage1}", "init.allow_random=false",
                                             "loss.identity.weights=''", *extra]
    return build(load_config(Stage2Config, data=apply_overrides(CONFIGS / f"{preset}.yaml", overrides)))


def gradient_norms(trainer) -> dict[str, dict[str, float]]:
    """For the first batch at step 0: {term: {other term: |other's gradient|}}, each taken over the
    generator parameters `term` reaches (the others' gradients restricted to those parameters)."""
    torch.manual_seed(0)
    task = trainer.task
    batch = next(iter(trainer._loader()))
    weighted, _ = task.weighted_terms(trainer, task.generator_terms(trainer, batch))
    params = [p for p in trainer.modules["generator"].parameters() if p.requires_grad]
    grads = {name: torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
             for name, value in weighted.items()}
    out = {}
    for name, own in grads.items():
        reached = [i for i, g in enumerate(own) if g is not None and bool(g.abs().sum() > 0)]
        out[name] = {other: sum(float(gs[i].double().square().sum()) for i in reached if gs[i] is not None) ** 0.5
                     for other, gs in grads.items()}
    return out


def shares(trainer) -> dict[str, tuple[float, float]]:
    """{term: (share of the summed gradient norm, ratio to the L1 term)} over the parameters it reaches."""
    norms = gradient_norms(trainer)
    return {name: (row[name] / sum(row.values()), row[name] / row["l1"] if row["l1"] else float("inf"))
            for name, row in norms.items()}


def report(preset: str, table: dict[str, tuple[float, float]]) -> str:
    return f"{preset:42s} " + "  ".join(f"{k} {100 * v:.3f}% (x{r:.3g} L1)" for k, (v, r) in table.items())


@pytest.mark.parametrize("preset", STAGE1)
def test_stage1_every_term_moves_the_generator(preset, faces, tmp_path):
    table = shares(stage1_trainer(preset, faces, tmp_path / "run"))
    print("gradient shares:", report(preset, table))
    assert set(table) >= {"l1", "perceptual", "codebook", "commitment", "g_adv"}
    assert min(r for _, r in table.values()) >= FLOOR, report(preset, table)


@pytest.mark.parametrize("preset", list(STAGE2))
def test_stage2_every_term_moves_the_generator(preset, faces, tmp_path):
    stage1 = stage1_checkpoint(STAGE2[preset], faces, tmp_path / "stage1")
    table = shares(stage2_trainer(preset, faces, tmp_path / "run", stage1))
    print("gradient shares:", report(preset, table))
    assert set(table) >= {"l1", "perceptual", "prior", "adv", "comp_gan", "identity"}
    assert min(r for _, r in table.values()) >= FLOOR, report(preset, table)


def test_a_mean_style_loss_fails_the_floor(faces, tmp_path):
    """The check can fail: the paper preset with the style loss as it was (mean squared difference of
    the Gram entries, levels 0.5 / 1.0) has a component style term below the floor."""
    stage1 = stage1_checkpoint("stage1_paper", faces, tmp_path / "stage1")
    trainer = stage2_trainer("stage2_paper", faces, tmp_path / "run", stage1, "loss.component.style_distance=l2",
                             "loss.component.style_level_weights=[0.5, 1.0]")
    table = shares(trainer)
    print("gradient shares:", report("stage2_paper with a mean style loss", table))
    assert table["comp_style"][1] < FLOOR
    assert min(r for name, (_, r) in table.items() if name != "comp_style") >= FLOOR
