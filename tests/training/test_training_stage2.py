"""Stage 2 (training/stage2.py) and its losses: components, identity, feature-to-prior, landmarks.

Real parts throughout: real photos from PyPI packages, landmarks from the project's MTCNN detector,
a stage-1 network written to a real .safetensors file, the real Trainer. The networks whose
pretrained weights cannot be had offline (stage-1 dictionary, VGG-19, ArcFace, discriminators) are
randomly initialised networks of the real architectures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from helpers.ddp import Probe
from helpers.numerics import gamma, unit_roundoff
from helpers.training_data import write_face_folder

from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, RestoreFormer, tiny_config
from training.config import apply_overrides, load_config
from training.landmarks import LandmarkTable, compute_landmarks, default_landmarks_path, read_landmarks_file
from training.losses.components import (
    REGIONS,
    ComponentDiscriminator,
    component_boxes,
    crop_components,
    crop_size,
    flip_landmarks,
    gram,
    style_loss,
)
from training.losses.identity import ArcFaceResNet18, IdentityLoss, identity_angle, load_arcface
from training.stage2 import RestoreFormerTrainee, Stage2Config, build, init_from_stage1

CONFIGS = REPO / "training" / "configs"
# A fixed, mild degradation so a short run sees the same pairs every step (the loss trend is then
# the model's, not the data's); the full ranges are tested with the degradation itself.
FIXED_DEGRADATION = [
    "degradation.blur_sigma=[1.5, 1.5]", "degradation.downsample=[2.0, 2.0]", "degradation.noise_sigma=[0.0, 0.0]",
    "degradation.jpeg_quality=[90, 90]", "data.hflip=false",
]


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces(tmp_path_factory, astronaut, grace_hopper) -> Path:
    """Two real photos and two generated images, with landmarks from the project's detector."""
    root = write_face_folder(tmp_path_factory.mktemp("s2") / "faces", astronaut, grace_hopper, generated=2)
    compute_landmarks(root)
    return root


@pytest.fixture(scope="module")
def one_face(tmp_path_factory, astronaut) -> Path:
    """One real photo (for a short run that sees the same pair every step), with its landmarks."""
    from PIL import Image

    root = tmp_path_factory.mktemp("s2one") / "faces"
    root.mkdir()
    Image.fromarray(astronaut).resize((96, 96), Image.Resampling.BICUBIC).save(root / "astronaut.png")
    compute_landmarks(root)
    return root


@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory) -> Path:
    """A tiny stage-1 dictionary network (fusion "self"), exported like `training export` does."""
    from training.export import save_weights

    torch.manual_seed(0)
    net = RestoreFormer(tiny_config(RESTOREFORMER, fusion="self"))
    with torch.no_grad():
        net.quantize.embedding.weight.normal_()
    return save_weights(net.state_dict(), tmp_path_factory.mktemp("s1") / "stage1.safetensors", net.config)


def stage2_config(faces: Path, stage1: Path, out: Path, *overrides: str) -> Stage2Config:
    data = apply_overrides(CONFIGS / "stage2_tiny_cpu.yaml", [
        f"data.root={faces}", f"run.out_dir={out}", f"init.stage1={stage1}", "init.allow_random=false",
        "run.checkpoint_every=1000", *overrides,
    ])
    return load_config(Stage2Config, data=data)


# ---- landmarks and component crops -----------------------------------------------------------


def test_landmarks_are_detected_and_keyed_by_file_name(faces, tmp_path):
    path = default_landmarks_path(faces)
    assert path == faces.parent / "faces_landmarks5.json"
    table = read_landmarks_file(path)
    assert sorted(table) == sorted(p.name for p in faces.iterdir())
    astro = np.asarray(table["000_astronaut.png"])  # fractions of the centre square
    left_eye, right_eye, nose, mouth_l, mouth_r = astro
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    # A new file that sorts first does not move anyone's landmarks (keyed by name, not position).
    extra = faces.parent / "faces_copy"
    extra.mkdir()
    for p in faces.iterdir():
        (extra / p.name).write_bytes(p.read_bytes())
    (extra / "aaa_first.png").write_bytes((faces / "001_grace_hopper.png").read_bytes())
    other = compute_landmarks(extra, tmp_path / "lm.json")
    again = read_landmarks_file(other)
    assert again["000_astronaut.png"] == table["000_astronaut.png"]
    assert again["aaa_first.png"] == table["001_grace_hopper.png"]
    # Undetected images fall back to the aligned template; unknown names are reported.
    lm = LandmarkTable(table, 64)
    assert lm.missing(["000_astronaut.png", "zzz.png"]) == ["zzz.png"]
    assert torch.equal(lm("000_astronaut.png"), torch.tensor(table["000_astronaut.png"]) * 64)  # x 64: exact


def test_missing_landmarks_are_a_clear_error(faces, stage1_file, tmp_path):
    bad = tmp_path / "lm.json"
    payload = json.loads(default_landmarks_path(faces).read_text())
    del payload["landmarks"]["001_grace_hopper.png"]
    bad.write_text(json.dumps(payload))
    cfg = stage2_config(faces, stage1_file, tmp_path / "run", f"data.landmarks={bad}")
    with pytest.raises(ValueError, match="no entry for 1 image.*001_grace_hopper.png.*training landmarks"):
        build(cfg)


def test_component_boxes_crops_and_flips():
    lm = torch.tensor([[[200.0, 240.0], [320.0, 240.0], [256.0, 310.0], [206.0, 370.0], [306.0, 370.0]]])
    boxes = component_boxes(lm, 512)
    eye_half = 0.16 * 120 * 1.4
    # float32 coordinates under 512 px, a few roundings each: 4 ulps of 512.
    coords = dict(rtol=0, atol=4 * torch.finfo(torch.float32).eps * 512)
    torch.testing.assert_close(boxes["left_eye"][0], torch.tensor([200 - eye_half, 240 - eye_half,
                                                                   200 + eye_half, 240 + eye_half]), **coords)
    torch.testing.assert_close(boxes["mouth"][0], torch.tensor([206.0, 320.0, 306.0, 420.0]), **coords)
    assert crop_size("left_eye", 512) == 80 and crop_size("mouth", 512) == 120 and crop_size("mouth", 64) == 15
    # ROI-align of a pixel-aligned box whose side equals the crop size is exactly the pixels inside.
    image = torch.rand(2, 3, 64, 64)
    crops = crop_components(image, {r: torch.tensor([[10.0, 20.0, 20.0, 30.0], [30.0, 5.0, 40.0, 15.0]])
                                    for r in REGIONS})
    assert crops["left_eye"].shape == (2, 3, 10, 10) and crops["mouth"].shape == (2, 3, 15, 15)
    # Samples land on pixel centres (integer box, unit bins): bilinear weights 1 and 0, a few
    # roundings of values <= 1.
    pixels = dict(rtol=0, atol=4 * torch.finfo(torch.float32).eps)
    torch.testing.assert_close(crops["left_eye"][0], image[0, :, 20:30, 10:20], **pixels)
    torch.testing.assert_close(crops["right_eye"][1], image[1, :, 5:15, 30:40], **pixels)
    # Flipping swaps left and right and mirrors x; twice is the identity.
    flipped = flip_landmarks(lm, 512)
    assert flipped[0, 0].tolist() == [511 - 320.0, 240.0] and flipped[0, 3].tolist() == [511 - 306.0, 370.0]
    assert torch.equal(flip_landmarks(flipped, 512), lm)


def test_component_discriminator_features_and_style_loss():
    torch.manual_seed(0)
    d = ComponentDiscriminator()
    logits, feats = d(torch.randn(2, 3, 80, 80))
    assert logits.shape == (2, 1, 20, 20)
    assert [f.shape for f in feats] == [(2, 128, 40, 40), (2, 256, 20, 20)]
    g = gram(feats[0])
    # Each Gram entry is a float32 dot product over 40 x 40 positions (any order: gamma_1600 of
    # the absolute products) and one more rounding for the division.
    flat = feats[0].detach().flatten(2)
    bound = gamma(40 * 40 + 1, torch.float32) * (flat.abs() @ flat.abs().transpose(1, 2)) / (128 * 40 * 40)
    assert g.shape == (2, 128, 128) and bool(((g - g.transpose(1, 2)).abs() <= 2 * bound).all())
    f = feats[1].detach()
    by_mm = feats[0][0].flatten(1) @ feats[0][0].flatten(1).T / (128 * 40 * 40)
    assert bool(((g[0] - by_mm).abs() <= 2 * bound[0]).all())
    assert style_loss([feats[0], f], [feats[0], f]).item() == 0.0
    other = [feats[0] * 1.1, f * 0.9]
    by_hand = 0.5 * (gram(other[0]) - gram(feats[0])).square().mean() + (gram(other[1]) - gram(f)).square().mean()
    # The same Gram matrices; the two means of 128^2 and 256^2 squares may sum in other orders.
    assert style_loss(other, [feats[0], f]).item() == pytest.approx(by_hand.item(), rel=2 * gamma(256**2 + 4, torch.float32))


# ---- identity ---------------------------------------------------------------------------------


def test_arcface_has_gfpgan_layout_and_loads_strictly(tmp_path):
    net = ArcFaceResNet18()
    sd = net.state_dict()
    assert sd["conv1.weight"].shape == (64, 1, 3, 3)
    assert sd["layer1.0.conv1.weight"].shape == (64, 64, 3, 3) and "layer1.0.downsample.0.weight" not in sd
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.bn2.running_var"].shape == (512,) and sd["layer4.0.prelu.weight"].shape == (1,)
    assert sd["fc5.weight"].shape == (512, 512 * 8 * 8) and sd["bn5.running_mean"].shape == (512,)
    # GFPGAN's file may carry DataParallel's "module." prefix.
    path = tmp_path / "arcface_resnet18.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    loaded = load_arcface(str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    torch.save({k: v for k, v in sd.items() if not k.startswith("fc5")}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing.*fc5"):
        load_arcface(str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="loss.identity_weights"):
        load_arcface("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_arcface(str(tmp_path / "nowhere.pth"))


def test_identity_loss_and_angle():
    torch.manual_seed(0)
    net = load_arcface(None, allow_random=True)
    loss = IdentityLoss(net).train()
    assert not net.training
    out = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    gt = torch.rand(2, 3, 64, 64) * 2 - 1
    value = loss(out, gt)
    value.backward()
    assert value.item() > 0 and out.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert loss(gt, gt).item() == 0.0
    a = torch.rand(2, 3, 64, 64)
    angle = identity_angle(net, a, a)
    # Both embeddings are the same bits (same input, same kernels); their cosine is 1 within a few
    # roundings (8 u), and arccos(1 - d) ~ sqrt(2 d).
    assert angle.shape == (2,) and angle.abs().max().item() <= math.sqrt(2 * 8 * unit_roundoff(torch.float32))
    assert 0 < identity_angle(net, a, a.flip(0))[0].item() <= math.pi


# ---- stage 2 ----------------------------------------------------------------------------------


def test_mhca_p_is_the_default_network():
    assert Stage2Config().network_config() == RESTOREFORMER
    plus = load_config(Stage2Config, data=apply_overrides(CONFIGS / "stage2_restoreformer_plusplus_released.yaml"))
    assert plus.network_config() == RESTOREFORMER_PLUSPLUS
    paper = load_config(Stage2Config, data=apply_overrides(CONFIGS / "stage2_paper.yaml"))
    lc = paper.loss
    weights = (lc.perceptual.weight, lc.prior_weight, lc.component.weight, lc.component.style_weight,
               lc.discriminator.weight, lc.identity.weight)
    assert weights == (1.0, 0.25, 1.0, 2000.0, 0.8, 1.5)  # the paper's lambda_per, p, disc, style, adv, id
    assert paper.optim.lr == 7e-6 and paper.run.steps == 60_000 and paper.run.batch_size == 16
    sft = load_config(Stage2Config, data=apply_overrides(CONFIGS / "stage2_ablation_sft.yaml"))
    assert sft.network_config().fusion == "sft"


@pytest.mark.parametrize("fusion", ["none", "sa_d", "sa_p", "sft", "mhca_d", "mhca_p"])
def test_trainee_forward_is_the_nodes_forward(fusion):
    torch.manual_seed(1)
    net = RestoreFormerTrainee(tiny_config(RESTOREFORMER, fusion=fusion)).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out, z_d, z_p = net(x)
        assert torch.equal(out, RestoreFormer.forward(net, x))
    assert z_d.shape == z_p.shape == (1, 64, 16, 16)


def test_init_from_stage1(stage1_file):
    from restoreformer_node.weights import read_state_dict

    stage1 = read_state_dict(str(stage1_file))[0]
    rf = RestoreFormerTrainee(tiny_config(RESTOREFORMER))
    assert init_from_stage1(rf, stage1) == ([], [])
    assert all(torch.equal(rf.state_dict()[k], v) for k, v in stage1.items())
    plus = RestoreFormerTrainee(tiny_config(RESTOREFORMER_PLUSPLUS))
    fresh, dropped = init_from_stage1(plus, stage1)
    assert fresh and all(k.startswith("decoder.up.1.attn.") for k in fresh) and not dropped  # 32x32: fresh
    none = RestoreFormerTrainee(tiny_config(RESTOREFORMER, fusion="none"))
    fresh, dropped = init_from_stage1(none, stage1)
    assert not fresh and dropped and all(".attn" in k for k in dropped)
    wrong = RestoreFormerTrainee(tiny_config(RESTOREFORMER, ch=64))
    with pytest.raises(ValueError, match="shapes differ"):
        init_from_stage1(wrong, stage1)


def _norm(t: torch.Tensor | None) -> float:
    return 0.0 if t is None else float(t.abs().sum())


def test_every_loss_term_is_finite_and_reaches_the_right_parameters(faces, stage1_file, tmp_path):
    cfg = stage2_config(faces, stage1_file, tmp_path / "run")
    trainer = build(cfg)
    task = trainer.task
    net = trainer.modules["generator"]
    comps, disc = trainer.modules["components"], trainer.modules["discriminator"]
    batch = {k: v[:2] if torch.is_tensor(v) else v for k, v in next(iter(trainer._loader())).items()}
    assert batch["landmarks"].shape == (2, 5, 2)
    for m in (comps, disc):  # the generator phase trains only the generator (as the Trainer does)
        m.requires_grad_(False)
    state: dict = {}
    terms = task.generator_terms(trainer, batch, state)
    assert set(terms) == {"l1", "perceptual", "prior", "adv", "comp_gan", "comp_style", "identity"}
    encoder_in, decoder_out = net.encoder.conv_in.weight, net.decoder.conv_out.weight
    fusion = net.decoder.mid.attn_1.q.weight
    codebook = net.quantize.embedding.weight
    assert not codebook.requires_grad
    for name, value in terms.items():
        assert torch.isfinite(value) and value.item() >= 0, name
        grads = torch.autograd.grad(value, [encoder_in, decoder_out, fusion], retain_graph=True, allow_unused=True)
        if name == "prior":  # L_p moves only the encoder: Z_p is a frozen dictionary entry
            assert _norm(grads[0]) > 0 and grads[1] is None and grads[2] is None, name
        else:
            assert all(_norm(g) > 0 for g in grads), name
    # Frozen loss networks get nothing; the component discriminators get theirs in their own phase.
    total = sum(terms.values())
    total.backward()
    assert codebook.grad is None
    assert all(p.grad is None for p in task.identity.parameters())
    assert all(p.grad is None for p in task.perceptual.parameters())
    assert all(p.grad is None for p in comps.parameters())
    net.zero_grad(set_to_none=True)
    net.requires_grad_(False)
    comps.requires_grad_(True)
    disc.requires_grad_(True)
    d_loss, logs = task.discriminator_loss(trainer, batch, state)
    assert torch.isfinite(d_loss) and set(logs) == {"d_loss", "comp_d_loss"}
    d_loss.backward()
    for region in REGIONS:
        assert _norm(getattr(comps, region).conv1.weight.grad) > 0, region
        assert _norm(getattr(comps, region).final.weight.grad) > 0, region
    assert _norm(disc.main[0].weight.grad) > 0
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.slow
def test_tiny_run_lowers_the_loss_and_exports_weights_the_nodes_restore_with(
    one_face, stage1_file, tmp_path, astronaut
):
    """10 steps of the tiny preset with every loss on (batch 1, one photo, a fixed degradation): the
    total generator loss falls, the dictionary stays the stage-1 dictionary, and the exported file
    restores a real photo through the nodes' detect -> align -> restore -> paste pipeline."""
    from training.export import export_checkpoint

    steps = 10
    cfg = stage2_config(one_face, stage1_file, tmp_path / "run", f"run.steps={steps}", f"run.checkpoint_every={steps}",
                        "run.batch_size=1", "optim.lr=2.0e-4", *FIXED_DEGRADATION)
    trainer = build(cfg)
    codebook = trainer.modules["generator"].quantize.embedding.weight.detach().clone()
    seen: list[dict[str, float]] = []
    generator_loss = trainer.task.generator_loss

    def recording(tr, batch, state):
        loss, logs = generator_loss(tr, batch, state)
        seen.append({k: float(v) for k, v in logs.items()})
        return loss, logs

    trainer.task.generator_loss = recording
    trainer.fit()
    assert len(seen) == steps and all(math.isfinite(v) for row in seen for v in row.values())
    assert all({"adv", "comp_gan", "comp_style", "identity", "prior"} <= set(row) for row in seen)
    first = np.mean([r["loss"] for r in seen[:3]])
    last = np.mean([r["loss"] for r in seen[-3:]])
    for key in ("loss", "l1", "perceptual", "prior", "adv", "comp_gan", "comp_style", "identity"):
        print(f"stage-2 tiny run, {key} per step:", [round(r[key], 5) for r in seen])
    assert last < first, [round(r["loss"], 4) for r in seen]
    assert seen[-1]["l1"] < seen[0]["l1"] and seen[-1]["perceptual"] < seen[0]["perceptual"]
    assert torch.equal(trainer.modules["generator"].quantize.embedding.weight.detach(), codebook)

    weights = export_checkpoint(tmp_path / "run", tmp_path / "rf_tiny.safetensors")
    from restoreformer_node.weights import load_restoreformer

    model = load_restoreformer(weights)
    assert model.config == tiny_config(RESTOREFORMER)
    trained = trainer.modules["generator"].eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), RestoreFormer.forward(trained, x))

    from restoreformer_node.faces.detection import find_faces
    from restoreformer_node.faces.detectors import load_detector
    from restoreformer_node.faces.pipeline import restore_faces

    image = torch.from_numpy(astronaut.copy()).float().div(255)[None]
    found = find_faces(load_detector("mtcnn"), image)
    assert len(found) == 1
    result = restore_faces(image, model, found)
    assert result.images.shape == image.shape and torch.isfinite(result.images).all()
    assert result.crops.shape == (1, 64, 64, 3)
    face = result.mask[0] > 0.5
    assert face.sum() > 1000  # the face region was replaced ...
    # ... by the network's output: a criterion far above rounding (float32 would leave ~1e-7).
    assert (result.images[0][face] - image[0][face]).abs().mean() > 1e-3
    outside = result.mask[0] == 0
    assert torch.equal(result.images[0][outside], image[0][outside])  # ... and nothing else


@pytest.mark.parametrize("fusion", ["none", "sa_d", "sa_p", "sft", "mhca_d", "mhca_p"])
def test_each_ablation_variant_trains(faces, stage1_file, tmp_path, fusion):
    """Two steps of each Table-4 variant from the same stage-1 network; every trainable tensor of
    the generator moves (fresh SFT blocks included) and the dictionary does not."""
    cfg = stage2_config(faces, stage1_file, tmp_path / "run", "run.steps=2", f"model.overrides.fusion={fusion}",
                        "loss.identity.weight=0", "loss.perceptual.weight=0", "optim.lr=1.0e-3")
    trainer = build(cfg)
    net = trainer.modules["generator"]
    assert net.config.fusion == fusion
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    logs = trainer.fit()
    assert math.isfinite(logs["loss"]) and math.isfinite(logs["comp_d_loss"])
    moved = {k for k, v in net.named_parameters() if not torch.equal(v.detach(), before[k])}
    frozen = {k for k, v in net.named_parameters() if not v.requires_grad}
    assert "quantize.embedding.weight" in frozen and "quantize.embedding.weight" not in moved
    assert moved == set(before) - frozen



# ---- many processes ---------------------------------------------------------------------------


def trained_functions(modules: dict, task, lq: torch.Tensor, gt: torch.Tensor,
                      landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a checkpoint's networks compute, in eval mode: {"generator": restorations [N, 3, S, S] of the
    degraded faces lq [N, 3, S, S] in [0, 1] (the nodes' forward), "discriminator": PatchGAN logits,
    region: component-discriminator logits} on the ground truth gt [N, 3, S, S] in [-1, 1]."""
    from training.losses import PatchDiscriminator
    from training.losses.components import ComponentDiscriminators

    dcfg = task.cfg.loss.discriminator
    gen, comps = RestoreFormerTrainee(task.net_cfg), ComponentDiscriminators()
    disc = PatchDiscriminator(3, dcfg.filters, dcfg.layers, dcfg.norm)
    for net, name in ((gen, "generator"), (disc, "discriminator"), (comps, "components")):
        net.load_state_dict(modules[name])
        net.eval()
    with torch.no_grad():
        crops = crop_components(gt, component_boxes(landmarks, gt.shape[-1]))
        regions = comps(crops)
        return {"generator": RestoreFormer.forward(gen, lq * 2 - 1), "discriminator": disc(gt),
                **{r: regions[r][0] for r in REGIONS}}


@pytest.mark.slow
@pytest.mark.parametrize("rank1_grad_scale", [1.0, 1.25], ids=["exact", "rank1_perturbed"])
def test_torchrun_two_processes_equal_one(faces, stage1_file, tmp_path, monkeypatch, rank1_grad_scale):
    """DDP with gloo on the CPU: 2 processes x batch 2 == 1 process x batch 4, with every stage-2 term
    on from the first step: image discriminator (cross-rank BatchNorm, adaptive weight averaged over
    ranks), the three component discriminators (GAN and style), ArcFace identity, perceptual, prior.
    All three DDP-wrapped modules (generator, discriminator, components) take part in both steps;
    the second step is where DDP reports parameters that took no part in the first. Bounds are
    measured in the test (tests/ddp_equivalence.py); with rank 1's gradients scaled by 1.25 before
    averaging, the same check must fail."""

    def config_for(name: str) -> dict:
        return apply_overrides(CONFIGS / "stage2_tiny_cpu.yaml", [
            f"data.root={faces}", f"run.out_dir={tmp_path / name}", f"init.stage1={stage1_file}",
            "init.allow_random=false", "run.steps=2", "run.batch_size=4", "run.checkpoint_every=1",
            "run.keep_checkpoints=2", "run.log_every=1", "run.tensorboard=true",
            "loss.discriminator.start_step=0", "loss.discriminator.adaptive_weight=true", "optim.lr=1.0e-4",
        ])

    def build_from(config: dict):
        return build(load_config(Stage2Config, data=config))

    fresh = build_from(config_for("fresh"))
    batch = eval_batch(fresh)
    probe = Probe(build_from, lambda modules: trained_functions(modules, fresh.task, *batch), "stage2",
                  ("l1", "perceptual", "prior", "adv", "adv_weight", "comp_gan", "comp_style", "identity", "loss",
                   "d_loss", "comp_d_loss"))
    comparison = probe.compare(config_for, tmp_path, monkeypatch, steps=2, rank1_grad_scale=rank1_grad_scale)
    comparison.check(probe.functions({k: m.state_dict() for k, m in fresh.modules.items()}))


def eval_batch(trainer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample of the run's dataset: (lq in [0, 1], gt in [-1, 1], landmarks)."""
    ds = trainer.dataset
    lq = torch.stack([ds[i]["lq"] for i in range(len(ds))])
    gt = torch.stack([ds[i]["gt"] for i in range(len(ds))]) * 2 - 1
    return lq, gt, torch.stack([ds[i]["landmarks"] for i in range(len(ds))])
