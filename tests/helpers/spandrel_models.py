"""spandrel models of the real architectures with random weights (pretrained files cannot be had
offline): upscalers loaded through spandrel's own loader, and face models at a small width wrapped
in spandrel's descriptor exactly as its loader would wrap them (the loader fixes full-size widths,
which are too slow for a shared CPU)."""

from __future__ import annotations

from pathlib import Path

import torch
from spandrel import ImageModelDescriptor, ModelLoader, SizeRequirements


def compact_state(scale: int = 2, num_conv: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a Real-ESRGAN Compact (SRVGGNet) upscaler: a plain stack of 3x3 convolutions,
    so its receptive field reaches num_conv + 1 input pixels."""
    from spandrel.architectures.Compact import Compact

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Compact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=num_conv, upscale=scale)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def compact_upscaler(scale: int = 2, num_conv: int = 4, seed: int = 0) -> ImageModelDescriptor:
    return ModelLoader().load_from_state_dict(compact_state(scale, num_conv, seed)).eval()


def write_compact(path: Path, scale: int = 2, num_conv: int = 4, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(compact_state(scale, num_conv, seed), str(path))
    return path


def face_descriptor(net: torch.nn.Module, architecture, size_requirements: SizeRequirements) -> ImageModelDescriptor:
    """A face network in the descriptor its spandrel architecture's `load` builds (FaceSR, scale 1,
    RGB, not fp16-safe)."""
    return ImageModelDescriptor(
        net.eval(), net.state_dict(), architecture=architecture, purpose="FaceSR", tags=[],
        supports_half=False, supports_bfloat16=True, scale=1, input_channels=3, output_channels=3,
        size_requirements=size_requirements,
    )


def restoreformer_descriptor(twin: torch.nn.Module) -> ImageModelDescriptor:
    """spandrel's RestoreFormer network (e.g. restoreformer_node.testing.spandrel_twin) as spandrel wraps it."""
    from spandrel.architectures.RestoreFormer import RestoreFormerArch

    return face_descriptor(twin, RestoreFormerArch(), SizeRequirements(multiple_of=32))


def small_gfpgan(seed: int = 0) -> ImageModelDescriptor:
    """GFPGANv1Clean at 512 px with narrow channels, as spandrel's GFPGANArch wraps it."""
    from spandrel.architectures.GFPGAN import GFPGANArch
    from spandrel.architectures.GFPGAN.__arch.gfpganv1_clean_arch import GFPGANv1Clean

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = GFPGANv1Clean(out_size=512, num_style_feat=64, channel_multiplier=1, narrow=0.125, num_mlp=2)
    return face_descriptor(net, GFPGANArch(), SizeRequirements(minimum=512))


def small_codeformer(seed: int = 0) -> ImageModelDescriptor:
    """CodeFormer (spandrel_extra_arches) with one small transformer layer, as CodeFormerArch wraps it."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer, CodeFormerArch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CodeFormer(dim_embd=64, n_head=4, n_layers=1, codebook_size=64)
    return face_descriptor(net, CodeFormerArch(), SizeRequirements(multiple_of=512, square=True))
