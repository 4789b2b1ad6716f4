"""Loading ``.pkl`` files without letting them run code or corrupt memory.

The original tool stores metadata and theme statistics as pickles
(``memory_metadata.pkl``, ``semantic_memory.pkl``). A pickle can name any
importable callable and have it called on load, so a file that came from
somewhere else could run arbitrary code. These files hold plain Python data, so
we load them through an allow-list of plain types only:

- No numpy global at all: numpy's ``dtype`` and ``ndarray`` accept a state that
  turns raw bytes into object pointers, which a crafted file uses to crash the
  reader (or worse). RhizomeML writes no numpy objects into these files.
- The allowed constructors are called through :class:`_Constructor`, which
  refuses what no real writer produces (the repr of a container as a string,
  ``bytes(n)``) and caps how much the file may expand through copies, so a small
  file cannot make a copy of a large list over and over until memory runs out.

Every failure, refused or damaged, is one :class:`UnsafePickleError` naming the
file and what to do about it.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import datetime
import io
import os
import pickle
from pathlib import Path
from typing import Any

from rhizome.errors import UserError

_PLAIN_SCALARS = (str, bytes, bytearray, int, float, complex, bool, type(None))
_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset, collections.deque)


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A ``.pkl`` file was not loaded: it asks for something outside the allow-list, or it is damaged.

    The message names the file, what was wrong and what to do."""


def _latin1_encode(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it to write bytes (a datetime's state), and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode of a {type(text).__name__} to {encoding!r}")
    return text.encode("latin-1")


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,
    **{("builtins", name): getattr(builtins, name)
       for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                    "int", "float", "complex", "bool")},
    **{("collections", name): getattr(collections, name)
       for name in ("OrderedDict", "Counter", "defaultdict", "deque")},
    **{("datetime", name): getattr(datetime, name)
       for name in ("datetime", "date", "time", "timedelta", "timezone")},
}

DEFAULT_REMEDY = ("Regenerate it by rerunning the stage that wrote it, or delete it if you do not know where "
                  "it came from.")


class _Budget:
    """Elements the file may still create by copying; a genuine file copies each element at most once."""

    def __init__(self, limit: int):
        self.left = limit

    def charge(self, amount: int, source: str) -> None:
        self.left -= amount
        if self.left < 0:
            raise UnsafePickleError(f"{source}: refused: it expands far beyond its own size when loaded "
                                    "(a crafted file can fill the memory this way)")


class _Constructor:
    """An allow-listed type as the unpickler calls it: copies are charged to the budget."""

    # Read-only: a BUILD opcode can set the attributes of anything on the unpickler's stack, this included.
    __slots__ = ("target", "_budget", "_source")

    def __init__(self, target: type, budget: _Budget, source: str):
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "_budget", budget)
        object.__setattr__(self, "_source", source)

    def __setattr__(self, name, value):
        raise AttributeError(f"{name} is read-only")

    def __call__(self, *args):
        args = tuple(arg.target if isinstance(arg, _Constructor) else arg for arg in args)  # defaultdict(list)
        scalar_type = self.target in _PLAIN_SCALARS
        for arg in args:
            if scalar_type and not isinstance(arg, _PLAIN_SCALARS):
                raise UnsafePickleError(f"{self._source}: refused: {self.target.__name__}() of a "
                                        f"{type(arg).__name__} (a plain data file never holds one)")
            if self.target in (bytes, bytearray) and isinstance(arg, int):
                raise UnsafePickleError(f"{self._source}: refused: {self.target.__name__}({arg}) (a plain data "
                                        "file never holds one)")
            self._budget.charge(len(arg) if isinstance(arg, _SIZED) else 1, self._source)
        return self.target(*args)


MAX_TUPLE_DEPTH = 100


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, because it lets us measure tuples as they are built: hashing a tuple nested
    a million deep (a dict key, a set member) overflows the C stack. It is slower than the C one (1.7 s
    against 0.2 s for a 31 MB memory_metadata.pkl of 50,000 items)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source: str, size: int):
        super().__init__(file)
        self._source = source
        self._budget = _Budget(size + 4096)
        self._tuple_depth: dict[int, tuple[int, tuple]] = {}  # id -> (depth, the tuple, kept so ids stay unique)

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as older protocols write them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = ALLOWED_GLOBALS.get((module, name))
        if target is not None:
            return _Constructor(target, self._budget, self._source)
        raise UnsafePickleError(
            f"{self._source}: refusing to load '{module}.{name}'. RhizomeML only loads pickles of "
            "plain data (dicts, lists, strings, numbers, dates); this file asks for other code "
            "and may have been crafted to run it"
        )

    def _measure_top(self) -> None:
        top = self.stack[-1]
        if type(top) is not tuple:
            return
        depth = 1 + max((self._tuple_depth.get(id(item), (1,))[0] for item in top if type(item) is tuple),
                        default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise UnsafePickleError(f"{self._source}: refused: tuples nested more than {MAX_TUPLE_DEPTH} deep "
                                    "(a plain data file has a few levels)")
        self._tuple_depth[id(top)] = (depth, top)


def _measured(load):
    def load_and_measure(unpickler: _RestrictedUnpickler) -> None:
        load(unpickler)
        unpickler._measure_top()
    return load_and_measure


# Every opcode that can leave a new tuple on the stack (the calling ones through the ``tuple`` constructor).
for _opcode in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.REDUCE, pickle.INST, pickle.OBJ,
                pickle.NEWOBJ, pickle.NEWOBJ_EX):
    _RestrictedUnpickler.dispatch[_opcode[0]] = _measured(pickle._Unpickler.dispatch[_opcode[0]])


def _load(handle, source: str, size: int, remedy: str) -> Any:
    try:
        return _RestrictedUnpickler(handle, source, size).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{exc}. {remedy}") from None
    # Whatever an untrusted file makes the unpickler raise (EOFError, MemoryError from a giant length,
    # RecursionError, TypeError from a bad reduce...), the file is unusable: say so, with the remedy.
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise UnsafePickleError(f"{source}: damaged or not a RhizomeML file, refused ({detail}). {remedy}") from exc


def loads(data: bytes, source: str = "<bytes>", remedy: str = DEFAULT_REMEDY) -> Any:
    return _load(io.BytesIO(data), source, len(data), remedy)


def load(path: str | os.PathLike, remedy: str = DEFAULT_REMEDY) -> Any:
    """Plain data from the pickle at ``path``; :class:`UnsafePickleError` (with ``remedy``) for anything else."""
    path = Path(path)
    with open(path, "rb") as handle:
        return _load(handle, str(path), os.fstat(handle.fileno()).st_size, remedy)
