"""`restore` under torchrun: one process per GPU (or per CPU slot), on one machine or many.

torchrun starts every process with RANK, WORLD_SIZE and LOCAL_RANK in its environment and a
rendezvous for `init_process_group("env://")`. Each process restores its own share of the inputs
and writes its own outputs; the processes only exchange small Python objects over the gloo
backend (counts for the summary, per-frame detections of a sequence), so the same code runs on
CPUs and GPUs. Without torchrun (no WORLD_SIZE, or 1) nothing is initialised: rank 0 of 1.

    ranks = start()
    mine = shard(jobs, ranks)            # jobs[rank::world]
    totals = add_up([restored, skipped, failed], ranks)
    finish(ranks)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def lead(self) -> bool:
        """The process that prints the run's summary."""
        return self.rank == 0

    def tag(self) -> str:
        """'[rank 1/4] ' in front of a process's own lines when there are several, else ''."""
        return f"[rank {self.rank}/{self.world}] " if self.distributed else ""


def ranks_from_environment(environ: dict | None = None) -> Ranks:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (rank 0 of 1 without them).
    Raises ValueError naming a variable that is set but unusable."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = environ.get(name)
        try:
            values[name] = default if text in (None, "") else int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} in the environment is not a whole number (torchrun sets it)") from None
    ranks = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if ranks.world < 1 or not 0 <= ranks.rank < ranks.world or ranks.local_rank < 0:
        raise ValueError(
            f"RANK={ranks.rank}, WORLD_SIZE={ranks.world}, LOCAL_RANK={ranks.local_rank} in the environment do "
            "not fit together; start the command with torchrun, or unset them for one process"
        )
    return ranks


def start(environ: dict | None = None) -> Ranks:
    """The process's place in the run; with several processes, joins torchrun's process group
    (gloo, env:// rendezvous) unless it is joined already."""
    ranks = ranks_from_environment(environ)
    if ranks.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", init_method="env://", rank=ranks.rank, world_size=ranks.world)
    return ranks


def shard(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This process's share of `items`: every world-th item from its rank on (so shares differ in
    size by at most one, and files of one folder spread over all processes)."""
    return list(items[ranks.rank :: ranks.world])


def block(count: int, ranks: Ranks, unit: int = 1) -> range:
    """This process's contiguous share of `count` ordered items (frames of one sequence), cut
    between whole units of `unit` items (the last unit may be short): the first processes take
    one unit more when the units do not divide evenly."""
    units = -(-count // unit)
    size, extra = divmod(units, ranks.world)
    first = ranks.rank * size + min(ranks.rank, extra)
    last = first + size + (1 if ranks.rank < extra else 0)
    return range(min(first * unit, count), min(last * unit, count))


def add_up(counts: Sequence[int], ranks: Ranks) -> list[int]:
    """Element-wise sums of `counts` over all processes (the counts themselves with one)."""
    if not ranks.distributed:
        return list(counts)
    import torch
    import torch.distributed as dist

    total = torch.tensor(list(counts), dtype=torch.int64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [int(v) for v in total.tolist()]


def gather(value: T, ranks: Ranks) -> list[T]:
    """Every process's `value`, in rank order ([value] with one process)."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    out: list = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def finish(ranks: Ranks) -> None:
    """Wait for every process, then leave the process group."""
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def rank_device(device, ranks: Ranks):
    """With several processes on a machine with GPUs, each uses its own: cuda -> cuda:LOCAL_RANK
    (a device with an index, a CPU or MPS is kept as given)."""
    if ranks.distributed and device.type == "cuda" and device.index is None:
        import torch

        return torch.device("cuda", ranks.local_rank % max(1, torch.cuda.device_count()))
    return device
