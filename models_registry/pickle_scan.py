"""What a `.bin` checkpoint's pickle would ask to import, read opcode by opcode without running any of it.

The trainer loads `.bin` weights with torch.load(weights_only=True), whose unpickler accepts a fixed set of opcodes
and of globals (tensors, storages, dtypes, OrderedDict...). A checkpoint outside that set is refused at load time;
this scan finds the same refusal when the model is checked, so a project using it is refused on save instead
(check_bin gives the verdict as a Problem).
"""

from __future__ import annotations

import functools
import io
import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from models_registry.regular_files import open_regular_file
from mtm.shared.problems import Problem

# A pickle larger than this is not a state dict's (a 70B model's data.pkl is a few MB); not read further.
MAX_PICKLE_BYTES = 64 * 1024 * 1024
# The opcodes torch's weights_only unpickler implements; it refuses any other.
WEIGHTS_ONLY_OPCODES = frozenset(
    {
        "PROTO",
        "STOP",
        "GLOBAL",
        "NEWOBJ",
        "REDUCE",
        "BUILD",
        "APPEND",
        "APPENDS",
        "SETITEM",
        "SETITEMS",
        "MARK",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "NONE",
        "NEWFALSE",
        "NEWTRUE",
        "EMPTY_TUPLE",
        "EMPTY_LIST",
        "EMPTY_DICT",
        "EMPTY_SET",
        "BININT",
        "BININT1",
        "BININT2",
        "BINFLOAT",
        "BINUNICODE",
        "SHORT_BINSTRING",
        "BINPERSID",
        "BINGET",
        "LONG_BINGET",
        "BINPUT",
        "LONG_BINPUT",
        "LONG1",
    }
)
# torch.save's legacy (non-zip) format: five pickles (magic number, protocol, system info, the object, storage keys)
# followed by raw storage bytes, which are never read here.
LEGACY_PICKLES = 5
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
ZIP_MAGIC = b"PK\x03\x04"


@functools.lru_cache(maxsize=1)
def allowed_globals() -> frozenset[str]:
    """The globals torch.load(weights_only=True) accepts by default, from the installed torch itself."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return frozenset(_get_allowed_globals())


class PickleTooLarge(ValueError):
    pass


class _Bounded:
    """A read-only view of a file that refuses to read past `limit` bytes (a hostile length prefix stays cheap)."""

    def __init__(self, fh: BinaryIO, limit: int) -> None:
        self._fh, self._limit, self._start = fh, limit, fh.tell()

    def _room(self, n: int) -> int:
        left = self._limit - (self._fh.tell() - self._start)
        if n > left:
            raise PickleTooLarge(f"its pickle is larger than {self._limit >> 20} MiB")
        return n

    def read(self, n: int) -> bytes:
        return self._fh.read(self._room(n))

    def readline(self) -> bytes:
        left = self._limit - (self._fh.tell() - self._start)
        line = self._fh.readline(left + 1)
        if len(line) > left:
            raise PickleTooLarge(f"its pickle is larger than {self._limit >> 20} MiB")
        return line

    def tell(self) -> int:
        return self._fh.tell()


@dataclass
class PickleScan:
    globals_: set[str] = field(default_factory=set)
    opcodes: set[str] = field(default_factory=set)  # those weights_only does not implement

    def refused_globals(self) -> list[str]:
        """The imports weights_only would refuse: classes or functions that unpickling would call."""
        return sorted(self.globals_ - allowed_globals())


def _global_name(module: str, name: str) -> str:
    if (module, name) in NAME_MAPPING:  # Python 2 names, mapped as torch maps them
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def scan_pickle(stream, scan: PickleScan) -> object:
    """Walk one pickle (to its STOP) and record its globals and unsupported opcodes. Nothing is executed.
    Returns the first argument pushed (a bare number's value, for the legacy format's magic number)."""
    recent: list[object] = []  # the last two pushed arguments, to name a STACK_GLOBAL's target
    first: object = None
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            scan.globals_.add(_global_name(module, name))
        elif opcode.name == "STACK_GLOBAL":
            if len(recent) == 2 and all(isinstance(v, str) for v in recent):
                scan.globals_.add(_global_name(*recent))
            scan.opcodes.add(opcode.name)
        elif opcode.name not in WEIGHTS_ONLY_OPCODES:
            scan.opcodes.add(opcode.name)
        if opcode.name not in ("PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            recent = (recent + [arg])[-2:]
            if first is None:
                first = arg
    return first


def scan_zip_checkpoint(path: Path) -> PickleScan:
    """The data.pkl of a torch.save zip archive. Raises zipfile.BadZipFile, ValueError or OSError when unreadable."""
    scan = PickleScan()
    with open_regular_file(path) as archive, zipfile.ZipFile(archive) as zf:
        names = [i for i in zf.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
        if not names:
            raise zipfile.BadZipFile("no data.pkl inside")
        if names[0].file_size > MAX_PICKLE_BYTES:
            raise PickleTooLarge(f"its pickle is larger than {MAX_PICKLE_BYTES >> 20} MiB")
        with zf.open(names[0]) as fh:
            scan_pickle(io.BytesIO(fh.read(MAX_PICKLE_BYTES + 1)), scan)
    return scan


def scan_legacy_checkpoint(path: Path) -> PickleScan:
    """The leading pickles of a legacy torch.save file. Raises ValueError or OSError when they are not one."""
    scan = PickleScan()
    with open_regular_file(path) as raw:
        bounded = _Bounded(raw, MAX_PICKLE_BYTES)
        if scan_pickle(bounded, scan) != LEGACY_MAGIC:
            raise ValueError("not a torch.save file (no magic number)")
        for _ in range(LEGACY_PICKLES - 1):
            scan_pickle(bounded, scan)
    return scan


def _scan_bin(path: Path, full: bool) -> PickleScan:
    """The checkpoint's pickle, read in full for weights; for other .bin files only their kind is checked.
    The kind is told by the first bytes, as torch.load tells it (a zip found only at the end is not one to torch)."""
    with open_regular_file(path) as fh:
        head = fh.read(4)
    if head == ZIP_MAGIC:
        if full:
            return scan_zip_checkpoint(path)
        with open_regular_file(path) as archive, zipfile.ZipFile(archive) as zf:
            if not any(n.endswith("data.pkl") for n in zf.namelist()):
                raise zipfile.BadZipFile("no data.pkl inside")
        return PickleScan()
    if head[:1] != b"\x80":
        raise ValueError("not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    return scan_legacy_checkpoint(path) if full else PickleScan()


def check_bin(rel: str, path: Path, *, loaded: bool, corrupt_hint: str) -> Problem | None:
    """A .bin file's problem: unreadable, or (for weights, `loaded`) a pickle weights_only would refuse."""
    try:
        scan = _scan_bin(path, full=loaded)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return Problem(
            "weights_invalid",
            f"Model format invalid: weights file {rel} is corrupt: {exc}.",
            corrupt_hint,
        )
    remedy = (
        "Use a copy of the model with .safetensors weights (most Hub models ship them), or convert the .bin file to "
        "safetensors on a trusted machine (load it there, save it with safetensors), then validate the model again."
    )
    if refused := scan.refused_globals():
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        return Problem(
            "weights_unsafe",
            f"Model format invalid: weights file {rel} holds more than tensors (it imports {shown}). Loading it "
            "could run code, so torch.load(weights_only=True) refuses it and training would fail.",
            remedy,
        )
    if scan.opcodes:
        return Problem(
            "weights_unsafe",
            f"Model format invalid: weights file {rel} uses pickle instructions that torch.load(weights_only=True) "
            f"does not accept ({', '.join(sorted(scan.opcodes))}), so training would fail to load it.",
            remedy + " Saving it again with torch.save's default pickle protocol (2) also works.",
        )
    return None
