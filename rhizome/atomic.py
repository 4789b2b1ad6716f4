"""Atomic file writes: a reader (or a killed run) never sees a half-written output.

Every output of every stage goes through these helpers: the data is written to a
temporary file in the destination folder, flushed to disk, then renamed over the
target, which POSIX and Windows both do atomically on one filesystem. Folders
(checkpoints, caches, converted models) are built the same way with :func:`write_dir`,
and swapped for an existing one in one step where the system allows (Linux). A
rewritten file keeps its permissions.
:func:`file_sha256` is the content hash that decides whether an output is stale.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import pickle
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, and setting it for a moment in a threaded server
# gives files another thread creates meanwhile mode 0666.
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit it replaces ``path``.

    A replaced file keeps its permissions (a ``chmod 600`` survives the rewrite); a new one gets those
    any new file would. On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            permissions = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            permissions = 0o666 & ~_UMASK  # mkstemp made it 0600
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut only once the folder is on disk


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike, rows) -> int:
    count = 0
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def write_pickle(path: str | os.PathLike, obj: Any) -> None:
    """Pickle plain data only; read it back with :func:`rhizome.safe_pickle.load`."""
    with atomic_open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory handles (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and give it the permissions a new file would get (mkdtemp makes 0700)."""
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc 2.28+, musl 1.2.2+
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel, or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _recover(dest: Path) -> None:
    """Undo what a run killed in the middle of a swap left: put the old folder back if ``dest`` is missing,
    then delete the replaced copies still waiting to be deleted (``.<name>.*.old.tmp``)."""
    leftovers = list(dest.parent.glob(f".{glob.escape(dest.name)}.*.old.tmp"))
    # A copy inside as <name> is one the fall-back swap had moved aside; each run recovers before it swaps,
    # so there is at most one.
    held = [leftover / dest.name for leftover in leftovers if (leftover / dest.name).is_dir()]
    if held and not dest.exists():
        os.replace(held[0], dest)
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(new: Path, dest: Path) -> None:
    """Put ``new`` in the place of the existing folder ``dest``; at every instant ``dest`` is one of them."""
    if _exchange(new, dest):
        retired = new.with_name(new.name[: -len(".tmp")] + ".old.tmp")  # ``new`` now names the old folder
        os.replace(new, retired)
        shutil.rmtree(retired, ignore_errors=True)
        return
    # Two renames leave a moment without ``dest``: a kill there leaves the old folder in ``holder``,
    # which the next write_dir (see _recover) puts back.
    holder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old.tmp", dir=dest.parent))
    os.replace(dest, holder / dest.name)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(holder / dest.name, dest)
        shutil.rmtree(holder, ignore_errors=True)
        raise
    shutil.rmtree(holder, ignore_errors=True)


def write_dir(dest: str | os.PathLike, write: Callable[[Path], None], *, keep_existing: bool = False) -> Path:
    """Call ``write(folder)`` on a temporary folder beside ``dest``, then rename it to ``dest``.

    An existing ``dest`` is swapped out whole, or, with ``keep_existing`` (content
    addressed folders another process may have just written), left as it is. A
    failure or a kill leaves ``dest`` old or new, never partial or missing (the
    swap is one step on Linux; elsewhere a kill between its two renames is undone
    by the next call), and at most hidden temporary folders beside it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _recover(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        write(tmp)
        _publish_tree(tmp)
        if dest.exists() and keep_existing:
            shutil.rmtree(tmp)
            return dest
        if dest.exists():
            _swap_in(tmp, dest)
        else:
            try:
                os.replace(tmp, dest)
            except OSError:
                if not (keep_existing and dest.exists()):  # lost a race to a writer of the same content
                    raise
                shutil.rmtree(tmp)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
