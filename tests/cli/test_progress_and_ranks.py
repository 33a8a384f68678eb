"""The command line's progress display and its split of the work over torchrun's processes (the
parts that need no second process; the two-process run is in test_restore_distributed.py)."""

from __future__ import annotations

import io

import pytest

from restoreformer_node.cli.distributed import Ranks, block, ranks_from_environment, shard
from restoreformer_node.cli.progress import (
    LOG_EVERY,
    ProgressBar,
    format_duration,
    progress_bar,
    progress_text,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_text_has_the_rate_and_the_time_left():
    assert progress_text(0, 40, 3.0, bar=False) == "0/40 files, ETA --"
    # 12 files in 5 s: 2.4 files/s, 28 left -> 11.7 s
    assert progress_text(12, 40, 5.0, bar=False) == "12/40 files, 2.40 files/s, ETA 0:12"
    assert progress_text(40, 40, 3725.0, bar=False) == "40/40 files, 0.01 files/s, 1:02:05"
    assert progress_text(20, 40, 1.0, label="frames").startswith("[############............] 20/40 frames, 20.0 frames/s")
    assert format_duration(65) == "1:05" and format_duration(0.4) == "0:00"


def test_progress_lines_in_a_log_come_every_few_seconds_and_at_the_end():
    clock, log = Clock(), io.StringIO()
    bar = ProgressBar(10, log, live=False, log=True, clock=clock)
    for _ in range(4):
        clock.now += LOG_EVERY / 2
        bar.advance()
    bar.close()
    lines = log.getvalue().splitlines()
    # after file 1 (first line ever), then 2 files later (LOG_EVERY passed), then the end
    assert lines == [
        "1/10 files, 0.20 files/s, ETA 0:45",
        "3/10 files, 0.20 files/s, ETA 0:35",
        "4/10 files, 0.20 files/s, ETA 0:30",
    ]


def test_off_and_auto_without_a_terminal_print_nothing():
    for mode in ("off", "auto"):
        stream = io.StringIO()
        with progress_bar(3, mode, stream=stream) as bar:
            bar.advance(3)
        assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="choose one of auto, on, off"):
        with progress_bar(3, "sometimes"):
            pass


def test_the_live_bar_steps_aside_for_messages(capsys):
    terminal = Terminal()
    with progress_bar(2, "auto", stream=terminal) as bar:
        bar.advance()
        print("a.png: 1 face restored")
        bar.advance()
    shown = terminal.getvalue()
    # the bar was drawn, erased before the message, drawn again, and ends with a newline
    assert shown.count("\r\033[K") >= 3 and shown.endswith("\n")
    assert "1/2 files" in shown and shown.rstrip("\n").split("\r\033[K")[-1].startswith("[" + "#" * 24 + "] 2/2 files")
    assert capsys.readouterr().out == "a.png: 1 face restored\n"


def test_ranks_come_from_torchruns_environment():
    assert ranks_from_environment({}) == Ranks(0, 1, 0)
    assert ranks_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        ranks_from_environment({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="do not fit together"):
        ranks_from_environment({"RANK": "2", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("count", [0, 1, 5, 23])
def test_every_item_goes_to_exactly_one_rank(world, count):
    items = list(range(count))
    shares = [shard(items, Ranks(r, world)) for r in range(world)]
    blocks = [list(block(count, Ranks(r, world))) for r in range(world)]
    for split in (shares, blocks):
        assert sorted(i for share in split for i in share) == items
        assert max(map(len, split)) - min(map(len, split)) <= 1
    assert [i for b in blocks for i in b] == items  # blocks are contiguous and in rank order
    for unit in (3, 8):
        cut = [block(count, Ranks(r, world), unit) for r in range(world)]
        assert [i for b in cut for i in b] == items
        assert all(b.start % unit == 0 for b in cut if len(b))  # cut between whole units only
        # blocks differ by at most one unit, and the last unit may be short by up to unit - 1
        assert max(map(len, cut)) - min(map(len, cut)) <= 2 * unit - 1


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    import torch

    from restoreformer_node.cli.distributed import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # a machine with 4 GPUs (the count only)
    cuda = torch.device("cuda")
    assert rank_device(cuda, Ranks(3, 8, 3)) == torch.device("cuda", 3)
    assert rank_device(cuda, Ranks(5, 8, 5)) == torch.device("cuda", 1)  # more processes than GPUs: shared
    assert rank_device(cuda, Ranks(0, 1, 0)) == cuda  # one process: as given
    assert rank_device(torch.device("cuda", 2), Ranks(1, 2, 1)) == torch.device("cuda", 2)  # the user's choice
    assert rank_device(torch.device("cpu"), Ranks(1, 2, 1)) == torch.device("cpu")
