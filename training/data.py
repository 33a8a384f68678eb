"""Face-image dataset and the step-addressed sampler that makes runs reproducible and resumable.

Sample numbering. Optimiser step `s` consumes the global samples g = s*B ... s*B + B - 1 (B the
global batch). Sample g belongs to epoch g // N and is image `perm_epoch[g % N]`, with one seeded
permutation per epoch. Micro-batch m of rank r takes a contiguous slice of that range, so
1 process with batch B and W processes with batch B/W see exactly the same images, and a run
resumed at step s continues with exactly the images it would have seen. All randomness of one
sample (flip, degradation) comes from a generator seeded by (seed, epoch, index), so it does not
depend on the worker, the rank or what ran before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from .config import DataConfig
from .degradation import Degradation, GtAugment
from .errors import DataError


class SampleKey(NamedTuple):
    """What a data-loader worker needs to produce one sample deterministically."""

    index: int  # image index in the sorted file list
    epoch: int  # pass over the data; changes the flip and the degradation of the same image
    number: int  # global sample number g (for logging)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator for one sample's randomness, derived from (seed, epoch, index)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def list_images(root: str | Path, extensions: Sequence[str]) -> list[Path]:
    """All image files under `root` (any depth), sorted by their relative path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root '{root}' is not a folder; point data.root at a folder of aligned face images "
            "(see training/README.md, 'Data')"
        )
    exts = {e.lower() for e in extensions}
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(
            f"data.root '{root}' holds no images with extensions {sorted(exts)} (searched all sub-folders); "
            "put the face images there or fix data.root / data.extensions"
        )
    return files


def check_images(files: Sequence[Path], size: int, resize: bool) -> None:
    """Open every image's header (no pixel decoding): an unreadable file, or with `resize` off one
    that is not size x size, is a DataError naming it. Runs once when a dataset is built."""
    for path in files:
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception as err:
            raise DataError(f"image '{path}' cannot be read ({type(err).__name__}: {err}); replace or "
                            "remove the file") from None
        if not resize and (w, h) != (size, size):
            raise DataError(
                f"image '{path}' is {w}x{h}, but data.size is {size}: training expects aligned faces of "
                f"exactly {size}x{size} (FFHQ at 512); resize the dataset (see training/README.md), or set "
                "data.resize: true to centre-crop and resize every image on load"
            )


def load_image(path: Path, size: int, resize: bool = True) -> torch.Tensor:
    """Read an image as RGB [3, size, size] float32 in [0, 1]. With `resize`: centre square crop,
    then a bicubic resize (PIL, antialiased) when it is not already `size`; without: an image of
    another size is a DataError. Unreadable or truncated files are DataErrors naming the file."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if (w, h) != (size, size) and not resize:
                raise DataError(f"image '{path}' is {w}x{h}, but data.size is {size}; resize the dataset or "
                                "set data.resize: true")
            if w != h:
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as err:  # PIL: unidentified, truncated, decoder errors
        raise DataError(f"image '{path}' cannot be read ({type(err).__name__}: {err}); replace or remove "
                        "the file") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


class FaceDataset(Dataset):
    """Face images from a folder, addressed by `SampleKey` (or a plain index: epoch 0).

    Returns {"gt": [3, S, S], "lq": [3, S, S] and "shift": [2] (dx, dy px the degradation moved the
    face; when a degradation is given), "index": int, "number": int}, images in [0, 1]. Stage 1 uses
    "gt" only (with `augment`, its RF++ ground-truth augmentation); stage 2 uses both.
    """

    def __init__(self, cfg: DataConfig, degradation: Degradation | None = None, seed: int = 0,
                 augment: GtAugment | None = None) -> None:
        self.cfg = cfg
        self.files = list_images(cfg.root, cfg.extensions)
        check_images(self.files, cfg.size, cfg.resize)
        self.degradation = degradation
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: SampleKey | int) -> dict:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, int(key))
        g = sample_generator(self.seed, key.epoch, key.index)
        gt = load_image(self.files[key.index], self.cfg.size, self.cfg.resize)
        if self.cfg.hflip and torch.rand((), generator=g) < 0.5:
            gt = gt.flip(-1)
        if self.augment is not None:
            gt = self.augment(gt, g)
        out = {"index": key.index, "number": key.number}
        if self.degradation is not None:
            gt, lq, shift = self.degradation.apply(gt, g)
            out["lq"] = lq
            out["shift"] = torch.tensor(shift, dtype=torch.float32)
        out["gt"] = gt
        return out


class StepBatchSampler(Sampler[list[SampleKey]]):
    """Yields this rank's micro-batches of `SampleKey`s for steps start_step .. steps-1.

    Per step: `grad_accum` micro-batches of `micro_batch` keys each, in consumption order.
    """

    def __init__(
        self,
        dataset_size: int,
        global_batch: int,
        *,
        seed: int,
        steps: int,
        start_step: int = 0,
        grad_accum: int = 1,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if global_batch % (grad_accum * world_size):
            raise ValueError(
                f"run.batch_size={global_batch} must be divisible by grad_accum*world_size="
                f"{grad_accum}*{world_size}; change batch_size or grad_accum"
            )
        self.n = dataset_size
        self.global_batch = global_batch
        self.micro_batch = global_batch // (grad_accum * world_size)
        self.seed, self.steps, self.start_step = seed, steps, start_step
        self.grad_accum, self.rank, self.world_size = grad_accum, rank, world_size
        self.shuffle = shuffle
        self._perm: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            if self.shuffle:
                g = sample_generator(self.seed, epoch, -1 & 0xFFFFFFFF)
                self._perm = (epoch, torch.randperm(self.n, generator=g))
            else:
                self._perm = (epoch, torch.arange(self.n))
        return self._perm[1]

    def key(self, number: int) -> SampleKey:
        epoch, pos = divmod(number, self.n)
        return SampleKey(int(self.permutation(epoch)[pos]), epoch, number)

    def micro_batches(self, step: int) -> list[list[SampleKey]]:
        """This rank's micro-batches for optimiser step `step`."""
        out = []
        base = step * self.global_batch
        for m in range(self.grad_accum):
            first = base + (m * self.world_size + self.rank) * self.micro_batch
            out.append([self.key(first + j) for j in range(self.micro_batch)])
        return out

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start_step, self.steps):
            yield from self.micro_batches(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.grad_accum


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep ints as int64 tensors."""
    out = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        out[name] = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
    return out
