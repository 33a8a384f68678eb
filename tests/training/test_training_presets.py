"""The presets do what their names say: `*_paper.yaml` the paper's text, `*_released.yaml` what the
official RestoreFormer / RestoreFormer++ code trains (item by item, as each preset's comment lists).

Networks are tiny random initialisations of the real architectures; loss networks are random (no
pretrained files offline) through `allow_random_loss_networks`. Runs use the real Trainer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from helpers.training_data import face_folder_with_landmarks

from training.config import apply_overrides, load_config
from training.stage1 import Stage1Config
from training.stage2 import Stage2Config

ROOT = REPO
CONFIGS = ROOT / "training" / "configs"


def preset(cls, name: str, *overrides: str):
    return load_config(cls, data=apply_overrides(CONFIGS / f"{name}.yaml", list(overrides)))


# Every test on one intra-op thread (conftest's fixture): the runs compare numbers across processes.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces(tmp_path_factory, astronaut, grace_hopper) -> Path:
    return face_folder_with_landmarks(tmp_path_factory.mktemp("presets") / "faces", astronaut, grace_hopper)


def cpu(faces: Path, out: Path, *extra: str) -> list[str]:
    """What a CPU test changes in a preset: tiny network, 64 px, batch 2 (unless set), random loss nets."""
    return [f"run.out_dir={out}", "run.device=cpu", "run.precision=fp32", "run.num_workers=0",
            "run.progress=false", "run.tensorboard=false", "run.steps=1", "run.checkpoint_every=1",
            f"data.root={faces}", "data.size=64", "data.resize=true", "model.tiny=true",
            "loss.allow_random_loss_networks=true", "loss.perceptual.vgg_weights=''",
            "loss.perceptual.lpips_heads=''", *extra]


def stage1(name: str, faces: Path, out: Path, *extra: str):
    from training.stage1 import build

    return build(preset(Stage1Config, name, *cpu(faces, out, *extra)))


def stage2(name: str, faces: Path, out: Path, *extra: str):
    from training.stage2 import build

    return build(preset(Stage2Config, name, *cpu(faces, out, "loss.identity.weights=''", *extra)))


# ---- stage 1 -------------------------------------------------------------------------------------


def test_stage1_presets_hold_the_paper_and_the_released_values():
    paper = preset(Stage1Config, "stage1_paper")
    assert (paper.loss.codebook_weight, paper.loss.commitment_weight) == (1.0, 0.25)
    assert paper.optim.lr == 7e-5 and paper.optim.lr_milestones == (600_000,) and paper.run.batch_size == 16
    released = preset(Stage1Config, "stage1_released")
    lc = released.loss
    assert (lc.codebook_weight, lc.commitment_weight) == (0.25, 1.0)  # beta = 0.25 on the dictionary term
    assert lc.perceptual.kind == "lpips" and lc.perceptual.weight == 1.0 and lc.l1_weight == 1.0
    assert (lc.discriminator.loss, lc.discriminator.weight, lc.discriminator.adaptive_weight) == ("hinge", 0.8, True)
    assert lc.discriminator.start_step == 30001 and lc.perceptual.style_weight == 0.0
    assert released.optim.lr_per_image == 4.5e-6 and released.optim.lr_milestones == ()
    assert released.run.batch_per_process == 4 and released.network_config().heads == 8
    assert released.augment.shift_prob == 0 and released.augment.gray_prob == 0
    plus = preset(Stage1Config, "stage1_restoreformer_plusplus_released")
    net = plus.network_config()
    assert (net.heads, net.encoder_attn_resolutions, net.decoder_attn_resolutions) == (4, (16,), (16,))
    assert (plus.augment.shift_prob, plus.augment.shift_max, plus.augment.shift_unit, plus.augment.gray_prob) == (
        0.2, 32, 1, 0.008)
    assert (plus.loss.codebook_weight, plus.loss.commitment_weight, plus.optim.lr_per_image) == (0.25, 1.0, 4.5e-6)


def test_released_learning_rate_is_per_image_and_constant(faces, tmp_path, capsys):
    from training.trainer import step_schedule

    trainer = stage1("stage1_released", faces, tmp_path / "a")
    # One process, 4 per process, no accumulation: 4.5e-6 x 4, for the generator and the discriminator.
    assert trainer.batch_size == 4 and trainer.micro_batch == 4
    for opt in trainer.optimizers.values():
        assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1.8e-5)] * len(opt.param_groups)
    assert "1.8e-05 = 1 (grad_accum) * 1 (processes) * 4 (batch per process) * 4.5e-06" in capsys.readouterr().out
    accum = stage1("stage1_released", faces, tmp_path / "b", "run.grad_accum=2")
    assert accum.batch_size == 8 and accum.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(3.6e-5)
    assert step_schedule(trainer.task.cfg.optim)(10**7) == 1.0  # no milestone is ever reached
    paper = stage1("stage1_paper", faces, tmp_path / "c", "run.batch_size=2")
    assert paper.optimizers["generator"].param_groups[0]["lr"] == 7e-5  # the paper's rate, as given


@pytest.mark.slow
def test_released_learning_rate_grows_with_torchrun_processes(faces, tmp_path):
    """Under torchrun with 2 processes the released preset trains 8 images per step at 3.6e-5, as the
    released code would on 2 GPUs (4.5e-6 x 2 GPUs x 4)."""
    import yaml

    data = apply_overrides(CONFIGS / "stage1_released.yaml", cpu(faces, tmp_path / "run", "run.tensorboard=true",
                                                                   "run.log_every=1"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           "-m", "training", "stage1", "--config", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3.6e-05 = 1 (grad_accum) * 2 (processes) * 4 (batch per process) * 4.5e-06" in proc.stdout
    assert "8 images per step (4 per process x 1 accumulation x 2)" in proc.stdout
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000001.pt", weights_only=True)
    assert state["global_batch"] == 8
    assert state["optimizers"]["generator"]["param_groups"][0]["lr"] == pytest.approx(3.6e-5)


def test_released_quantiser_weights_sit_where_the_released_code_puts_them(faces, tmp_path):
    """Dictionary gradient x0.25 and encoder (commitment) gradient x1.0 in stage1_released; the reverse
    of the paper preset's 1.0 / 0.25."""
    for name, (w_dict, w_commit) in (("stage1_released", (0.25, 1.0)), ("stage1_paper", (1.0, 0.25))):
        trainer = stage1(name, faces, tmp_path / name, "run.batch_size=2", "run.batch_per_process=0")
        task, net = trainer.task, trainer.modules["generator"]
        batch = next(iter(trainer._loader()))
        terms = task.generator_terms(trainer, batch)
        weighted, _ = task.weighted_terms(trainer, terms)
        assert float(weighted["codebook"].detach()) == pytest.approx(w_dict * float(terms["codebook"].detach()))
        assert float(weighted["commitment"].detach()) == pytest.approx(w_commit * float(terms["commitment"].detach()))
        emb = net.quantize.embedding.weight
        g_total = torch.autograd.grad(weighted["codebook"] + weighted["commitment"], emb, retain_graph=True)[0]
        g_dict = torch.autograd.grad(terms["codebook"], emb, retain_graph=True)[0]
        torch.testing.assert_close(g_total, w_dict * g_dict)


def test_rfpp_stage1_augments_the_ground_truth(faces, tmp_path):
    from training.data import SampleKey, load_image, sample_generator
    from training.degradation import draw_shift, gray, shift_image

    trainer = stage1("stage1_restoreformer_plusplus_released", faces, tmp_path / "run", "augment.shift_prob=1.0",
                     "augment.gray_prob=1.0", "data.hflip=false")
    ds = trainer.dataset
    shifts = []
    for i in range(len(ds)):
        sample = ds[SampleKey(i, 0, i)]["gt"]
        # The same draws by hand: shift (scaled to 64 px: -4..4 in 1 px steps), then gray.
        g = sample_generator(ds.seed, 0, i)
        torch.rand((), generator=g, dtype=torch.float64)  # the shift_prob draw
        dx, dy = draw_shift(g, 32, 1, 64 / 512)
        shifts.append((dx, dy))
        torch.testing.assert_close(sample, gray(shift_image(load_image(ds.files[i], 64, True), dx, dy)))
    assert any(s != (0, 0) for s in shifts)


# ---- shift ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,pad", [(5, 3), (8, 8), (6, 13)])
def test_symmetric_padding_is_numpys(n, pad):
    from training.degradation import symmetric_indices

    assert symmetric_indices(n, pad).tolist() == np.pad(np.arange(n), pad, mode="symmetric").tolist()


def test_shift_is_the_released_pad_and_crop():
    """The released code pads by 32 (symmetric) and crops at offsets (v, h) in 0..64: content moves by
    32 - v down and 32 - h right."""
    from training.degradation import shift_image

    rng = np.random.default_rng(0)
    image = rng.random((3, 40, 48)).astype(np.float32)
    padded = np.pad(image, ((0, 0), (32, 32), (32, 32)), mode="symmetric")
    for v, h in ((0, 0), (64, 64), (10, 50), (32, 31)):
        released = padded[:, v : v + 40, h : h + 48]
        ours = shift_image(torch.from_numpy(image), 32 - h, 32 - v).numpy()
        np.testing.assert_array_equal(ours, released)


def test_shift_range_and_step_are_the_released_ones():
    from training.degradation import draw_shift

    g = torch.Generator().manual_seed(0)
    at512 = {draw_shift(g, 32, 1, 1.0) for _ in range(6000)}
    xs = {dx for dx, _ in at512}
    assert xs == set(range(-32, 33)) and {dy for _, dy in at512} == set(range(-32, 33))
    at64 = {dx for dx, _ in (draw_shift(g, 32, 1, 64 / 512) for _ in range(400))}
    assert at64 == set(range(-4, 5))
    cfg = preset(Stage2Config, "stage2_restoreformer_plusplus_released").degradation
    assert (cfg.shift_prob, cfg.shift_max, cfg.shift_unit) == (0.2, 32, 1)


def test_landmarks_move_with_the_shifted_face(tmp_path):
    """Every sample of the RF++ degradation with a shift (p 1 here) and flips: the component boxes land
    on the same face parts of the shifted ground truth. The image has a distinct colour under each
    landmark; the pixel at each moved landmark must still be that colour."""
    from PIL import Image

    from training.data import SampleKey, sample_generator
    from training.degradation import Degradation
    from training.losses.components import flip_landmarks
    from training.stage2 import FLIP_SALT, LandmarkFaceDataset, Stage2DataConfig

    root = tmp_path / "faces"
    root.mkdir()
    size = 128
    points = np.array([[40, 50], [88, 50], [64, 72], [46, 96], [82, 96]], dtype=float)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], dtype=np.uint8)
    image = np.full((size, size, 3), 128, np.uint8)
    for (x, y), c in zip(points.astype(int), colours):
        image[y - 2 : y + 3, x - 2 : x + 3] = c
    Image.fromarray(image).save(root / "face.png")
    lm = {"format": "restoreformer-landmarks", "version": 1, "landmarks": {"face.png": (points / size).tolist()}}
    (tmp_path / "faces_landmarks5.json").write_text(json.dumps(lm))
    deg_cfg = preset(Stage2Config, "stage2_restoreformer_plusplus_released", "degradation.shift_prob=1.0",
                     "degradation.gray_prob=0.0").degradation
    ds = LandmarkFaceDataset(Stage2DataConfig(root=str(root), size=size), Degradation(deg_cfg), seed=0)
    swapped = [1, 0, 2, 4, 3]  # after a flip, landmark i is the mirror of original point swapped[i]
    moved = flips = 0
    for epoch in range(40):
        sample = ds[SampleKey(0, epoch, epoch)]
        flipped = bool(torch.rand((), generator=sample_generator(0 ^ FLIP_SALT, epoch, 0)) < 0.5)
        gt = (sample["gt"].permute(1, 2, 0).numpy() * 255).round().astype(int)
        for i, (x, y) in enumerate(sample["landmarks"].numpy()):
            colour = colours[swapped[i]] if flipped else colours[i]
            assert np.array_equal(gt[int(round(y)), int(round(x))], colour), (epoch, i, (x, y), flipped)
        flips += flipped
        unmoved = flip_landmarks(torch.tensor(points, dtype=torch.float32), size) if flipped else torch.tensor(points)
        moved += not torch.allclose(sample["landmarks"].double(), unmoved.double())
    assert moved > 30 and 5 < flips < 35  # most faces moved, some flipped


def test_haze_comes_right_after_the_blur():
    from training.degradation import DegradationParams, blur, degrade, gaussian_kernel, jpeg, resize, to_uint8

    torch.manual_seed(0)
    gt = torch.rand(3, 64, 64)
    p = DegradationParams(9, 1.5, 1.5, 0.0, 2.0, 0.0, 0, 100, haze_alpha=0.8)
    x = blur(gt, gaussian_kernel(9, 1.5)) * 0.8 + 0.2
    x = jpeg(resize(x, 32, 32).clamp(0, 1), 100)
    expected = to_uint8(resize(x, 64, 64)).float() / 255
    torch.testing.assert_close(degrade(gt, p), expected)
    no_haze = degrade(gt, DegradationParams(9, 1.5, 1.5, 0.0, 2.0, 0.0, 0, 100))
    assert not torch.equal(no_haze, expected)


def test_haze_is_drawn_per_degraded_copy():
    from training.config import DegradationConfig
    from training.degradation import Degradation

    deg = Degradation(DegradationConfig(haze_prob=0.5))
    g = torch.Generator().manual_seed(1)
    alphas = [deg.sample(g).haze_alpha for _ in range(400)]
    hazed = [a for a in alphas if a is not None]
    assert 150 < len(hazed) < 250 and all(0.75 <= a <= 0.95 for a in hazed)
    assert all(Degradation(DegradationConfig()).sample(g).haze_alpha is None for _ in range(50))


# ---- stage 2 -------------------------------------------------------------------------------------


def test_stage2_presets_hold_the_paper_and_the_released_values():
    paper = preset(Stage2Config, "stage2_paper")
    assert paper.loss.component.style_distance == "l2_sum" and paper.loss.component.style_level_weights == (1.0, 1.0)
    assert paper.init.discriminator == "fresh" and paper.loss.perceptual.style_weight == 0.0
    rf = preset(Stage2Config, "stage2_restoreformer_released")
    lc, o = rf.loss, rf.optim
    assert rf.init.discriminator == "stage1" and rf.init.stage1 == "runs/stage1_released/checkpoints"
    assert lc.perceptual.kind == "lpips" and lc.perceptual.style_weight == 1e9 and lc.prior_weight == 1.0
    assert (lc.component.weight, lc.component.style_weight, lc.component.style_distance) == (1.5, 2000.0, "l1")
    assert lc.component.style_level_weights == (0.5, 1.0) and lc.component.betas == (0.9, 0.99)
    assert (lc.identity.weight, lc.identity.distance) == (3.0, "l1")
    assert (lc.discriminator.loss, lc.discriminator.adaptive_weight, lc.discriminator.start_step) == ("hinge", True, 10001)
    assert (o.lr_per_image, o.lr_milestones, o.attention_lr_scale, lc.component.lr_scale) == (4.5e-6, (), 10.0, 10.0)
    assert o.betas == (0.5, 0.9) and o.disc_betas == (0.5, 0.9) and rf.run.batch_per_process == 4
    plus = preset(Stage2Config, "stage2_restoreformer_plusplus_released")
    assert plus.network_config().heads == 4 and plus.init.discriminator == "stage1"
    assert plus.init.stage1 == "runs/stage1_restoreformer_plusplus_released/checkpoints"
    assert (plus.loss.component.weight, plus.loss.component.style_weight, plus.loss.identity.weight) == (1.0, 0.0, 1.0)
    assert plus.loss.perceptual.style_weight == 0.0 and plus.degradation.haze_prob == 0.008


@pytest.fixture(scope="module")
def stage1_rf(faces, tmp_path_factory) -> Path:
    """A stage-1 training checkpoint of the released RF stage 1 (tiny, untrained, 8 heads)."""
    with torch.no_grad():
        trainer = stage1("stage1_released", faces, tmp_path_factory.mktemp("s1rf") / "run")
        for p in trainer.modules["discriminator"].parameters():
            p.normal_()  # recognisable weights
    return trainer.save_checkpoint()


@pytest.fixture(scope="module")
def stage1_rfpp(faces, tmp_path_factory) -> Path:
    return stage1("stage1_restoreformer_plusplus_released", faces, tmp_path_factory.mktemp("s1pp") / "run").save_checkpoint()


def test_released_stage2_learning_rates(faces, tmp_path, stage1_rf):
    trainer = stage2("stage2_restoreformer_released", faces, tmp_path / "run", f"init.stage1={stage1_rf}")
    lr = 4.5e-6 * 4
    gen = trainer.optimizers["generator"].param_groups
    assert [g["lr"] for g in gen] == [pytest.approx(lr), pytest.approx(10 * lr)]
    net = trainer.modules["generator"]
    attention = {id(p) for n, p in net.named_parameters() if "decoder" in n and "attn" in n and p.requires_grad}
    assert {id(p) for p in gen[1]["params"]} == attention  # the released rule: name has "decoder" and "attn"
    assert trainer.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(lr)
    comps = trainer.optimizers["components"].param_groups[0]
    assert comps["lr"] == pytest.approx(10 * lr) and comps["betas"] == (0.9, 0.99)


def test_released_stage2_copies_the_stage1_discriminator(faces, tmp_path, stage1_rf):
    reference = torch.load(stage1_rf, weights_only=True)["modules"]["discriminator"]
    trainer = stage2("stage2_restoreformer_released", faces, tmp_path / "run", f"init.stage1={stage1_rf}")
    state = trainer.modules["discriminator"].state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in state)
    fresh = stage2("stage2_restoreformer_released", faces, tmp_path / "fresh", f"init.stage1={stage1_rf}",
                   "init.discriminator=fresh")
    assert not torch.equal(fresh.modules["discriminator"].state_dict()["main.0.weight"], reference["main.0.weight"])


def test_released_stage2_needs_a_checkpoint_with_a_discriminator(faces, tmp_path, stage1_rf):
    from training.errors import TrainingFileError
    from training.export import export_checkpoint

    exported = export_checkpoint(stage1_rf, tmp_path / "s1.safetensors")
    with pytest.raises(TrainingFileError, match=r"s1.safetensors.*no image discriminator.*init.discriminator: fresh"):
        stage2("stage2_restoreformer_released", faces, tmp_path / "run", f"init.stage1={exported}")
    with pytest.raises(TrainingFileError, match="does not fit loss.discriminator"):
        stage2("stage2_restoreformer_released", faces, tmp_path / "run2", f"init.stage1={stage1_rf}",
               "loss.discriminator.filters=16")


def test_a_lightning_checkpoint_of_the_released_code_gives_network_and_discriminator(faces, tmp_path, stage1_rf):
    """The released code's stage-1 checkpoint layout: state_dict with vqvae.* and loss.discriminator.*;
    it does not record heads, so init.stage1_heads states them."""
    from training.errors import TrainingFileError

    ours = torch.load(stage1_rf, weights_only=True)["modules"]
    lightning = {"state_dict": {**{f"vqvae.{k}": v for k, v in ours["generator"].items()},
                                **{f"loss.discriminator.{k}": v for k, v in ours["discriminator"].items()}},
                 "global_step": 1}
    path = tmp_path / "last.ckpt"
    torch.save(lightning, path)
    with pytest.raises(TrainingFileError, match="does not record its attention head count.*init.stage1_heads"):
        stage2("stage2_restoreformer_released", faces, tmp_path / "a", f"init.stage1={path}")
    trainer = stage2("stage2_restoreformer_released", faces, tmp_path / "b", f"init.stage1={path}",
                     "init.stage1_heads=8")
    assert torch.equal(trainer.modules["discriminator"].state_dict()["main.2.weight"],
                       ours["discriminator"]["main.2.weight"])
    assert torch.equal(trainer.modules["generator"].state_dict()["encoder.conv_in.weight"],
                       ours["generator"]["encoder.conv_in.weight"])


def test_stage2_refuses_a_stage1_network_with_another_head_count(faces, tmp_path, stage1_rf, stage1_rfpp):
    from training.errors import TrainingFileError

    with pytest.raises(TrainingFileError, match=r"8-head dictionary network, but this stage 2 \(RestoreFormer\+\+\) "
                                                r"has 4 heads.*stage1_restoreformer_plusplus_released.yaml"):
        stage2("stage2_restoreformer_plusplus_released", faces, tmp_path / "a", f"init.stage1={stage1_rf}")
    with pytest.raises(TrainingFileError, match="4-head dictionary network, but this stage 2 .RestoreFormer. has 8"):
        stage2("stage2_restoreformer_released", faces, tmp_path / "b", f"init.stage1={stage1_rfpp}")
    trainer = stage2("stage2_restoreformer_plusplus_released", faces, tmp_path / "c", f"init.stage1={stage1_rfpp}")
    fresh, _ = trainer.task.init_report
    assert fresh and all(k.startswith("decoder.up.1.attn.") for k in fresh)  # the 32x32 attention (tiny: level 1)


def test_lpips_style_term_is_the_released_one(faces, tmp_path, stage1_rf):
    """LPIPS's style output: at each tap, mean squared difference of the Gram matrices (per image, / C*H*W)
    of the channel-normalised features, summed over taps; x1e9 in the released RF preset, and outside
    the adaptive weight's reconstruction term."""
    from training.losses import LPIPS
    from training.losses.perceptual import LPIPS_TAPS, VGG16_LAYERS

    torch.manual_seed(0)
    lp = LPIPS(None, None)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    distance, style = lp.with_style(x, y)
    assert float(distance) == pytest.approx(float(lp(x, y)))
    fx, fy = (x - lp.shift) / lp.scale, (y - lp.shift) / lp.scale
    expected = 0.0
    taps = {VGG16_LAYERS[t] for t in LPIPS_TAPS}
    for i, layer in enumerate(lp.features):
        fx, fy = layer(fx), layer(fy)
        if i in taps:
            grams = []
            for f in (fx, fy):
                n = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                b, c, h, w = n.shape
                grams.append(torch.bmm(n.view(b, c, h * w), n.view(b, c, h * w).transpose(1, 2)) / (c * h * w))
            expected += float(((grams[0] - grams[1]) ** 2).mean())
    assert float(style) == pytest.approx(expected, rel=1e-4)

    trainer = stage2("stage2_restoreformer_released", faces, tmp_path / "run", f"init.stage1={stage1_rf}",
                     "loss.discriminator.start_step=0")
    task = trainer.task
    batch = next(iter(trainer._loader()))
    terms = task.generator_terms(trainer, batch)
    weighted, adv_weight = task.weighted_terms(trainer, terms)
    assert float(weighted["lpips_style"].detach()) == pytest.approx(1e9 * float(terms["lpips_style"].detach()))
    from training.losses import adaptive_weight

    last = trainer.modules["generator"].decoder.conv_out.weight
    rec = terms["l1"] + terms["perceptual"]
    assert float(adv_weight) == pytest.approx(0.8 * float(adaptive_weight(rec, terms["adv"], last)), rel=1e-5)
    with_style = rec + weighted["lpips_style"]  # what the weight would be with the style term inside rec
    assert float(adv_weight) != pytest.approx(0.8 * float(adaptive_weight(with_style, terms["adv"], last)), rel=1e-3)


def test_paper_style_loss_is_the_summed_squared_norm():
    from training.losses.components import gram, style_loss

    torch.manual_seed(0)
    fake = [torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)]
    real = [torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)]
    by_hand = sum(((gram(f) - gram(r)) ** 2).sum() / 2 for f, r in zip(fake, real))
    assert float(style_loss(fake, real, "l2_sum", (1.0, 1.0))) == pytest.approx(float(by_hand), rel=1e-6)
    # The mean it replaced is the same sum divided by C^2 per level.
    mean = style_loss(fake, real, "l2", (1.0, 1.0))
    per_level = [float(((gram(f) - gram(r)) ** 2).sum() / 2) for f, r in zip(fake, real)]
    assert float(mean) == pytest.approx(per_level[0] / 64 + per_level[1] / 256, rel=1e-6)
