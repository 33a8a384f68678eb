"""Checking command-line arguments before any work: each check returns the value to use or raises
UsageError with one line that names the argument and the fix (the command exits with status 2).

Subcommands call these at the top of their `run`, before loading a network or reading an image,
so a mistake costs nothing and writes nothing. Heavy imports (torch) happen inside the checks
that need them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


class UsageError(Exception):
    """A bad argument or input, found before any work; the message is one line."""


def finite_number(name: str, value: float, low: float, high: float) -> float:
    """`value` if it is a number in [low, high] (NaN and infinities are refused)."""
    if not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"{name} must be a number from {low:g} to {high:g}, got {value}")
    return float(value)


def whole_number(name: str, value: int, low: int, high: int | None = None) -> int:
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise UsageError(f"{name} must be {bound}, got {value}")
    return value


def torch_device(text: str):
    """The torch device for `--device` ("auto": a GPU if there is one), refused unless it exists here."""
    import torch

    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device {text!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {text}: this machine has no CUDA GPU usable by PyTorch; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {text}: there are {count} CUDA device(s), numbered 0 to {count - 1}")
        return device
    if device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise UsageError(f"--device {text}: Apple's MPS is not available here; use --device cpu")
        return device
    raise UsageError(f"--device {text}: only cpu, cuda and mps devices can restore; use --device auto")


def readable_file(name: str, text: str | os.PathLike) -> Path:
    """An existing regular file this user can read."""
    path = Path(text)
    if not path.exists():
        raise UsageError(f"{name} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{name} {path}: this is a folder; pass the file inside it")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{name} {path}: the file cannot be read by this user (check its permissions)")
    return path


def _writable_folder(name: str, folder: Path) -> None:
    """`folder` exists as a folder this user may create files in, or can be created."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise UsageError(f"{name} {folder}: {probe} is a link to nothing")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{name} {folder}: {probe} is a file, not a folder; choose a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{name} {folder}: {probe} is not writable by this user; choose another folder")


def output_folder(name: str, text: str | os.PathLike) -> Path:
    """The folder outputs go to, resolved once (a link given here is the user's choice and is
    followed now; links found inside it later are not). It need not exist yet."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{name} {path}: this is a file, not a folder; choose a folder (it is created if needed)")
    _writable_folder(name, path)
    return path.resolve()


def output_file(name: str, text: str | os.PathLike, suffix: str, *, replace: bool, flag: str) -> Path:
    """A file to write: named *suffix*, not a folder, in a writable folder, and replaced only with
    `flag` (e.g. --force)."""
    path = Path(text)
    if path.is_dir():
        raise UsageError(f"{name} {path}: this is a folder; name a file inside it, e.g. {path / ('out' + suffix)}")
    if path.suffix.lower() != suffix:
        raise UsageError(f"{name} must end in {suffix} (got {path})")
    if os.path.lexists(path) and not replace:
        raise UsageError(f"{name} {path} exists; pass {flag} to replace it")
    _writable_folder(name, path.parent if str(path.parent) else Path("."))
    return path


__all__ = [
    "UsageError",
    "finite_number",
    "output_file",
    "output_folder",
    "readable_file",
    "torch_device",
    "whole_number",
]
