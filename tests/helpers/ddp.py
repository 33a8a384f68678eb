"""Checks that a torchrun run (2 processes x half the batch) trains what one process trains.

The bound of every comparison is measured in the test, on the machine that runs it: the
one-process run uses one intra-op thread, as each torchrun rank does, and is repeated with every
batch in reverse order and with two threads. Those repeats are the same arithmetic summed in
other orders, as the split over two ranks sums it; the two-process run must stay within
NOISE_FACTOR times the larger of their differences (or a few float32 roundings of the value where
both are 0), in every logged term and in every trained network's outputs.

Every step is compared from a common starting point: step 1 from the same initial networks, step
s from the two-process run's own step s-1 checkpoint, resumed by one process. Compared from the
start instead, Adam's first steps amplify rounding (it moves every element by about +-lr whatever
the size of its gradient, so elements whose true gradient is ~0 move on the sign of rounding
noise) and the trajectories drift apart for reasons that are not DDP's.

`launch(..., rank1_grad_scale=1.25)` scales rank 1's gradients before DDP averages them
(tests/ddp_launcher.py), so a test can show that its bounds catch a wrong rank.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from helpers import REPO as ROOT

NOISE_FACTOR = 10.0
FLOOR = 16 * torch.finfo(torch.float32).eps  # relative to the compared value
VARIANTS = {"one": dict(reverse=False, threads=1), "reversed": dict(reverse=True, threads=1),
            "two_threads": dict(reverse=False, threads=2)}


@dataclasses.dataclass
class RunOutcome:
    """What a run logged at each step, and what its networks compute after each step."""

    world_size: int
    logs: dict[int, dict[str, float]]
    checkpoints: dict[int, Path]
    functions: dict[int, dict[str, torch.Tensor]]

    def bound(self, name: str, *, step: int, noise: list[RunOutcome]) -> float:
        """The allowed distance from this run in `name` (a logged term or a network) at `step`, from
        its distances to the `noise` runs."""
        if name in self.logs[step]:
            value = self.logs[step][name]
            measured = max(abs(n.logs[step][name] - value) for n in noise)
            return max(NOISE_FACTOR * measured, FLOOR * abs(value))
        value = self.functions[step][name]
        measured = max(float((n.functions[step][name] - value).abs().max()) for n in noise)
        return max(NOISE_FACTOR * measured, FLOOR * float(value.abs().max()))

    def ratios(self, candidate: RunOutcome, *, noise: list[RunOutcome], step: int) -> dict[str, float]:
        """|candidate - self| / bound for every logged term and network at `step` (<= 1: within)."""
        out = {k: abs(candidate.logs[step][k] - v) / self.bound(k, step=step, noise=noise)
               for k, v in self.logs[step].items()}
        out.update({k: float((candidate.functions[step][k] - v).abs().max()) / self.bound(k, step=step, noise=noise)
                    for k, v in self.functions[step].items()})
        return out


@dataclasses.dataclass
class Probe:
    """Runs one training configuration several ways and evaluates every checkpoint on one batch.

    build(config mapping) -> Trainer; functions(modules state dicts) -> {network: outputs};
    stage: the `python -m training` subcommand; terms: the logged terms to compare.
    """

    build: Callable[[dict], object]
    functions: Callable[[dict], dict[str, torch.Tensor]]
    stage: str
    terms: tuple[str, ...]

    def outcome(self, out_dir: Path, logs: dict[int, dict[str, float]]) -> RunOutcome:
        from training.trainer import list_checkpoints

        checkpoints = dict(list_checkpoints(out_dir / "checkpoints"))
        states = {step: torch.load(path, weights_only=True) for step, path in checkpoints.items()}
        (world,) = {s["world_size"] for s in states.values()}
        functions = {step: self.functions(s["modules"]) for step, s in states.items()}
        return RunOutcome(world, logs, checkpoints, functions)

    def single(self, config: dict, monkeypatch, *, reverse: bool, threads: int, steps: int,
               resume_from: Path | None = None) -> RunOutcome:
        """One process with `threads` intra-op threads, optionally with every batch in reverse order,
        optionally resumed from another run's checkpoint, trained up to step `steps`."""
        from training.data import StepBatchSampler

        trainer = self.build(config)
        if resume_from is not None:
            trainer.ckpt_dir.mkdir(parents=True)
            shutil.copy(resume_from, trainer.ckpt_dir / resume_from.name)
        before = torch.get_num_threads()
        with monkeypatch.context() as patch:
            if reverse:
                in_order = StepBatchSampler.micro_batches
                patch.setattr(StepBatchSampler, "micro_batches", lambda self, step: [m[::-1] for m in in_order(self, step)])
            torch.set_num_threads(threads)
            try:
                trainer.fit(resume=resume_from is not None, stop_at=steps)
            finally:
                torch.set_num_threads(before)
        if resume_from is not None:
            (trainer.ckpt_dir / resume_from.name).unlink()  # the other run's, not this one's
        logs = {step: {k: v for k, v in entry.items() if k in self.terms} for step, entry in trainer.history}
        return self.outcome(trainer.out_dir, logs)

    def torchrun(self, config: dict, tmp_path: Path, rank1_grad_scale: float = 1.0, port: int = 29547) -> RunOutcome:
        """The same run as 2 processes under torchrun (gloo, one thread each)."""
        import yaml
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        path = tmp_path / "torchrun.yaml"
        path.write_text(yaml.safe_dump(config))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
                   RF_TEST_RANK1_GRAD_SCALE=str(rank1_grad_scale))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(Path(__file__).with_name("ddp_launcher.py")), self.stage, "--config", str(path)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out_dir = Path(config["run"]["out_dir"])
        events = EventAccumulator(str(out_dir / "tensorboard"))
        events.Reload()
        logs: dict[int, dict[str, float]] = {}
        for name in self.terms:
            for event in events.Scalars(name):
                logs.setdefault(event.step, {})[name] = event.value
        return self.outcome(out_dir, logs)

    def compare(self, config_for: Callable[[str], dict], tmp_path: Path, monkeypatch, steps: int,
                rank1_grad_scale: float = 1.0, port: int = 29547) -> Comparison:
        """Run torchrun and the one-process variants for every step. `config_for(name)` gives the
        run configuration with its own out_dir for each run name."""
        two = self.torchrun(config_for("two"), tmp_path, rank1_grad_scale, port)
        assert two.world_size == 2 and sorted(two.logs) == sorted(two.functions) == list(range(1, steps + 1))
        ratios, bounds = {}, {}
        for step in range(1, steps + 1):
            start = None if step == 1 else two.checkpoints[step - 1]
            runs = {name: self.single(config_for(f"{name}_{step}"), monkeypatch, steps=step, resume_from=start, **how)
                    for name, how in VARIANTS.items()}
            noise = [runs["reversed"], runs["two_threads"]]
            ratios[step] = runs["one"].ratios(two, noise=noise, step=step)
            bounds[step] = {k: runs["one"].bound(k, step=step, noise=noise) for k in runs["one"].functions[step]}
        worst = {step: max(r.items(), key=lambda kv: kv[1]) for step, r in ratios.items()}
        print(f"{self.stage} DDP, rank-1 gradients x{rank1_grad_scale}: largest |two - one| / bound per step: {worst}")
        print("every ratio:", {step: {k: f"{v:.3g}" for k, v in r.items()} for step, r in ratios.items()})
        return Comparison(two, ratios, bounds, rank1_grad_scale)


@dataclasses.dataclass
class Comparison:
    two: RunOutcome
    ratios: dict[int, dict[str, float]]  # step -> quantity -> |two - one| / bound
    bounds: dict[int, dict[str, float]]  # step -> network -> bound on its outputs
    rank1_grad_scale: float

    def check(self, initial: dict[str, torch.Tensor]) -> None:
        """Every ratio within 1 for an exact run, some ratio above 1 when rank 1 was perturbed; and
        the run moved every network (`initial`: its outputs before training) by far more than
        any bound, so the check is not vacuous."""
        largest = max(v for r in self.ratios.values() for v in r.values())
        if self.rank1_grad_scale != 1.0:
            assert largest > 1, f"rank 1's gradients x{self.rank1_grad_scale} went unnoticed: {self.ratios}"
            return
        assert largest <= 1, self.ratios
        last = max(self.two.functions)
        moved = {k: float((self.two.functions[last][k] - v).abs().max()) for k, v in initial.items()}
        bound = {k: max(b[k] for b in self.bounds.values()) for k in initial}
        print("training moved the networks by", moved, "; largest bounds", bound)
        assert all(moved[k] > 10 * bound[k] for k in moved), (moved, bound)
