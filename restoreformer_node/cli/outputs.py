"""Writing output files safely inside one output folder.

Every file the command line writes goes through `OutputFolder.write`:

- the path must lie inside the folder (resolved once, when the user named it); sub-folders are
  created one at a time and entered without following links, so a link planted inside the folder
  (to /etc, to the inputs) is refused, never written through;
- the bytes go to a fresh temporary file created exclusively (O_CREAT | O_EXCL | O_NOFOLLOW) in the
  target's folder, then renamed over the target: a reader sees the old file or the whole new one,
  and a planted `NAME.part` or link cannot redirect the write;
- an existing target is replaced only when the folder was opened with `overwrite`, and never when
  it is one of the protected input files (same path, case-insensitively, or the same file through a
  hard link).

On systems without directory file descriptors (Windows) the same rules are applied with checks by
path just before each step.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_WITH_DIR_FDS = (
    hasattr(os, "O_DIRECTORY")
    and hasattr(os, "O_NOFOLLOW")
    and {os.open, os.mkdir, os.stat, os.rename, os.unlink} <= os.supports_dir_fd
)


class OutputError(Exception):
    """One output could not be written safely; the message names it and why (one line)."""


def path_key(path: Path) -> str:
    """How two paths are compared: resolved (links followed), case folded (so outputs stay apart
    on case-insensitive file systems too)."""
    return os.path.normcase(str(Path(path).resolve())).casefold()


def same_file(a: Path, b: Path) -> bool:
    """Whether writing `a` could replace `b`: the same resolved path (case-insensitively) or the
    same existing file."""
    if path_key(a) == path_key(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class OutputFolder:
    def __init__(self, root: Path, *, overwrite: bool, protected: Iterable[Path] = ()) -> None:
        self.root = Path(root).resolve()
        self.overwrite = overwrite
        self._protected_keys: set[str] = set()
        self._protected_files: set[tuple[int, int]] = set()
        for path in protected:
            self._protected_keys.add(path_key(path))
            try:
                st = os.stat(path)
                self._protected_files.add((st.st_dev, st.st_ino))
            except OSError:
                pass

    def relative(self, target: Path) -> tuple[str, ...]:
        """The parts of `target` below the folder; OutputError if it is not inside it."""
        try:
            parts = Path(target).relative_to(self.root).parts
        except ValueError:
            raise OutputError(f"{target}: outside the output folder {self.root}; nothing written") from None
        if not parts or any(p in ("", ".", "..") for p in parts):
            raise OutputError(f"{target}: not a file path inside the output folder {self.root}")
        return parts

    def write(self, target: Path, data: bytes) -> bool:
        """Write `data` to `target` (inside the folder). Returns False when the target exists and
        overwriting was not asked for (nothing written). Raises OutputError."""
        parts = self.relative(target)
        if path_key(self.root.joinpath(*parts)) in self._protected_keys:
            raise OutputError(f"{target}: this is an input file; it is never replaced")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if _WITH_DIR_FDS:
                return self._write_with_dir_fds(target, parts, data)
            return self._write_by_path(target, parts, data)
        except OutputError:
            raise
        except OSError as error:
            raise OutputError(f"{target}: cannot be written ({error.strerror or error})") from None

    def _refuse_existing(self, target: Path, st: os.stat_result) -> bool:
        """Whether an existing target must be left alone (raises for what must never be replaced)."""
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{target}: a folder is in the way; nothing written")
        if (st.st_dev, st.st_ino) in self._protected_files:
            raise OutputError(f"{target}: this is an input file (a link to it); it is never replaced")
        return not self.overwrite

    def _write_with_dir_fds(self, target: Path, parts: tuple[str, ...], data: bytes) -> bool:
        fd = os.open(self.root, _DIR_FLAGS)
        temp = None
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise OutputError(
                            f"{target}: {part} in the output folder is a link or a file; links are never "
                            "followed when writing, so nothing was written"
                        ) from None
                    raise
                os.close(fd)
                fd = inner
            name = parts[-1]
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if self._refuse_existing(target, st):
                    return False
            except FileNotFoundError:
                pass
            while True:
                candidate = f".{name}.{secrets.token_hex(6)}.part"
                try:
                    out = os.open(candidate, _FILE_FLAGS, 0o666, dir_fd=fd)
                    temp = candidate
                    break
                except FileExistsError:
                    continue
            with os.fdopen(out, "wb") as f:
                f.write(data)
            os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
            temp = None
            return True
        finally:
            if temp is not None:
                try:
                    os.unlink(temp, dir_fd=fd)
                except OSError:
                    pass
            os.close(fd)

    def _write_by_path(self, target: Path, parts: tuple[str, ...], data: bytes) -> bool:
        folder = self.root
        for part in parts[:-1]:
            folder = folder / part
            if folder.is_symlink() or getattr(folder, "is_junction", lambda: False)():
                raise OutputError(f"{target}: {folder} is a link; links are never followed when writing")
            folder.mkdir(exist_ok=True)
            if not folder.is_dir() or folder.is_symlink():
                raise OutputError(f"{target}: {folder} is not a folder")
        path = folder / parts[-1]
        try:
            if self._refuse_existing(target, os.lstat(path)):
                return False
        except FileNotFoundError:
            pass
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{parts[-1]}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, path)
            temp = None
            return True
        finally:
            if temp is not None and os.path.lexists(temp):
                os.unlink(temp)


__all__ = ["OutputError", "OutputFolder", "path_key", "same_file"]
