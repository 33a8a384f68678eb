"""A progress display for runs over many files: done / total, files per second and the time left.

On a terminal it is one line at the bottom, redrawn in place (at most every REDRAW seconds); the
run's own messages still print normally: while the bar is active, stdout and stderr are wrapped
so that the bar is erased before a message and drawn again after it. Elsewhere (a log file, CI)
it prints a plain line every LOG_EVERY seconds and one at the end, or nothing with "auto".

    with progress_bar(total=len(jobs), mode="auto", label="files") as bar:
        for job in jobs:
            ...
            bar.advance()
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

PROGRESS_MODES = ("auto", "on", "off")
REDRAW = 0.2  # seconds between redraws on a terminal
LOG_EVERY = 10.0  # seconds between progress lines in a log
WIDTH = 24  # characters of the bar itself


def format_duration(seconds: float) -> str:
    """3725 -> '1:02:05', 65 -> '1:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def progress_text(done: int, total: int, elapsed: float, label: str = "files", bar: bool = True) -> str:
    """'[#####.....] 12/40 files, 2.4 files/s, ETA 0:12' (the rate and time left once one is done)."""
    parts = []
    if bar:
        filled = WIDTH * done // total if total else WIDTH
        parts.append("[" + "#" * filled + "." * (WIDTH - filled) + "] ")
    parts.append(f"{done}/{total} {label}")
    if done and elapsed > 0:
        rate = done / elapsed
        parts.append(f", {rate:.2f} {label}/s" if rate < 10 else f", {rate:.1f} {label}/s")
        parts.append(f", ETA {format_duration((total - done) / rate)}" if done < total else f", {format_duration(elapsed)}")
    else:
        parts.append(", ETA --")
    return "".join(parts)


class ProgressBar:
    """Counts finished items and shows the progress (see the module docstring)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        live: bool,
        log: bool,
        label: str = "files",
        prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.stream, self.live, self.log = total, stream, live, log
        self.label, self.prefix, self.clock = label, prefix, clock
        self.done = 0
        self.started = clock()
        self.shown_at = -float("inf")
        self.drawn = False  # the bar is on screen (live mode)

    def text(self) -> str:
        return self.prefix + progress_text(self.done, self.total, self.clock() - self.started, self.label, self.live)

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        if self.live and (now - self.shown_at >= REDRAW or self.done >= self.total):
            self.draw()
            self.shown_at = now
        elif self.log and now - self.shown_at >= LOG_EVERY and self.done < self.total:
            self.stream.write(self.text() + "\n")
            self.stream.flush()
            self.shown_at = now

    def draw(self) -> None:
        self.stream.write("\r\033[K" + self.text())
        self.stream.flush()
        self.drawn = True

    def erase(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False

    def close(self) -> None:
        if self.live:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
        elif self.log:
            self.stream.write(self.text() + "\n")
            self.stream.flush()


class _AroundBar:
    """A text stream that erases the live bar before writing and draws it again after a line."""

    def __init__(self, stream: TextIO, bar: ProgressBar) -> None:
        self._stream, self._bar = stream, bar

    def write(self, text: str) -> int:
        self._bar.erase()
        written = self._stream.write(text)
        if text.endswith("\n"):
            self._stream.flush()
            self._bar.draw()
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def progress_bar(
    total: int,
    mode: str = "auto",
    label: str = "files",
    prefix: str = "",
    stream: TextIO | None = None,
    live: bool = True,
) -> Iterator[ProgressBar]:
    """A ProgressBar on `stream` (default stderr). mode "auto": a live bar on a terminal, nothing
    otherwise; "on": a live bar on a terminal, progress lines otherwise; "off": nothing.
    live=False treats a terminal like a log (several processes sharing one terminal)."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress mode {mode!r}: choose one of {', '.join(PROGRESS_MODES)}")
    stream = stream or sys.stderr
    terminal = live and mode != "off" and bool(getattr(stream, "isatty", lambda: False)())
    bar = ProgressBar(total, stream, live=terminal, log=mode == "on" and not terminal, label=label, prefix=prefix)
    if not terminal:
        try:
            yield bar
        finally:
            bar.close()
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _AroundBar(saved[0], bar), _AroundBar(saved[1], bar)
    try:
        yield bar
    finally:
        sys.stdout, sys.stderr = saved
        bar.close()
