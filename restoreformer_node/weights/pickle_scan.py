"""A bounded static scan of a pickle: what it imports and what it would build, found by reading
its opcodes, without building, importing or calling anything.

Every pickle the pack reads is scanned here first, and refused before `torch.load` sees it when it
is larger, longer, deeper or more shared than any weight file is:

- `max_pickle_bytes` / `max_opcodes`: a checkpoint's pickle describes a few thousand tensors
  (tens of thousands of opcodes); these bound the time the scan and the unpickler can take;
- `max_depth`: how deeply containers nest. Hashing a tuple and some other C code recurse without
  a guard, so a pickle nesting a million levels can crash the interpreter;
- `max_tuple_nodes`: the size of a tuple unfolded as a tree. Memo references let a small pickle
  build a tuple whose children are one shared tuple, twice, at every level; hashing it (as a dict
  key) visits every path, 2**levels of them.

The scan runs the pickle machine on placeholders: strings and integers keep their values (module
and class names, storage keys and sizes), every container is a small node. Opcodes torch's
unpickler does not accept are scanned like the others (within the same limits) and left to it.
"""

from __future__ import annotations

import io
import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScanLimits:
    """Bounds of a pickle the pack unpickles; each is far above any real checkpoint's."""

    max_pickle_bytes: int = 32 << 20
    max_opcodes: int = 2_000_000
    max_depth: int = 100
    max_tuple_nodes: int = 1_000_000


LIMITS = ScanLimits()

# How each limit is named in refusals (the attribute, so a caller knows what to raise).
LIMIT_WORDS = {
    "max_pickle_bytes": "pickle size",
    "max_opcodes": "opcode count",
    "max_depth": "nesting depth",
    "max_tuple_nodes": "shared tuple size",
}

class ScanRefused(Exception):
    """The pickle was refused by the scan. `limit` is the ScanLimits field that was exceeded, or
    None when the bytes are not a well-formed pickle."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass
class Storage:
    """A tensor storage a pickle refers to by persistent id (the bytes live outside the pickle)."""

    type_name: str  # e.g. "torch.FloatStorage"
    key: str
    numel: int


@dataclass
class PickleScan:
    """What one or more consecutive pickles import and refer to."""

    globals: list[str] = field(default_factory=list)  # "module.name", in order, no repeats
    # Imports whose names the pickle does not state: STACK_GLOBAL of computed strings, and the
    # copyreg extension registry (EXT1/2/4), which names things by number.
    dynamic_imports: int = 0
    storages: list[Storage] = field(default_factory=list)
    opcodes: int = 0
    end: int = 0  # offset just after the last STOP scanned
    values: list[object] = field(default_factory=list)  # each pickle's value if an int, else None


class _Node:
    """A container the pickle builds (tuple, list, dict, set, object, storage, global)."""

    __slots__ = ("kind", "items", "size", "depth", "kids", "name", "nested")

    def __init__(self, kind: str, items: tuple = (), name: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.nested = False  # inside another container
        self.items = items if len(items) <= 8 else ()  # small tuples keep theirs (storage ids)
        self.kids: list[_Node] = [c for c in items if type(c) is _Node]
        self.depth = 1
        self.size = 1 + len(items)  # a tuple unfolded as a tree: what hashing it visits
        for kid in self.kids:
            kid.nested = True
            if kid.depth >= self.depth:
                self.depth = kid.depth + 1
            if kid.kind == "tuple":
                self.size += kid.size - 1


_MARK = object()
_LEAF = object()  # any value whose content the scan does not need (floats, bytes, None, bools)

# opcode byte -> (name, how its argument is read): an int is a fixed width, None no argument (or
# one its handler reads), anything else pickletools' reader (rare text-protocol forms).
_FIXED = {"uint1": 1, "uint2": 2, "uint4": 4, "int4": 4, "uint8": 8, "float8": 8}
_READ_IN_PLACE = frozenset({"BINUNICODE", "SHORT_BINSTRING", "LONG1"})  # length-prefixed, hot
_OPCODES: dict[int, tuple[str, object]] = {
    op.code.encode("latin-1")[0]: (
        op.name,
        None if op.arg is None or op.name in _READ_IN_PLACE else _FIXED.get(op.arg.name, op.arg),
    )
    for op in pickletools.opcodes
}
_STRINGS = frozenset({"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                      "SHORT_BINSTRING"})
_INTS = frozenset({"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"})


class _Machine:
    def __init__(self, data: bytes, limits: ScanLimits, scan: PickleScan) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.scan = scan
        self.seen_globals: set[str] = set()
        self.nodes: list[_Node] = []
        # Set when a container gains an item while it is already inside another one: the depth
        # of its ancestors then needs the graph walk in `finish` (torch.save never does this).
        self.filled_late = False

    # -- helpers -------------------------------------------------------------------------
    def node(self, kind: str, items: tuple = (), name: str | None = None) -> _Node:
        made = _Node(kind, items, name)
        self._check(made)
        self.nodes.append(made)
        return made

    def _check(self, node: _Node) -> None:
        if node.depth > self.limits.max_depth:
            raise _limit("max_depth", self.limits, f"its containers nest more than {self.limits.max_depth} levels deep")
        if node.size > self.limits.max_tuple_nodes:
            raise _limit(
                "max_tuple_nodes",
                self.limits,
                f"it builds a tuple that unfolds to more than {self.limits.max_tuple_nodes:,} items through "
                "shared (memo) references, which hashing it as a dictionary key would visit one by one",
            )

    def contain(self, parent: object, *children: object) -> None:
        if type(parent) is not _Node:
            return
        for child in children:
            if type(child) is _Node:
                parent.kids.append(child)
                child.nested = True
                if parent.nested:
                    self.filled_late = True
                if child.depth + 1 > parent.depth:
                    parent.depth = child.depth + 1
                    self._check(parent)

    def add_global(self, name: str) -> _Node:
        if name not in self.seen_globals:
            self.seen_globals.add(name)
            self.scan.globals.append(name)
        return self.node("global", name=name)

    def _arg(self, how: object) -> object:
        data, pos = self.data, self.pos
        if type(how) is int:
            end = pos + how
            if end > len(data):
                raise ScanRefused("it ends inside an opcode's argument")
            self.pos = end
            return data[pos:end]
        stream = io.BytesIO(data)
        stream.seek(pos)
        try:
            value = how.reader(stream)
        except ValueError as error:
            raise ScanRefused(f"an opcode's argument cannot be read ({error})") from None
        self.pos = stream.tell()
        return value

    # -- the machine ---------------------------------------------------------------------
    def run(self) -> object:
        """Scan one pickle from the current position to its STOP; returns its (placeholder) value."""
        stack: list[object] = []
        memo: dict[int, object] = {}
        marks = 0
        scan, limits, data = self.scan, self.limits, self.data

        def pop_mark() -> list[object]:
            nonlocal marks
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is _MARK:
                    items = stack[i + 1 :]
                    del stack[i:]
                    marks -= 1
                    return items
            raise ScanRefused("it pops a MARK that was never pushed")

        def pop() -> object:
            if not stack or stack[-1] is _MARK:
                raise ScanRefused("its stack runs empty")
            return stack.pop()

        def top() -> object:
            if not stack or stack[-1] is _MARK:
                raise ScanRefused("its stack runs empty")
            return stack[-1]

        while True:
            if self.pos >= len(data):
                raise ScanRefused("it ends before its STOP opcode")
            code = data[self.pos]
            self.pos += 1
            scan.opcodes += 1
            if scan.opcodes > limits.max_opcodes:
                raise _limit("max_opcodes", limits, f"it has more than {limits.max_opcodes:,} opcodes")
            entry = _OPCODES.get(code)
            if entry is None:
                raise ScanRefused(f"byte {self.pos - 1} holds {code:#04x}, which is no pickle opcode")
            name, how = entry
            arg = None if how is None else self._arg(how)
            # Hot opcodes of torch.save's pickles first.
            if name == "BINPUT" or name == "LONG_BINPUT":
                memo[int.from_bytes(arg, "little")] = top()
            elif name == "BINGET" or name == "LONG_BINGET":
                index = int.from_bytes(arg, "little")
                if index not in memo:
                    raise ScanRefused(f"it reads memo entry {index}, which was never stored")
                stack.append(memo[index])
            elif name == "BINUNICODE":
                length = int.from_bytes(self._arg(4), "little")
                raw = self._arg(length)
                try:
                    stack.append(raw.decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError:
                    raise ScanRefused("it holds a string that is not UTF-8") from None
            elif name == "MARK":
                marks += 1
                if marks > limits.max_depth:
                    raise _limit("max_depth", limits, f"it opens more than {limits.max_depth} MARKs at once")
                stack.append(_MARK)
            elif name == "BININT1":
                stack.append(arg[0])
            elif name == "BININT2" or name == "BININT":
                stack.append(int.from_bytes(arg, "little", signed=name == "BININT"))
            elif name == "SHORT_BINSTRING" or name == "LONG1":
                raw = self._arg(self._arg(1)[0])
                stack.append(raw.decode("latin-1") if name == "SHORT_BINSTRING" else int.from_bytes(raw, "little", signed=True))
            elif name == "TUPLE":
                stack.append(self.node("tuple", tuple(pop_mark())))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(pop() for _ in range(n))[::-1]
                stack.append(self.node("tuple", items))
            elif name == "REDUCE" or name == "NEWOBJ":
                args = pop()
                made = self.node("object")
                self.contain(made, pop(), args)
                stack.append(made)
            elif name == "BINPERSID":
                stack.append(self._storage(pop()))
            elif name == "EMPTY_DICT" or name == "EMPTY_LIST" or name == "EMPTY_SET":
                stack.append(self.node(name[6:].lower()))
            elif name == "EMPTY_TUPLE":
                stack.append(self.node("tuple"))
            elif name == "SETITEM":
                value, key = pop(), pop()
                self.contain(top(), key, value)
            elif name == "APPEND":
                item = pop()
                self.contain(top(), item)
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                items = pop_mark()
                self.contain(top(), *items)
            elif name == "GLOBAL":
                stack.append(self.add_global(global_name(arg)))
            elif name == "BUILD":
                state = pop()
                self.contain(top(), state)
            elif name == "STOP":
                return pop()
            elif name in ("PROTO", "FRAME"):
                pass
            elif name in _STRINGS:
                stack.append(arg if isinstance(arg, str) else _LEAF)
            elif name in _INTS:
                stack.append(arg if isinstance(arg, int) and not isinstance(arg, bool) else _LEAF)
            elif name == "GET":
                if arg not in memo:
                    raise ScanRefused(f"it reads memo entry {arg}, which was never stored")
                stack.append(memo[arg])
            elif name == "PUT":
                memo[arg] = top()
            elif name == "MEMOIZE":
                memo[len(memo)] = top()
            elif name == "FROZENSET":
                stack.append(self.node("tuple", tuple(pop_mark())))
            elif name == "LIST" or name == "DICT":
                made = self.node(name.lower())
                self.contain(made, *pop_mark())
                stack.append(made)
            elif name == "INST":
                args = pop_mark()
                made = self.node("object")
                self.contain(made, self.add_global(global_name(arg)), *args)
                stack.append(made)
            elif name == "STACK_GLOBAL":
                qualname, module = pop(), pop()
                if isinstance(module, str) and isinstance(qualname, str):
                    stack.append(self.add_global(f"{module}.{qualname}"))
                else:
                    scan.dynamic_imports += 1
                    stack.append(self.node("global"))
            elif name == "NEWOBJ_EX":
                kwargs, args = pop(), pop()
                made = self.node("object")
                self.contain(made, pop(), args, kwargs)
                stack.append(made)
            elif name == "OBJ":
                items = pop_mark()
                made = self.node("object")
                self.contain(made, *items)
                stack.append(made)
            elif name == "PERSID":
                stack.append(self.node("storage"))
            elif name == "POP":
                if stack and stack[-1] is _MARK:
                    pop_mark()
                else:
                    pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(top())
            elif name in ("EXT1", "EXT2", "EXT4"):
                scan.dynamic_imports += 1
                stack.append(self.node("global"))
            else:  # NONE, NEWTRUE/FALSE, floats, bytes, buffers
                stack.append(_LEAF)

    def _storage(self, pid: object) -> _Node:
        made = self.node("storage")
        self.contain(made, pid)
        items = pid.items if type(pid) is _Node else ()
        if len(items) >= 5 and items[0] == "storage" and type(items[1]) is _Node and items[1].name:
            key, numel = items[2], items[4]
            if isinstance(key, str) and isinstance(numel, int):
                self.scan.storages.append(Storage(items[1].name, key, numel))
                return made
        raise ScanRefused("it refers to data outside the pickle in a form torch.save never writes")

    def finish(self) -> None:
        """Depth over the whole graph, when a container was filled after it was put in another
        (through a memo reference): its ancestors then nest deeper than any single step showed."""
        if not self.filled_late:
            return
        heights: dict[int, int] = {}
        on_path: set[int] = set()
        for root in self.nodes:
            if id(root) in heights:
                continue
            path = [(root, 0)]
            on_path.add(id(root))
            while path:
                node, i = path[-1]
                if i < len(node.kids):
                    path[-1] = (node, i + 1)
                    child = node.kids[i]
                    if id(child) not in heights and id(child) not in on_path:
                        path.append((child, 0))
                        on_path.add(id(child))
                    continue
                height = 1 + max((heights.get(id(c), 0) for c in node.kids), default=0)
                if height > self.limits.max_depth:
                    raise _limit(
                        "max_depth", self.limits, f"its containers nest more than {self.limits.max_depth} levels deep"
                    )
                heights[id(node)] = height
                on_path.discard(id(node))
                path.pop()


def global_name(text: str) -> str:
    """"module.name" of a GLOBAL / INST argument ("module name"), with the Python 2 names mapped
    to what the unpickler imports (`__builtin__ set` is `builtins.set`), as torch and pickle do."""
    module, _, name = text.partition(" ")
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    else:
        module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _limit(limit: str, limits: ScanLimits, what: str) -> ScanRefused:
    return ScanRefused(f"{what} (limit: {LIMIT_WORDS[limit]} {getattr(limits, limit):,})", limit)


def scan_pickles(data: bytes, count: int = 1, limits: ScanLimits = LIMITS, *, stop_unless_int: bool = False) -> PickleScan:
    """Scan up to `count` consecutive pickles at the start of `data` (torch's legacy format
    stores several in a row). With `stop_unless_int`, scanning ends after a first pickle whose
    value is not an integer (torch reads the rest only after a magic number). Raises ScanRefused.
    `data` may be longer than the pickles; its length counts against `max_pickle_bytes` only as
    far as the pickles reach."""
    scan = PickleScan()
    machine = _Machine(data, limits, scan)
    for index in range(count):
        try:
            value = machine.run()
        except ScanRefused as error:
            if error.limit is None and len(data) > limits.max_pickle_bytes and machine.pos >= len(data):
                raise _limit("max_pickle_bytes", limits, f"its pickle is larger than {limits.max_pickle_bytes:,} bytes") from None
            raise
        scan.end = machine.pos
        if scan.end > limits.max_pickle_bytes:
            raise _limit("max_pickle_bytes", limits, f"its pickle is larger than {limits.max_pickle_bytes:,} bytes")
        scan.values.append(value if isinstance(value, int) else None)
        if stop_unless_int and index == 0 and not isinstance(value, int):
            break
    machine.finish()
    return scan


__all__ = ["LIMITS", "LIMIT_WORDS", "PickleScan", "ScanLimits", "ScanRefused", "Storage", "scan_pickles"]
