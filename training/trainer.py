"""The generic training loop every stage runs in.

A stage is a `Task`: it registers its modules and optimisers with the `Trainer` and lists its
`Phase`s (e.g. generator, then discriminator). The trainer owns everything a stage should not
re-implement: the process group (torchrun, DDP), devices and bf16 autocast, the step-addressed
data order, gradient accumulation (DDP `no_sync` on all but the last micro-batch), schedules
stepped once per optimiser step, NaN/inf detection, atomic checkpoints with exact resume
(weights, optimisers, schedulers, step, every rank's RNG; the data position is the step), a
progress bar and TensorBoard.

One optimiser step `s`:
    for phase in task.phases():                      # in order, skipped when not phase.active(s)
        zero the phase's optimisers; only the phase's modules require grad
        for each micro-batch m:  loss, logs = phase.loss(trainer, batch[m], state[m]);  (loss/A).backward()
        stop if any rank saw a non-finite loss;  clip;  optimiser.step()
    every scheduler .step()
`state[m]` is a dict shared by the phases of one micro-batch (e.g. the generator's output that
the discriminator phase reuses, detached).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from . import distributed as D
from .config import OptimConfig, RunConfig
from .data import StepBatchSampler, collate

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stopped before the optimiser step that would use it."""


LossFn = Callable[["Trainer", dict, dict], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class Phase:
    """One optimisation phase of a step.

    loss(trainer, batch, state) -> (scalar loss, {name: scalar tensor to log}). `batch` is one
    micro-batch on the device; `state` is shared with the other phases for that micro-batch.
    `modules` are the registered module names trained in this phase (all others are frozen while
    it runs); `optimizers` the registered optimiser names it steps.
    """

    name: str
    modules: list[str]
    optimizers: list[str]
    loss: LossFn
    active: Callable[[int], bool] = field(default=lambda step: True)
    grad_clip: float = 0.0  # max global grad norm over the phase's optimisers (0 = off)


class Task:
    """A training stage. Subclasses implement `setup`, `phases` and optionally the rest."""

    name = "task"

    def setup(self, trainer: Trainer) -> None:
        """Build modules/optimisers and register them: trainer.add_module / trainer.add_optimizer."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    @torch.no_grad()
    def sample_grid(self, trainer: Trainer, batch: dict) -> torch.Tensor | None:
        """An image grid [3, H, W] in [0, 1] for TensorBoard (None: none)."""
        return None

    def export_info(self) -> dict[str, Any] | None:
        """{"module": registered name, "config": RestoreFormerConfig} for `training export`."""
        return None


def step_schedule(cfg: OptimConfig) -> Callable[[int], float]:
    """LR multiplier at optimiser step s: linear warm-up, then x gamma at each milestone."""
    milestones = sorted(cfg.lr_milestones)

    def factor(step: int) -> float:
        f = cfg.lr_gamma ** sum(step >= m for m in milestones)
        if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
            f *= (step + 1) / cfg.warmup_steps
        return f

    return factor


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("run.device is 'cuda' but no CUDA device is available; set run.device: cpu")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"run.device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then os.replace (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_PATTERN.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DDP) else module


class Trainer:
    """Runs a `Task` under the settings of `run` on `dataset` (a map-style dataset of SampleKeys).

    Attributes a task uses: `device`, `dist` (rank/world), `step` (current optimiser step),
    `modules[name]` (the plain module), `wrapped[name]` (DDP-wrapped when distributed: call this
    one in the phase that trains it), `autocast()`, `micro_batch`.
    """

    def __init__(self, run: RunConfig, task: Task, dataset: Dataset, config_dict: dict | None = None) -> None:
        self.run = run
        self.task = task
        self.dataset = dataset
        self.config_dict = config_dict or {}
        kind = "cuda" if run.device == "cuda" or (run.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = D.init_distributed(kind)
        self.device = resolve_device(run.device, self.dist.local_rank)
        if self.device.type == "cuda":
            # Throughput over bitwise reproducibility on GPUs (CPU runs stay exact).
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if run.batch_size % (run.grad_accum * self.dist.world_size):
            raise ValueError(
                f"run.batch_size={run.batch_size} must be divisible by grad_accum*world_size="
                f"{run.grad_accum}*{self.dist.world_size}"
            )
        self.micro_batch = run.batch_size // (run.grad_accum * self.dist.world_size)
        self.out_dir = Path(run.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.modules: dict[str, nn.Module] = {}
        self.wrapped: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self._always_frozen: set[int] = set()
        self.step = 0
        self.writer = None
        self.history: list[tuple[int, dict[str, float]]] = []  # (step, logs) at every log event
        # Modules are built under the same seed on every rank (frozen loss networks that DDP does
        # not broadcast must agree); afterwards each rank gets its own stream.
        seed_everything(run.seed)
        task.setup(self)
        seed_everything(run.seed + 7919 * self.dist.rank)

    # ---- registration (called by Task.setup) ---------------------------------------------
    def add_module(self, name: str, module: nn.Module, *, ddp: bool = True) -> nn.Module:
        """Move to the device and register; parameters with requires_grad=False now stay frozen.
        Returns the module to call in training (DDP-wrapped when distributed and trainable)."""
        module = module.to(self.device)
        self.modules[name] = module
        self._always_frozen |= {id(p) for p in module.parameters() if not p.requires_grad}
        trainable = any(p.requires_grad for p in module.parameters())
        if ddp and trainable and self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DDP(module, device_ids=ids, find_unused_parameters=self.run.ddp_find_unused_parameters,
                          broadcast_buffers=False)
        else:
            wrapped = module
        self.wrapped[name] = wrapped
        return wrapped

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float] | None = None):
        self.optimizers[name] = optimizer
        if schedule is not None:
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return optimizer

    # ---- helpers for tasks ------------------------------------------------------------------
    def autocast(self):
        if self.run.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.run.precision not in ("bf16", "fp32"):
            raise ValueError(f"run.precision must be bf16 or fp32, got {self.run.precision!r}")
        return contextlib.nullcontext()

    def _set_trainable(self, names: list[str]) -> None:
        for name, module in self.modules.items():
            on = name in names
            for p in module.parameters():
                p.requires_grad_(on and id(p) not in self._always_frozen)

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        rngs = D.all_gather_object(rng_state(self.device))
        export = self.task.export_info()
        if export is not None:
            export = {"module": export["module"], "config": export["config"].to_json()}
        return {
            "format": "restoreformer-training-checkpoint/1",
            "task": self.task.name,
            "step": self.step,
            "world_size": self.dist.world_size,
            "modules": {n: m.state_dict() for n, m in self.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "rng": rngs,
            "config": self.config_dict,
            "export": export,
        }

    def save_checkpoint(self) -> Path | None:
        state = self.checkpoint_state()  # collective: every rank takes part
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        if self.dist.is_main:
            atomic_save(state, path)
            for _, old in list_checkpoints(self.ckpt_dir)[: -max(1, self.run.keep_checkpoints)]:
                old.unlink(missing_ok=True)
        D.barrier()
        return path

    def latest_checkpoint(self) -> Path | None:
        found = list_checkpoints(self.ckpt_dir)
        return found[-1][1] if found else None

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("task") != self.task.name:
            raise ValueError(f"checkpoint {str(path)!r} is from task {state.get('task')!r}, not {self.task.name!r}")
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name], strict=True)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self.step = int(state["step"])
        saved_run = (state.get("config") or {}).get("run", {})
        for key in ("batch_size", "grad_accum", "seed"):
            if key in saved_run and saved_run[key] != getattr(self.run, key) and self.dist.is_main:
                warnings.warn(
                    f"resuming {str(path)!r} with run.{key}={getattr(self.run, key)} (checkpoint: {saved_run[key]}); "
                    "the run continues but no longer matches an uninterrupted one", stacklevel=2)
        if state["world_size"] == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            # Different process count: exactness across the change is impossible; reseed per rank.
            seed_everything(self.run.seed + 1_000_003 * self.step + self.dist.rank)

    # ---- the loop --------------------------------------------------------------------------
    def _loader(self) -> Iterator[dict]:
        sampler = StepBatchSampler(
            len(self.dataset), self.run.batch_size, seed=self.run.seed, steps=self.run.steps,
            start_step=self.step, grad_accum=self.run.grad_accum, rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        loader = DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=self.run.num_workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if self.run.num_workers > 0 else None,
        )
        for batch in loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _log_writer(self):
        if self.writer is None and self.dist.is_main and self.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self.writer

    def fit(self, resume: bool = False, stop_at: int | None = None) -> dict[str, float]:
        """Train to run.steps (or stop after step `stop_at`, as a kill would). Returns last logs."""
        if resume:
            path = self.latest_checkpoint()
            if path is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {str(self.ckpt_dir)!r}")
            self.load_checkpoint(path)
        end = self.run.steps if stop_at is None else min(stop_at, self.run.steps)
        phases = self.task.phases()
        accum = self.run.grad_accum
        data = self._loader()
        bar = None
        if self.dist.is_main and self.run.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.run.steps, initial=self.step, desc=self.task.name, dynamic_ncols=True)
        t0, s0 = time.perf_counter(), self.step
        last_logs: dict[str, float] = {}
        window: dict[str, list[torch.Tensor]] = {}
        try:
            while self.step < end:
                batches = [next(data) for _ in range(accum)]
                states: list[dict] = [{} for _ in range(accum)]
                for phase in phases:
                    if not phase.active(self.step):
                        continue
                    self._run_phase(phase, batches, states, window)
                with warnings.catch_warnings():
                    # A phase that has not started yet (delayed discriminator) still follows the
                    # global step's schedule; torch warns about stepping before optimiser.step().
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    for sched in self.schedulers.values():
                        sched.step()
                self.step += 1
                if self.step % self.run.log_every == 0 or self.step == end:
                    last_logs = self._log(window, t0, s0, bar)
                    window = {}
                if self.run.sample_every and self.step % self.run.sample_every == 0:
                    self._samples(batches[0])
                if self.step % self.run.checkpoint_every == 0 or self.step == self.run.steps:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if self.writer is not None:
                self.writer.flush()
        return last_logs

    def _run_phase(self, phase: Phase, batches: list[dict], states: list[dict], window) -> None:
        accum = len(batches)
        self._set_trainable(phase.modules)
        for name in phase.optimizers:
            self.optimizers[name].zero_grad(set_to_none=True)
        bad: str | None = None
        for m, (batch, state) in enumerate(zip(batches, states)):
            sync = m == accum - 1
            with contextlib.ExitStack() as stack:
                if not sync:
                    for name in phase.modules:
                        w = self.wrapped[name]
                        if isinstance(w, DDP):
                            stack.enter_context(w.no_sync())
                with self.autocast():
                    loss, logs = phase.loss(self, batch, state)
                loss = loss.float()
                if bad is None and not bool(torch.isfinite(loss.detach())):
                    bad = f"{phase.name} loss = {loss.item()} ({', '.join(f'{k}={float(v):.4g}' for k, v in logs.items())})"
                (loss / accum).backward()
            for key, value in logs.items():
                window.setdefault(key, []).append(value.detach().float())
        if D.any_rank(bad is not None, self.device):
            last = self.latest_checkpoint()
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step} in phase {phase.name!r}"
                + (f": {bad}" if bad else " on another rank")
                + f". Stopped before the optimiser step; the last good checkpoint is "
                f"{str(last) if last else 'none (no checkpoint written yet)'}. Lower the learning rate, "
                "check the data, or resume from that checkpoint with --resume."
            )
        if phase.grad_clip:
            params = [p for n in phase.optimizers for g in self.optimizers[n].param_groups
                      for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, phase.grad_clip)
        for name in phase.optimizers:
            self.optimizers[name].step()
        self._set_trainable(list(self.modules))

    def _log(self, window: dict[str, list[torch.Tensor]], t0: float, s0: int, bar) -> dict[str, float]:
        logs = {k: float(torch.stack(v).mean()) for k, v in window.items()}
        if D.is_enabled():
            keys = sorted(logs)
            t = torch.tensor([logs[k] for k in keys], device=self.device, dtype=torch.float64)
            D.all_reduce_mean(t)
            logs = dict(zip(keys, t.tolist()))
        elapsed = max(time.perf_counter() - t0, 1e-9)
        rate = (self.step - s0) * self.run.batch_size / elapsed
        for name, opt in self.optimizers.items():
            logs[f"lr/{name}"] = opt.param_groups[0]["lr"]
        logs["images_per_s"] = rate
        self.history.append((self.step, logs))
        if self.dist.is_main:
            writer = self._log_writer()
            if writer is not None:
                for k, v in logs.items():
                    writer.add_scalar(k, v, self.step)
            if bar is not None:
                main = {k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "rec", "l1", "d_loss")}
                bar.set_postfix(main | {"img/s": f"{rate:.1f}"}, refresh=False)
                bar.n = self.step
                bar.refresh()
        return logs

    def _samples(self, batch: dict) -> None:
        grid = self.task.sample_grid(self, batch)
        if grid is not None and self.dist.is_main:
            writer = self._log_writer()
            if writer is not None:
                writer.add_image("samples", grid.float().clamp(0, 1).cpu(), self.step)

