"""Face parsing for paste masks: facexlib's BiSeNet or ParseNet labels every pixel of an aligned
crop (skin, brows, eyes, glasses, nose, lips, hair, hat, ...), and only the chosen regions are
pasted, so hair, hands and glasses in front of a face keep their original pixels.

The weights are the user's (facexlib's parsing_bisenet.pth / parsing_parsenet.pth in
models/facedetection); nothing is downloaded. Both networks take 512x512 RGB crops and give 19
class scores per pixel, but in different label orders (BiSeNet's CelebAMask-HQ order and
ParseNet's own), so regions are looked up by name in each network's own list.

Parsing runs batched on the crops' device: the crop of each face is parsed (the restored one by
default, as facexlib's paste-back does, or the original), the chosen regions become a 0/1 map,
softened by a Gaussian blur, and multiplied into the feathered template mask in crop space.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..lru import LRUCache
from .weight_files import load_strict, missing_file_message, read_state

PARSE_SIZE = 512  # both networks' input size
PARSE_CHUNK = 8  # crops per parsing call

BISENET_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
PARSENET_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)

# kind -> (weight file, download URL, labels, input mean, input std)
PARSERS = {
    "bisenet": (
        "parsing_bisenet.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
        BISENET_LABELS, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
    ),
    "parsenet": (
        "parsing_parsenet.pth",
        "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
        PARSENET_LABELS, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
    ),
}

# What users choose, by name -> the labels it covers (the same names in both label orders).
REGIONS = {
    "skin": ("skin",),
    "brows": ("l_brow", "r_brow"),
    "eyes": ("l_eye", "r_eye"),
    "glasses": ("eye_g",),
    "nose": ("nose",),
    "mouth": ("mouth",),
    "lips": ("u_lip", "l_lip"),
    "ears": ("l_ear", "r_ear"),
    "earrings": ("ear_r",),
    "hair": ("hair",),
    "hat": ("hat",),
    "neck": ("neck",),
    "necklace": ("neck_l",),
    "cloth": ("cloth",),
    "background": ("background",),
}
DEFAULT_REGIONS = ("skin", "brows", "eyes", "nose", "mouth", "lips")
PARSE_SOURCES = ("restored", "original")
DEFAULT_BLUR = 4.0  # Gaussian sigma of the region mask's soft edge, pixels of a 512 crop

_cache: LRUCache[torch.nn.Module] = LRUCache(2)


class ParserWeightsMissing(FileNotFoundError):
    """A parser's weight file is absent; the message says which file, where, and from where."""


def parser_file_name(kind: str) -> str:
    check_kind(kind)
    return PARSERS[kind][0]


def check_kind(kind: str) -> None:
    if kind not in PARSERS:
        raise ValueError(f"unknown face parser {kind!r}; choose one of {', '.join(PARSERS)}")


def missing_parser_message(kind: str, folders) -> str:
    file_name, url, *_ = PARSERS[kind]
    return missing_file_message(f"the {kind} face parser", file_name, folders, url + " (facexlib's GitHub release)")


def parse_regions(text: str) -> tuple[str, ...]:
    """'skin, eyes, lips' -> ('skin', 'eyes', 'lips'); unknown names get one error listing the choices."""
    names = tuple(dict.fromkeys(p.strip().lower() for p in text.replace(";", ",").split(",") if p.strip()))
    unknown = [n for n in names if n not in REGIONS]
    if unknown or not names:
        what = f"unknown region(s) {', '.join(map(repr, unknown))}" if unknown else "no region given"
        raise ValueError(f"regions: {what}; write names separated by commas from: {', '.join(REGIONS)}")
    return names


def build_network(kind: str) -> torch.nn.Module:
    """facexlib's parsing network of `kind`, untrained (weights come from the user's file)."""
    check_kind(kind)
    if kind == "bisenet":
        from facexlib.parsing.bisenet import BiSeNet

        return BiSeNet(num_class=19)
    from facexlib.parsing.parsenet import ParseNet

    return ParseNet(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)


def load_parser_network(kind: str, weights_path: str | os.PathLike | None, device) -> torch.nn.Module:
    """The parsing network with the user's weights, on `device`, cached per file version."""
    check_kind(kind)
    if weights_path is None or not Path(weights_path).is_file():
        folders = [str(Path(weights_path).parent)] if weights_path is not None else []
        raise ParserWeightsMissing(missing_parser_message(kind, folders))
    path = Path(weights_path).resolve()
    stat = path.stat()
    key = (kind, str(path), stat.st_size, stat.st_mtime_ns, str(torch.device(device)))

    def build() -> torch.nn.Module:
        file_name, url, *_ = PARSERS[kind]
        state = read_state(path, f"{kind} face parser weights", f"use facexlib's {file_name} from {url}")
        net = build_network(kind)
        load_strict(net, state, path, f"facexlib's {kind}", file_name)
        return net.eval().to(device)

    return _cache.get_or_make(key, build)


@dataclass(frozen=True)
class FaceParsing:
    """How the paste mask follows the face's parts (the RF_FACE_PARSER value)."""

    kind: str  # "bisenet" or "parsenet"
    network: torch.nn.Module
    regions: tuple[str, ...] = DEFAULT_REGIONS
    source: str = "restored"  # which crop is parsed: the restored face or the original
    blur: float = DEFAULT_BLUR

    def __post_init__(self):
        check_kind(self.kind)
        for name in self.regions:
            if name not in REGIONS:
                raise ValueError(f"unknown region {name!r}; choose from {', '.join(REGIONS)}")
        if self.source not in PARSE_SOURCES:
            raise ValueError(f"parse must be one of {PARSE_SOURCES}, got {self.source!r}")
        if self.blur < 0:
            raise ValueError(f"blur must be >= 0, got {self.blur}")

    @property
    def label_ids(self) -> list[int]:
        labels = PARSERS[self.kind][2]
        return [labels.index(label) for name in self.regions for label in REGIONS[name]]

    def describe(self) -> str:
        return f"{self.kind} parsing of the {self.source} faces, pasting {', '.join(self.regions)}"

    def labels(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [N, 3, S, S] RGB in [0, 1] -> label maps [N, S, S] int64 (this parser's order), in
        chunks of PARSE_CHUNK on the network's device."""
        _, mean, std = PARSERS[self.kind][2:]
        device = next(self.network.parameters()).device
        mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
        N, _, S, _ = crops.shape
        out = torch.empty(N, S, S, dtype=torch.long, device=crops.device)
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for start in range(0, N, PARSE_CHUNK):
                x = crops[start : start + PARSE_CHUNK].to(device, torch.float32)
                if S != PARSE_SIZE:
                    x = F.interpolate(x, size=(PARSE_SIZE, PARSE_SIZE), mode="bilinear", antialias=S > PARSE_SIZE)
                scores = self.network((x - mean_t) / std_t)[0]
                if S != PARSE_SIZE:
                    scores = F.interpolate(scores, size=(S, S), mode="bilinear", align_corners=False)
                out[start : start + PARSE_CHUNK] = scores.argmax(dim=1).to(crops.device)
        return out

    def masks_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """label maps [N, S, S] -> soft region masks [N, 1, S, S] float32 in [0, 1]."""
        ids = torch.tensor(self.label_ids, device=labels.device)
        hard = torch.isin(labels, ids).to(torch.float32)[:, None]
        return gaussian_blur(hard, self.blur * labels.shape[-1] / PARSE_SIZE)

    def masks(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [N, 3, S, S] in [0, 1] -> region masks [N, 1, S, S] (on the crops' device)."""
        return self.masks_from_labels(self.labels(crops))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, 1, H, W] (edges replicated); sigma 0 returns x."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def load_parsing(
    kind: str,
    weights_path: str | os.PathLike | None,
    device=None,
    regions: tuple[str, ...] = DEFAULT_REGIONS,
    source: str = "restored",
    blur: float = DEFAULT_BLUR,
) -> FaceParsing:
    """A FaceParsing with the user's weights for `kind` on `device` (default CPU)."""
    network = load_parser_network(kind, weights_path, torch.device(device or "cpu"))
    return FaceParsing(kind, network, tuple(regions), source, float(blur))
