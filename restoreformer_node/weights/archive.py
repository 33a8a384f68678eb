"""The zip container of `torch.save` checkpoints, checked from its directory before anything in it
is inflated or unpickled.

torch writes one top-level folder of stored (uncompressed) records: `data.pkl`, `data/<key>` for
each tensor storage, and a few small bookkeeping files, then the central directory at the very end.
An archive is refused when it is anything else a zip may be: entries that share bytes, names that
repeat or climb out of the folder, sizes that disagree between the directory and the entries,
encryption, data before or after the archive (parsers disagree on such files, so the pickle we scan
could differ from the one torch loads), or compressed entries that inflate far beyond their size.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from dataclasses import dataclass

from .pickle_scan import LIMITS, ScanLimits


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 100_000
    # Inflated bytes of all compressed entries together, per compressed byte. Weights barely
    # compress (torch stores them uncompressed); a bomb inflates a thousand-fold.
    max_compression_ratio: int = 100
    ratio_allowance: int = 1 << 20  # small compressed bookkeeping files may inflate more


ARCHIVE_LIMITS = ArchiveLimits()


class ArchiveRefused(Exception):
    """The archive was refused; `limit` names the ArchiveLimits / ScanLimits field exceeded, or
    None for a malformed archive."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class TorchScriptArchive(ArchiveRefused):
    """A TorchScript program (code/ and constants.pkl), not a weight file."""


@dataclass(frozen=True)
class Archive:
    prefix: str  # the top-level folder, with its trailing "/"
    sizes: dict[str, int]  # record name (below the folder) -> inflated size
    pickle: bytes  # data.pkl, read within the limits


_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


def _end_of_directory(f, size: int) -> tuple[int, int, int]:
    """(entries, directory offset, directory end) from the end records, which must close the
    file: no comment, nothing appended."""
    if size < _EOCD.size:
        raise ArchiveRefused("the archive is shorter than its end record")
    f.seek(size - _EOCD.size)
    sig, disk, cd_disk, here, total, cd_size, cd_offset, comment = _EOCD.unpack(f.read(_EOCD.size))
    if sig != b"PK\x05\x06" or comment:
        raise ArchiveRefused("the archive does not end with its directory (a comment or data follows it)")
    end = size - _EOCD.size
    locator = b""
    if end >= _ZIP64_LOCATOR.size:
        f.seek(end - _ZIP64_LOCATOR.size)
        locator = f.read(_ZIP64_LOCATOR.size)
    if locator[:4] == b"PK\x06\x07":  # zip64 (torch writes it always): the real values are there
        _, disk64, record_at, disks = _ZIP64_LOCATOR.unpack(locator)
        if disk64 != 0 or disks != 1:
            raise ArchiveRefused("the archive's zip64 locator claims several disks")
        f.seek(record_at)
        raw = f.read(_ZIP64_EOCD.size)
        if len(raw) != _ZIP64_EOCD.size:
            raise ArchiveRefused("the archive's zip64 end record is cut off")
        short = (here, total, cd_size, cd_offset)
        sig, record_size, _, _, disk, cd_disk, here, total, cd_size, cd_offset = _ZIP64_EOCD.unpack(raw)
        if sig != b"PK\x06\x06" or record_at + 12 + record_size != end - _ZIP64_LOCATOR.size:
            raise ArchiveRefused("the archive's zip64 end record is malformed")
        for value, limit, wide in zip(short, (0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (here, total, cd_size, cd_offset)):
            if value != limit and value != wide:
                raise ArchiveRefused("the archive's two end records disagree")
        end = record_at
    elif 0xFFFF in (here, total) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise ArchiveRefused("the archive's zip64 locator is missing")
    if disk or cd_disk or here != total:
        raise ArchiveRefused("the archive claims to span several disks")
    if cd_offset + cd_size != end:
        raise ArchiveRefused("the archive's directory is not where its end record says (data was added to the file)")
    return total, cd_offset, end


def _zip64_sizes(extra: bytes) -> list[int]:
    """The 8-byte values of a zip64 extra field (0x0001), in order."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 1:
            body = extra[at + 4 : at + 4 + length]
            return [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
        at += 4 + length
    return []


def _local_extent(f, info: zipfile.ZipInfo, size: int) -> tuple[int, int]:
    """(start, end) of an entry's bytes in the file: local header, data and data descriptor,
    after checking the local header agrees with the directory."""
    f.seek(info.header_offset)
    raw = f.read(_LOCAL.size)
    if len(raw) != _LOCAL.size:
        raise ArchiveRefused(f"entry {info.filename!r} starts past the end of the file")
    sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL.unpack(raw)
    name = f.read(name_len)
    extra = f.read(extra_len)
    central_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    if sig != b"PK\x03\x04" or name != central_name or method != info.compress_type:
        raise ArchiveRefused(f"entry {info.filename!r} differs between the directory and its own header")
    if not flags & 0x08:  # sizes in the local header (else in a descriptor after the data)
        if 0xFFFFFFFF in (csize, usize):
            values = _zip64_sizes(extra)
            usize, csize = (values + [usize, csize])[:2] if len(values) >= 2 else (usize, csize)
        if (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size):
            raise ArchiveRefused(f"entry {info.filename!r} declares other sizes in its header than in the directory")
    start = info.header_offset
    end = start + _LOCAL.size + name_len + extra_len + info.compress_size
    if flags & 0x08:
        f.seek(end)
        descriptor = f.read(24)
        has_sig = descriptor[:4] == b"PK\x07\x08"
        end += (4 if has_sig else 0) + (20 if info.compress_size > 0xFFFFFFFF or info.file_size > 0xFFFFFFFF else 12)
    if end > size:
        raise ArchiveRefused(f"entry {info.filename!r} runs into the archive's directory or past the end of the file")
    return start, end


def _check_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name.isprintable()
        or "\\" in name
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts[:-1])
        or parts[-1] in (".", "..")
        or ":" in parts[0]
    ):
        raise ArchiveRefused(f"the archive holds an entry named {name!r}, which no checkpoint has")


def read_archive(path: str, limits: ScanLimits = LIMITS, archive_limits: ArchiveLimits = ARCHIVE_LIMITS) -> Archive:
    """The checked directory of a torch zip checkpoint and its `data.pkl`, which is inflated only
    after its declared size passed the limits, and never beyond it. Raises ArchiveRefused."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        total, cd_offset, _ = _end_of_directory(f, size)
        if total > archive_limits.max_entries:
            raise ArchiveRefused(
                f"the archive has {total:,} entries (limit: entry count {archive_limits.max_entries:,})", "max_entries"
            )
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            raise ArchiveRefused(f"the archive's directory cannot be read ({error})") from None
        infos = zf.infolist()
        if len(infos) != total:
            raise ArchiveRefused("the archive's directory holds another number of entries than its end record says")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ArchiveRefused(f"the archive holds entries with the same name ({', '.join(twice[:3])})")
        prefixes = {n.split("/", 1)[0] for n in names}
        if len(prefixes) != 1 or any("/" not in n for n in names):
            raise ArchiveRefused("the archive's entries are not all in one top-level folder, as torch.save writes them")
        prefix = prefixes.pop() + "/"
        packed = inflated = 0
        extents = []
        for info in infos:
            _check_name(info.filename)
            if info.flag_bits & 0x01:
                raise ArchiveRefused(f"entry {info.filename!r} is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                if info.compress_size != info.file_size:
                    raise ArchiveRefused(f"entry {info.filename!r} is stored uncompressed but declares two sizes")
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                packed += info.compress_size
                inflated += info.file_size
            else:
                raise ArchiveRefused(f"entry {info.filename!r} uses compression method {info.compress_type}")
            extents.append(_local_extent(f, info, cd_offset))
        extents.sort()
        if extents[0][0] != 0:
            raise ArchiveRefused("data precedes the archive's first entry")
        for (_, end), (start, _) in zip(extents, extents[1:]):
            if start < end:
                raise ArchiveRefused("entries of the archive share bytes (an overlapping-entry zip bomb)")
        if inflated > archive_limits.max_compression_ratio * packed + archive_limits.ratio_allowance:
            raise ArchiveRefused(
                f"its compressed entries would inflate from {packed:,} to {inflated:,} bytes (limit: compression "
                f"ratio {archive_limits.max_compression_ratio})",
                "max_compression_ratio",
            )
        sizes = {i.filename[len(prefix) :]: i.file_size for i in infos}
        if "constants.pkl" in sizes or any(n.startswith("code/") for n in sizes):
            raise TorchScriptArchive("the archive is a TorchScript program")
        if "data.pkl" not in sizes:
            raise ArchiveRefused("the archive has no data.pkl, so it is no torch.save checkpoint")
        if sizes["data.pkl"] > limits.max_pickle_bytes:
            raise ArchiveRefused(
                f"its data.pkl is {sizes['data.pkl']:,} bytes (limit: pickle size {limits.max_pickle_bytes:,})",
                "max_pickle_bytes",
            )
        try:
            with zf.open(prefix + "data.pkl") as member:
                pickle = member.read(sizes["data.pkl"] + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as error:
            raise ArchiveRefused(f"its data.pkl cannot be inflated ({error})") from None
        if len(pickle) != sizes["data.pkl"]:
            raise ArchiveRefused("its data.pkl inflates to another size than the directory says")
    return Archive(prefix, sizes, pickle)


__all__ = ["ARCHIVE_LIMITS", "Archive", "ArchiveLimits", "ArchiveRefused", "TorchScriptArchive", "read_archive"]
