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
import sys
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
from .config import ConfigError, OptimConfig, RunConfig
from .data import StepBatchSampler, collate
from .errors import TrainingFileError
from .safe_io import CHECKPOINT_FORMAT, read_checkpoint

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
    """Every RNG's state as tensors, numbers and strings only, so a checkpoint loads weights-only
    without allowing any extra global (NumPy's own state tuple holds an ndarray)."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
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


def newest_intact_checkpoint(folder: Path, what: str = "training checkpoint") -> tuple[Path, dict, list[TrainingFileError]]:
    """The newest checkpoint in `folder` that reads (weights-only) and is complete, its state, and the
    errors of the newer ones that did not (damaged, refused because they carry code, or not a
    checkpoint of this format). Raises
    TrainingFileError when none is intact, naming each file and why."""
    problems: list[TrainingFileError] = []
    found = list_checkpoints(folder)
    for _, path in reversed(found):
        try:
            return path, read_checkpoint(path, what), problems
        except TrainingFileError as err:  # damaged, refused (code) or not one of our checkpoints
            problems.append(err)
    if not found:
        raise FileNotFoundError(f"{what} folder '{folder}': it holds no step_*.pt checkpoint. Fix: check "
                                "run.out_dir (or --checkpoint), or start without --resume.")
    raise TrainingFileError(
        folder, what + " folder",
        "no checkpoint in it is intact: " + "; ".join(f"{Path(e.path).name}: {e.problem}" for e in problems),
        "nothing was deleted; restore a checkpoint from a backup, or start again without --resume "
        "(with another run.out_dir to keep these files).", kind="damaged",
    )


def set_aside(path: Path, kind: str) -> Path:
    """Rename a damaged or refused checkpoint to `<name>.damaged` / `<name>.refused` (a free name), so
    the run neither overwrites it when it reaches that step again nor counts it among the kept
    checkpoints. Nothing is deleted."""
    suffix = ".refused" if kind == "code" else ".damaged"
    target = path.with_name(path.name + suffix)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{suffix}.{n}")
        n += 1
    os.replace(path, target)
    return target


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def global_batch(run: RunConfig, world_size: int) -> int:
    """Images per optimiser step over all processes: run.batch_size, or with run.batch_per_process
    > 0 that many per process and micro-batch (the released code's convention) x processes x
    grad_accum."""
    if run.batch_per_process > 0:
        return run.batch_per_process * world_size * run.grad_accum
    if run.batch_size % (run.grad_accum * world_size):
        raise ConfigError(
            f"run.batch_size={run.batch_size} must be divisible by grad_accum*processes="
            f"{run.grad_accum}*{world_size}; change run.batch_size or run.grad_accum, or set run.batch_per_process"
        )
    return run.batch_size


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
        self.batch_size = global_batch(run, self.dist.world_size)  # images per optimiser step, all ranks
        self.micro_batch = self.batch_size // (run.grad_accum * self.dist.world_size)
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
        self.resumed_from: Path | None = None
        self._bar = None  # the tqdm bar while fit() runs
        self.set_aside: list[tuple[Path, Path]] = []  # (checkpoint, where it was moved) at resume
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

    def learning_rate(self, optim: OptimConfig, what: str = "optim") -> float:
        """The base learning rate of `optim`: `lr` as given, or with `lr_per_image` > 0 the released
        code's rule, lr_per_image x images per optimiser step (grad_accum x processes x batch per
        process), so it grows with the number of processes under torchrun as the released code's
        does. The rule is printed like the released code prints it."""
        if optim.lr_per_image <= 0:
            return optim.lr
        lr = optim.lr_per_image * self.batch_size
        self.say(
            f"{self.task.name}: setting {what} learning rate to {lr:.4g} = {self.run.grad_accum} (grad_accum) * "
            f"{self.dist.world_size} (processes) * {self.micro_batch} (batch per process) * "
            f"{optim.lr_per_image:.4g} ({what}.lr_per_image)"
        )
        return lr

    def say(self, text: str, *, err: bool = False) -> None:
        """One line for the user on the main rank (above the progress bar when there is one)."""
        if not self.dist.is_main:
            return
        stream = sys.stderr if err else sys.stdout
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

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
            "format": CHECKPOINT_FORMAT,
            "task": self.task.name,
            "step": self.step,
            "world_size": self.dist.world_size,
            "global_batch": self.batch_size,
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

    def load_checkpoint(self, path: Path, state: dict | None = None) -> None:
        """Restore everything from a checkpoint (read weights-only; see training/safe_io.py)."""
        if state is None:
            state = read_checkpoint(path)
        if state.get("task") != self.task.name:
            raise TrainingFileError(path, "training checkpoint", f"it is from task {state.get('task')!r}, not "
                                    f"{self.task.name!r}.", "resume with the command that wrote it, or use "
                                    "another run.out_dir.", kind="wrong_kind")
        for name, module in self.modules.items():
            if name not in state["modules"]:
                raise TrainingFileError(path, "training checkpoint", f"it has no module {name!r} (it has "
                                        f"{sorted(state['modules'])}).", "resume with the config that wrote it.")
            module.load_state_dict(state["modules"][name], strict=True)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self.step = int(state["step"])
        saved_run = (state.get("config") or {}).get("run", {})
        changed = {"global batch": (state.get("global_batch"), self.batch_size)}
        changed |= {f"run.{k}": (saved_run.get(k), getattr(self.run, k)) for k in ("grad_accum", "seed")}
        for key, (old, new) in changed.items():
            if old is not None and old != new and self.dist.is_main:
                warnings.warn(
                    f"resuming {str(path)!r} with {key}={new} (checkpoint: {old}); "
                    "the run continues but no longer matches an uninterrupted one", stacklevel=2)
        if state["world_size"] == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            # Different process count: exactness across the change is impossible; reseed per rank.
            seed_everything(self.run.seed + 1_000_003 * self.step + self.dist.rank)

    def resume(self) -> Path:
        """Load the newest intact checkpoint of run.out_dir. Newer ones that are damaged (truncated,
        garbage) or refused (they carry code) are named, renamed aside (`.damaged` / `.refused`, so the
        run does not overwrite them) and skipped; the main rank decides and every rank loads the same
        file."""
        decision: tuple[str, Any]
        state = None
        if self.dist.is_main:
            try:
                path, state, problems = newest_intact_checkpoint(self.ckpt_dir)
                for err in problems:
                    moved = set_aside(Path(err.path), err.kind)
                    self.set_aside.append((Path(err.path), moved))
                    self.say(f"warning: --resume skips {err.what} '{err.path}': {err.problem} Kept as '{moved}'.",
                             err=True)
                if problems:
                    self.say(f"warning: --resume continues from the newest intact checkpoint '{path}' instead.",
                             err=True)
                decision = ("ok", str(path))
            except (TrainingFileError, FileNotFoundError) as err:
                decision = ("error", err)
        else:
            decision = ("", None)
        decision = D.broadcast_object(decision)  # every rank raises the main rank's error, or none does
        if decision[0] == "error":
            raise decision[1]
        path = Path(decision[1])
        self.load_checkpoint(path, state)
        self.resumed_from = path
        self.say(f"{self.task.name}: resumed from '{path}' at step {self.step}")
        return path

    # ---- the loop --------------------------------------------------------------------------
    def _loader(self) -> Iterator[dict]:
        sampler = StepBatchSampler(
            len(self.dataset), self.batch_size, seed=self.run.seed, steps=self.run.steps,
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
        """Train to run.steps (or stop after step `stop_at`, as a kill would). Returns last logs.

        Progress on the main rank: a line when training starts, one after the first step and every
        `log_every` steps (step, losses, images/s, ETA; also in TensorBoard), and a tqdm bar on
        stderr when `run.progress` is on."""
        if resume:
            self.resume()
        end = self.run.steps if stop_at is None else min(stop_at, self.run.steps)
        phases = self.task.phases()
        accum = self.run.grad_accum
        self.say(
            f"{self.task.name}: training steps {self.step + 1}..{end} of {self.run.steps} on {self.device.type} "
            f"({self.dist.world_size} process(es)), {self.batch_size} images per step ({self.micro_batch} per "
            f"process x {accum} accumulation x {self.dist.world_size}); log every {self.run.log_every} steps, "
            f"checkpoints every {self.run.checkpoint_every} in '{self.ckpt_dir}'"
        )
        data = self._loader()
        bar = None
        if self.dist.is_main and self.run.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.run.steps, initial=self.step, desc=self.task.name, dynamic_ncols=True)
        self._bar = bar
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
                if bar is not None:
                    bar.update(1)
                first = self.step == s0 + 1  # the first line comes after one step, not log_every
                if first or self.step % self.run.log_every == 0 or self.step == end:
                    last_logs = self._log(window, t0, s0, end)
                    window = {}
                if self.run.sample_every and self.step % self.run.sample_every == 0:
                    self._samples(batches[0])
                if self.step % self.run.checkpoint_every == 0 or self.step == self.run.steps:
                    path = self.save_checkpoint()
                    self.say(f"{self.task.name}: step {self.step}: saved checkpoint '{path}'")
        finally:
            if bar is not None:
                bar.close()
            self._bar = None
            if self.writer is not None:
                self.writer.flush()
        if self.step > s0:
            elapsed = time.perf_counter() - t0
            self.say(f"{self.task.name}: finished step {self.step} of {self.run.steps} after "
                     f"{format_duration(elapsed)} ({(self.step - s0) * self.batch_size / elapsed:.2f} images/s)")
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

    def _log(self, window: dict[str, list[torch.Tensor]], t0: float, s0: int, end: int) -> dict[str, float]:
        logs = {k: float(torch.stack(v).mean()) for k, v in window.items()}
        if D.is_enabled():
            keys = sorted(logs)
            t = torch.tensor([logs[k] for k in keys], device=self.device, dtype=torch.float64)
            D.all_reduce_mean(t)
            logs = dict(zip(keys, t.tolist()))
        elapsed = max(time.perf_counter() - t0, 1e-9)
        done = self.step - s0
        rate = done * self.batch_size / elapsed
        for name, opt in self.optimizers.items():
            logs[f"lr/{name}"] = opt.param_groups[0]["lr"]
        logs["images_per_s"] = rate
        self.history.append((self.step, logs))
        if self.dist.is_main:
            writer = self._log_writer()
            if writer is not None:
                for k, v in logs.items():
                    writer.add_scalar(k, v, self.step)
            eta = (end - self.step) * elapsed / max(done, 1)
            shown = [k for k in logs if not k.startswith(("lr/", "images_per_s", "logits_"))]
            shown.sort(key=lambda k: k != "loss")  # the total first, then the terms in the stage's order
            losses = " ".join(f"{k} {logs[k]:.4g}" for k in shown)
            self.say(f"{self.task.name} step {self.step}/{self.run.steps} | {losses} | {rate:.2f} img/s | "
                     f"ETA {format_duration(eta)}")
            if self._bar is not None:
                main = {k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "rec", "l1", "d_loss")}
                self._bar.set_postfix(main | {"img/s": f"{rate:.1f}"}, refresh=True)
        return logs

    def _samples(self, batch: dict) -> None:
        grid = self.task.sample_grid(self, batch)
        if grid is not None and self.dist.is_main:
            writer = self._log_writer()
            if writer is not None:
                writer.add_image("samples", grid.float().clamp(0, 1).cpu(), self.step)

