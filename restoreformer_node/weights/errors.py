"""The one error type weight loading raises for anything a user can get wrong."""

from __future__ import annotations

import os

# Shown when the layout could not be told (missing file, unreadable bytes).
UNKNOWN_LAYOUT = "not determined"


class WeightLoadError(Exception):
    """A weight file could not be used. The message names the file, the layout it was read as,
    what is wrong and how to fix it; the parts are also kept as attributes for callers.

    `kind` classifies the refusal for callers that act on it (the training package sets aside a
    damaged checkpoint and resumes from an older one): "code" (the file would run code), "damaged"
    (truncated or malformed), "limit" (a resource bound hit before unpickling), "wrong_kind" (a
    readable file of another kind), "unusable" (anything else)."""

    KINDS = ("code", "damaged", "limit", "wrong_kind", "unusable")

    def __init__(
        self,
        path: str | os.PathLike,
        problem: str,
        fix: str,
        layout: str | None = None,
        what: str = "RestoreFormer weights",
        kind: str = "unusable",
    ) -> None:
        assert kind in self.KINDS, kind
        self.kind = kind
        self.path = os.fspath(path)
        self.problem = problem
        self.fix = fix
        self.layout = layout or UNKNOWN_LAYOUT
        self.what = what
        super().__init__(f"Cannot load {what} from '{self.path}' (layout: {self.layout}): {problem}\nFix: {fix}")

    def about(self, what: str, fix: str | None = None) -> WeightLoadError:
        """The same refusal, worded for another kind of file (e.g. a detector's weights)."""
        return WeightLoadError(self.path, self.problem, fix or self.fix, self.layout, what, self.kind)


def list_names(names, limit: int = 12) -> str:
    """'a, b, c ... and 30 more' for error messages that must name keys without flooding."""
    names = list(names)
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f" ... and {len(names) - limit} more"
    return shown
