"""training/README.md's CPU walk-through runs exactly as written, and its command tables name real
presets and options.

The commands of the "Try it on a CPU" block run one after another as separate processes in a fresh
folder that holds only a link to the repository's `training/` (so `training/configs/...` resolves as
from the repository root). Each must exit 0; the files they promise must exist.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO

ROOT = REPO
README = ROOT / "training" / "README.md"


def code_block_after(heading: str) -> list[str]:
    text = README.read_text()
    start = text.index(heading)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, f"no ```sh block after {heading!r}"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_readme_commands_name_existing_presets_and_commands():
    from training.__main__ import COMMANDS

    text = README.read_text()
    for config in re.findall(r"training/configs/([\w]+\.yaml)", text):
        assert (ROOT / "training" / "configs" / config).is_file(), config
    for command in re.findall(r"python -m training ([\w-]+)", text):
        assert command in COMMANDS, command
    for preset in (ROOT / "training" / "configs").glob("*.yaml"):
        assert preset.name in text, f"{preset.name} is not documented"


@pytest.mark.slow
def test_cpu_walkthrough_runs_as_written(tmp_path):
    commands = code_block_after("## Try it on a CPU")
    assert len(commands) >= 6 and all(c.startswith("python -m training ") for c in commands)
    (tmp_path / "training").symlink_to(ROOT / "training", target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        outputs.append(proc.stdout)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    runs = tmp_path / "runs"
    assert sorted(p.name for p in (runs / "stage1_tiny" / "checkpoints").iterdir())[-1] == "step_00000060.pt"
    assert (runs / "stage2_tiny" / "checkpoints" / "step_00000020.pt").is_file()
    assert (runs / "restoreformer_tiny.safetensors").is_file() and (runs / "eval_tiny" / "summary.md").is_file()
    stage2_out = next(o for c, o in zip(commands, outputs) if " stage2 " in c)
    assert re.search(r"^stage2 step 1/20 \| loss ", stage2_out, re.M)  # progress from the first step
    resumed = next(o for c, o in zip(commands, outputs) if "--resume" in c)
    assert "resumed from" in resumed and "step_00000050.pt" in resumed
