"""Writers of hostile and malformed inputs for the adversarial tests: pickles built opcode by
opcode, torch zip checkpoints with altered directories, and the like.

Everything is written by the test into its temporary folder; nothing here is ever unpickled by the
helpers themselves.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

PROTO2 = b"\x80\x02"
STOP = b"."


def text(value: str) -> bytes:
    """BINUNICODE opcode pushing `value`."""
    raw = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def global_op(module: str, name: str) -> bytes:
    """GLOBAL opcode importing module.name."""
    return b"c" + f"{module}\n{name}\n".encode()


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)  # LONG_BINPUT


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)  # LONG_BINGET


# --- pickles ---------------------------------------------------------------------------------


def nested(depth: int, how: str) -> bytes:
    """{'params': X} where X nests `depth` containers deep, built the way `how` says:
    list / dict / tuple (each level wraps the previous one), mark (MARK ... LIST), or late (a
    chain of memoized empty lists, each put into the previous one outermost first through memo
    references, so no single step shows the depth)."""
    body = PROTO2 + b"}" + text("params")
    if how == "list":  # push `depth` lists, then append each into the one below it
        body += b"]" * depth + b"a" * (depth - 1)
    elif how == "dict":  # dicts keyed 0, each set into the one below it
        body += b"}" + b"K\x00}" * (depth - 1) + b"s" * (depth - 1)
    elif how == "tuple":
        body += b")" + b"\x85" * depth
    elif how == "mark":
        body += b"(" * depth + b"l" * depth
    elif how == "late":
        for i in range(depth):  # memo i: an empty list, not yet inside anything
            body += b"]" + put(i) + b"0"  # EMPTY_LIST, LONG_BINPUT, POP
        for i in range(1, depth):  # put list i into list i-1, outermost first
            body += get(i - 1) + get(i) + b"a0"  # GET parent, GET child, APPEND, POP parent
        body += get(0)
    else:
        raise ValueError(how)
    return body + b"s" + STOP


def shared_tuple_key(levels: int) -> bytes:
    """{t_levels: 1} where t_0 = () and t_i = (t_{i-1}, t_{i-1}) through the memo: a few hundred
    bytes whose key unfolds to 2**levels tuples, all of which hashing visits."""
    body = PROTO2 + b"}" + b")" + put(0)
    for i in range(1, levels + 1):
        body += b"0" + get(i - 1) + get(i - 1) + b"\x86" + put(i)  # POP, GET, GET, TUPLE2, PUT
    return body + b"K\x01s" + STOP


def many_opcodes(count: int) -> bytes:
    """A list of `count` small ints appended one by one (2 opcodes each)."""
    return PROTO2 + b"]" + b"K\x01a" * (count // 2) + STOP


def calls(module: str, name: str, via: str = "REDUCE", arg: str = "true") -> bytes:
    """{'params': module.name(arg)} reached through `via`: REDUCE after GLOBAL, INST, OBJ, EXT1
    (module and name ignored: the registry entry 1), or
    STACK_GLOBAL whose operands come from the memo and whose result is popped (the call is made by
    a second STACK_GLOBAL of the same memo entries)."""
    head = PROTO2 + b"}" + text("params")
    if via == "REDUCE":
        return head + global_op(module, name) + text(arg) + b"\x85R" + b"s" + STOP
    if via == "INST":
        return head + b"(" + text(arg) + b"i" + f"{module}\n{name}\n".encode() + b"s" + STOP
    if via == "OBJ":
        return head + b"(" + global_op(module, name) + text(arg) + b"o" + b"s" + STOP
    if via == "EXT1":  # the copyreg extension registry: imported by number, no name in the file
        return head + b"\x82\x01" + text(arg) + b"\x85R" + b"s" + STOP
    if via == "STACK_GLOBAL_POP":
        body = b"\x80\x04" + b"}" + text("params")
        body += text(module) + put(0) + b"0" + text(name) + put(1) + b"0"  # names only in the memo
        body += get(0) + get(1) + b"\x93" + b"0"  # import it once and pop it (a decoy)
        body += get(0) + get(1) + b"\x93" + text(arg) + b"\x85R"  # import again and call it
        return body + b"s" + STOP
    raise ValueError(via)


# --- containers ------------------------------------------------------------------------------


def torch_zip(
    path: Path,
    data_pkl: bytes,
    records: dict[str, bytes] | None = None,
    *,
    deflate: bool = False,
    prefix: str = "archive",
) -> Path:
    """A zip laid out as torch.save lays it out (one folder, data.pkl, byteorder, version,
    data/<key> records), written by Python's zipfile, stored or deflated."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, data in (records or {}).items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")
    return path


def rezip(src: Path, dst: Path, *, deflate: bool = False, replace: dict[str, bytes] | None = None,
          add: dict[str, bytes] | None = None) -> Path:
    """A torch.save file copied entry by entry (records swapped by `replace`, extra entries
    appended from `add`), optionally deflated."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=method) as zout:
        for info in zin.infolist():
            data = (replace or {}).get(info.filename.split("/", 1)[1], None)
            zout.writestr(info.filename, data if data is not None else zin.read(info))
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def zip_data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def deflate_bomb(path: Path, inflated_bytes: int) -> Path:
    """A checkpoint {'params': zeros} whose one storage record is `inflated_bytes` of zeros,
    deflated (about a thousandth of that on disk), streamed so the test never holds it."""
    numel = inflated_bytes // 4
    pid = b"(" + text("storage") + global_op("torch", "FloatStorage") + text("0") + text("cpu")
    pid += b"J" + struct.pack("<i", numel) + b"tQ"
    tensor = global_op("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"K\x00"
    tensor += b"J" + struct.pack("<i", numel) + b"\x85K\x01\x85\x89" + global_op("collections", "OrderedDict")
    tensor += b")RtR"
    pkl = PROTO2 + b"}" + text("params") + b"}" + text("w") + tensor + b"ss" + STOP
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        with z.open(zipfile.ZipInfo("archive/data/0"), "w", force_zip64=True) as f:
            for _ in range(inflated_bytes // len(chunk)):
                f.write(chunk)
        z.writestr("archive/version", "3\n")
    # zipfile.open(..., "w") stores; recompress that one entry by hand as a real bomb would be.
    return _deflate_entry(path, "archive/data/0")


def _deflate_entry(path: Path, name: str) -> Path:
    with zipfile.ZipFile(path) as zin:
        infos = zin.infolist()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zout:
            for info in infos:
                if info.filename != name:
                    zout.writestr(info.filename, zin.read(info))
                    continue
                new = zipfile.ZipInfo(name)
                new.compress_type = zipfile.ZIP_DEFLATED
                with zin.open(info) as src, zout.open(new, "w", force_zip64=True) as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
    path.write_bytes(out.getvalue())
    return path


_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_CENTRAL_FIELDS = ("sig", "made_by", "needed", "flags", "method", "time", "date", "crc", "csize", "usize",
                   "name_len", "extra_len", "comment_len", "disk", "int_attr", "ext_attr", "offset")


def patch_central(path: Path, name: str, **changes) -> Path:
    """Change fields of `name`'s central-directory header in place (see _CENTRAL_FIELDS)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        fields = dict(zip(_CENTRAL_FIELDS, _CENTRAL.unpack_from(raw, at)))
        entry = raw[at + _CENTRAL.size : at + _CENTRAL.size + fields["name_len"]].decode()
        if entry == name:
            fields.update(changes)
            _CENTRAL.pack_into(raw, at, *(fields[f] for f in _CENTRAL_FIELDS))
            path.write_bytes(bytes(raw))
            return path
        at = raw.find(b"PK\x01\x02", at + _CENTRAL.size)
    raise KeyError(name)


def central_field(path: Path, name: str, field: str) -> int:
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    return {"offset": info.header_offset, "csize": info.compress_size, "usize": info.file_size}[field]


def legacy_file(path: Path, main_pickle: bytes, storage_keys: list[str] | None = None, tail: bytes = b"") -> Path:
    """torch's pre-1.6 format: magic number, protocol version, system info, `main_pickle`, the
    storage keys, then `tail` (the storages' bytes)."""
    buf = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
                buf, protocol=2)
    buf.write(main_pickle)
    pickle.dump(storage_keys or [], buf, protocol=2)
    buf.write(tail)
    path.write_bytes(buf.getvalue())
    return path


def unprivileged(args: list[str]) -> list[str] | None:
    """`args` run so that file permissions apply: as is for a normal user; as root with the
    capabilities that bypass permissions dropped (setpriv); None where that is impossible."""
    if os.geteuid() != 0:
        return args
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", "--", *args]


def tensor_set_by_build(numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """{'params_ema': {'w': t}} where t is rebuilt as a plain 1-D tensor of storage '0' (`numel`
    floats) and then BUILD's legacy path calls t.set_(storage, 0, size, stride): a view the
    tensor's own rebuild arguments never showed."""
    storage = b"(" + text("storage") + global_op("torch", "FloatStorage") + text("0") + text("cpu")
    storage += b"J" + struct.pack("<i", numel) + b"tQ" + put(0)
    ints = b"".join(b"J" + struct.pack("<i", v) for v in size)
    strides = b"".join(b"J" + struct.pack("<i", v) for v in stride)
    tensor = global_op("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + b"K\x00"
    tensor += b"J" + struct.pack("<i", numel) + b"\x85K\x01\x85\x89" + global_op("collections", "OrderedDict") + b")RtR"
    state = b"(" + get(0) + b"K\x00" + b"(" + ints + b"t" + b"(" + strides + b"t" + b"t"
    return PROTO2 + b"}" + text("params_ema") + b"}" + text("w") + tensor + state + b"b" + b"ss" + STOP
