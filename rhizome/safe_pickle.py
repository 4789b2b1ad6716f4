"""Loading ``.pkl`` files without letting them run code.

The original tool stores metadata and theme statistics as pickles
(``memory_metadata.pkl``, ``semantic_memory.pkl``). A pickle can name any
importable callable and have it called on load, so a file that came from
somewhere else could run arbitrary code. We load pickles only through an
allow-list of plain data types; anything else is refused with an error that
names the file and the offending global.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", name)
        for name in (
            "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
            "int", "float", "complex", "bool", "slice", "range",
        )
    }
    | {
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        # numpy arrays and scalars: reconstructed from raw buffers, no code paths of their own.
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.dtypes", "Float32DType"),
        ("numpy.dtypes", "Float64DType"),
        ("numpy.dtypes", "Int64DType"),
        ("numpy.dtypes", "Int32DType"),
        ("numpy.dtypes", "BoolDType"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list of plain data types."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load '{module}.{name}'. RhizomeML only loads pickles of "
            "plain data (dicts, lists, strings, numbers, numpy arrays); this file asks for other code "
            "and may have been crafted to run it. Regenerate it with RhizomeML, or delete it if you "
            "do not know where it came from."
        )


def loads(data: bytes, source: str = "<bytes>") -> Any:
    return _RestrictedUnpickler(io.BytesIO(data), source).load()


def load(path: str | os.PathLike) -> Any:
    """Load a pickle of plain data from ``path``; raise :class:`UnsafePickleError` on anything else."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            return _RestrictedUnpickler(handle, str(path)).load()
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
            raise pickle.UnpicklingError(
                f"{path}: not a readable pickle ({exc}). The file is damaged or truncated; "
                "rebuild it by rerunning the stage that wrote it."
            ) from exc
