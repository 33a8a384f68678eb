"""The metric networks of `python -m training evaluate`, built from local weight files with errors
that name the option, the file and the fix in one line.

LPIPS: VGG-16 features (torchvision's `vgg16-397923af.pth`, --lpips-vgg) and the lpips v0.1 linear
heads (`vgg.pth`, --lpips-heads); the same network as the taming-transformers LPIPS the
RestoreFormer++ scripts import. IDD: GFPGAN's ArcFace ResNet-18 (`arcface_resnet18.pth`, --arcface).
Pickled files go through restoreformer_node's weights-only loader (a static scan first, nothing in
the file runs). `--allow-random-networks` builds missing networks with fixed-seed random weights,
so two runs give the same numbers (tests only: such values are not LPIPS or IDD).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

RANDOM_SEED = 0

ARCFACE_FIX = "pass GFPGAN's arcface_resnet18.pth (GFPGAN release v0.1.0)"
LPIPS_VGG_FIX = "pass torchvision's vgg16-397923af.pth (VGG-16 ImageNet weights)"
LPIPS_HEADS_FIX = "pass the lpips package's weights/v0.1/vgg.pth (keys lin0..lin4)"


class EvalInputError(Exception):
    """A bad input to `evaluate` (option, file or folder): one line naming it and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def read_weights(path: str, flag: str, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict in a .safetensors or pickled torch file (a `state_dict`,
    `params`, `params_ema` or `model` wrapper is unwrapped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EvalInputError(f"{flag} {p}: no such file; {fix}")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except Exception as err:
            raise EvalInputError(f"{flag} {p}: not a readable safetensors file ({type(err).__name__}: {err}); {fix}") from None
    else:
        from restoreformer_node.weights import WeightLoadError
        from restoreformer_node.weights.pickle_safety import safe_torch_load

        container = "PyTorch zip checkpoint" if zipfile.is_zipfile(p) else "PyTorch pickle"
        try:
            state = safe_torch_load(str(p), container)
        except WeightLoadError as err:
            raise EvalInputError(f"{flag} {p}: {err.problem} {fix}") from None
    for _ in range(3):
        if isinstance(state, dict):
            inner = next((state[k] for k in ("state_dict", "params_ema", "params", "model")
                          if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict):
        raise EvalInputError(f"{flag} {p}: holds a {type(state).__name__}, not a state dict; {fix}")
    tensors = {str(k): v for k, v in state.items() if torch.is_tensor(v)}
    if not tensors:
        raise EvalInputError(f"{flag} {p}: holds no tensors; {fix}")
    return tensors


def _seeded(build):
    """Build a module with torch's global generator at a fixed seed, leaving the caller's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


def build_lpips(vgg_path: str | None, heads_path: str | None, allow_random: bool) -> tuple[nn.Module | None, bool]:
    """(LPIPS network or None when its files are not given, whether it is random)."""
    from .losses.perceptual import LPIPS

    if bool(vgg_path) != bool(heads_path) and not allow_random:
        given, missing = ("--lpips-vgg", "--lpips-heads") if vgg_path else ("--lpips-heads", "--lpips-vgg")
        raise EvalInputError(f"{given} needs {missing} too: LPIPS is the VGG-16 backbone plus its linear heads; "
                             f"{LPIPS_VGG_FIX} and {LPIPS_HEADS_FIX}")
    if not (vgg_path or heads_path) and not allow_random:
        return None, False
    backbone = read_weights(vgg_path, "--lpips-vgg", LPIPS_VGG_FIX) if vgg_path else None
    heads = read_weights(heads_path, "--lpips-heads", LPIPS_HEADS_FIX) if heads_path else None
    try:
        net = _seeded(lambda: LPIPS(backbone, heads))
    except (KeyError, RuntimeError, ValueError) as err:
        # Which file: the backbone alone loads or it does not.
        culprit = ("--lpips-heads", heads_path, LPIPS_HEADS_FIX)
        if backbone is not None:
            try:
                _seeded(lambda: LPIPS(backbone, None))
            except (KeyError, RuntimeError, ValueError):
                culprit = ("--lpips-vgg", vgg_path, LPIPS_VGG_FIX)
        reason = err.args[0] if err.args else err
        flag, path, fix = culprit
        raise EvalInputError(f"{flag} {path}: does not fit LPIPS ({reason}); {fix}") from None
    return net.eval(), backbone is None or heads is None


def build_arcface(path: str | None, allow_random: bool) -> tuple[nn.Module | None, bool]:
    """(ArcFace ResNet-18 in eval mode or None when no file is given, whether it is random)."""
    from .losses.identity import ArcFaceResNet18

    if not path and not allow_random:
        return None, False
    net = _seeded(ArcFaceResNet18)
    if path:
        state = {k.removeprefix("module."): v for k, v in read_weights(path, "--arcface", ARCFACE_FIX).items()}
        own = net.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k} {tuple(state[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            parts = [f"missing {missing[:4]}" if missing else "", f"unexpected {unexpected[:4]}" if unexpected else "",
                     f"wrong shapes {wrong[:3]}" if wrong else ""]
            raise EvalInputError(f"--arcface {Path(path).expanduser()}: not an ArcFace ResNet-18 state dict "
                                 f"({'; '.join(p for p in parts if p)}); {ARCFACE_FIX}")
        net.load_state_dict(state, strict=False)
    net.eval().requires_grad_(False)
    return net, not path


def load_model(path: str, device: torch.device):
    """A RestoreFormer weight file through the node pack's loader; its errors reworded to one line."""
    from restoreformer_node.weights import WeightLoadError, load_restoreformer

    if not Path(path).expanduser().is_file():
        raise EvalInputError(f"--model {path}: no such file; pass a RestoreFormer weight file (.safetensors, .ckpt or .pth)")
    try:
        return load_restoreformer(str(Path(path).expanduser()), device=device)
    except WeightLoadError as err:
        raise EvalInputError(f"--model {path}: {err.problem} {err.fix}") from None
