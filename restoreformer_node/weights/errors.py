"""The one error type weight loading raises for anything a user can get wrong."""

from __future__ import annotations

import os

# Shown when the layout could not be told (missing file, unreadable bytes).
UNKNOWN_LAYOUT = "not determined"


class WeightLoadError(Exception):
    """A weight file could not be used. The message names the file, the layout it was read as,
    what is wrong and how to fix it; the parts are also kept as attributes for callers."""

    def __init__(
        self,
        path: str | os.PathLike,
        problem: str,
        fix: str,
        layout: str | None = None,
        what: str = "RestoreFormer weights",
    ) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.fix = fix
        self.layout = layout or UNKNOWN_LAYOUT
        self.what = what
        super().__init__(f"Cannot load {what} from '{self.path}' (layout: {self.layout}): {problem}\nFix: {fix}")

    def about(self, what: str, fix: str | None = None) -> WeightLoadError:
        """The same refusal, worded for another kind of file (e.g. a detector's weights)."""
        return WeightLoadError(self.path, self.problem, fix or self.fix, self.layout, what)


def list_names(names, limit: int = 12) -> str:
    """'a, b, c ... and 30 more' for error messages that must name keys without flooding."""
    names = list(names)
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f" ... and {len(names) - limit} more"
    return shown
