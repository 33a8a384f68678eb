"""Errors the training commands report as one line (the command line prints them and exits with 2).

`TrainingFileError`: a file the training package reads (a checkpoint, a stage-1 network, a loss
network's weights) is missing, damaged, carries code, or is not what it should be. `DataError`: a
dataset problem (unreadable image, wrong size, missing landmarks entry). Both name the file and
say how to fix it.
"""

from __future__ import annotations

import os


class TrainingFileError(ValueError):
    """A file could not be used. `kind` is one of "damaged", "code", "wrong_kind" (a missing file is a
    FileNotFoundError with a message of the same form)."""

    def __init__(self, path: str | os.PathLike, what: str, problem: str, fix: str, kind: str = "wrong_kind") -> None:
        self.path = os.fspath(path)
        self.what = what
        self.problem = problem
        self.fix = fix
        self.kind = kind
        super().__init__(f"{what} '{self.path}': {problem} Fix: {fix}")

    def __reduce__(self):  # keeps the fields through DataLoader workers and multiprocessing
        return (type(self), (self.path, self.what, self.problem, self.fix, self.kind))


class DataError(ValueError):
    """A problem with the training data; the message names the file and the fix."""


def one_line(error: BaseException) -> str:
    """The message of `error` as one line. An error raised in a DataLoader worker arrives with the
    worker's traceback folded into its message; only the original message is kept."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(text.split())
