"""Loss networks and adversarial pieces shared by the training stages."""

from .adversarial import (
    CrossRankBatchNorm2d,
    PatchDiscriminator,
    adaptive_weight,
    adversarial_weight,
    generator_loss,
    hinge_d_loss,
    vanilla_d_loss,
    weigh_terms,
)
from .perceptual import LPIPS, VGGPerceptual, build_perceptual, load_weights_file

__all__ = [
    "LPIPS",
    "CrossRankBatchNorm2d",
    "PatchDiscriminator",
    "VGGPerceptual",
    "adaptive_weight",
    "adversarial_weight",
    "build_perceptual",
    "generator_loss",
    "hinge_d_loss",
    "load_weights_file",
    "vanilla_d_loss",
    "weigh_terms",
]
