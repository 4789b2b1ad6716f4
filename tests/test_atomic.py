import ctypes
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rhizome import atomic
from tests.test_safe_pickle import run_python


def test_write_json_replaces_whole_file(tmp_path):
    target = tmp_path / "out" / "data.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"b": "ü"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": "ü"}
    assert os.listdir(target.parent) == ["data.json"]  # no temp file left behind


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.jsonl"
    atomic.write_jsonl(target, [{"n": 1}])

    def rows():
        yield {"n": 2}
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        atomic.write_jsonl(target, rows())
    assert target.read_text() == '{"n": 1}\n'
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_write_npy_round_trip(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic.write_npy(tmp_path / "v.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), array)


def test_atomic_open_rejects_read_and_append(tmp_path):
    with pytest.raises(ValueError):
        with atomic.atomic_open(tmp_path / "x", "a"):
            pass


def test_outputs_get_normal_file_permissions(tmp_path):
    atomic.write_text(tmp_path / "t.txt", "x")
    with open(tmp_path / "plain.txt", "w"):
        pass
    assert mode(tmp_path / "t.txt") == mode(tmp_path / "plain.txt")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    target = tmp_path / "memory_metadata.pkl"
    atomic.write_pickle(target, [1])
    os.chmod(target, 0o600)  # the user's choice: the memory is private
    atomic.write_pickle(target, [1, 2])
    assert mode(target) == 0o600


def test_the_folder_is_flushed_after_the_rename_so_the_new_file_survives_a_power_cut(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.write_json(tmp_path / "memory_config.json", {"a": 1})
    assert events == ["fsync file", "rename", "fsync folder"]


def test_a_thread_creating_a_file_during_a_write_gets_the_normal_mode(tmp_path, monkeypatch):
    with open(tmp_path / "plain", "w"):
        pass
    expected = mode(tmp_path / "plain")
    real_umask = os.umask
    modes = []

    def umask_while_another_thread_creates_a_file(mask):
        previous = real_umask(mask)

        def create():  # the chat server's other threads: a file created at this very moment
            path = tmp_path / f"other-{len(modes)}"
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
            modes.append(mode(path))

        other = threading.Thread(target=create)
        other.start()
        other.join()
        return previous

    monkeypatch.setattr(os, "umask", umask_while_another_thread_creates_a_file)
    atomic.write_text(tmp_path / "memory_config.json", "{}")
    atomic.write_dir(tmp_path / "checkpoint", write_marker("x"))
    assert modes == [expected] * len(modes), [oct(m) for m in modes]


def write_marker(text):
    def write(folder):
        (folder / "marker.txt").write_text(text)
    return write


def old_copies(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".old.tmp"))


def test_swap_without_exchange_restores_the_old_folder_when_the_second_rename_fails(tmp_path, monkeypatch):
    dest = tmp_path / "checkpoint-5"
    atomic.write_dir(dest, write_marker("old"))
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False, raising=False)  # a system without renameat2
    replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == dest and not Path(src).parent.name.endswith(".old.tmp"):
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_dir(dest, write_marker("new"))
    assert (dest / "marker.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["checkpoint-5"]


def test_a_filesystem_without_exchange_falls_back_to_two_renames(tmp_path, monkeypatch):
    def renameat2_unsupported(*args):
        ctypes.set_errno(errno.EINVAL)
        return -1

    dest = tmp_path / "model"
    atomic.write_dir(dest, write_marker("old"))
    monkeypatch.setattr(atomic, "_RENAMEAT2", renameat2_unsupported)
    atomic.write_dir(dest, write_marker("new"))
    assert (dest / "marker.txt").read_text() == "new" and os.listdir(tmp_path) == ["model"]


KILL_BETWEEN_RENAMES = """
import os, signal
from pathlib import Path
from rhizome import atomic
dest = Path({dest!r})
atomic._exchange = lambda a, b: False  # a system without renameat2: two renames
replace = os.replace
def replace_then_die(src, dst):
    if Path(dst) == dest:  # the old folder is already out of the way: the moment without a destination
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
os.replace = replace_then_die
atomic.write_dir(dest, lambda folder: (folder / "marker.txt").write_text("new"))
"""


def test_kill_between_the_two_renames_is_undone_by_the_next_run(tmp_path):
    dest = tmp_path / "final"
    atomic.write_dir(dest, write_marker("old"))
    done = run_python(KILL_BETWEEN_RENAMES.format(dest=str(dest)))
    assert done.returncode == -signal.SIGKILL, done.stderr[-500:]
    assert not dest.exists() and old_copies(tmp_path)  # what a killed run leaves

    def fail(folder):
        raise RuntimeError("this run fails too")

    with pytest.raises(RuntimeError):
        atomic.write_dir(dest, fail)
    assert (dest / "marker.txt").read_text() == "old" and not old_copies(tmp_path)


KILL_WHILE_DELETING_THE_OLD_COPY = """
import os, shutil, signal
from pathlib import Path
from rhizome import atomic
shutil.rmtree = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
atomic.write_dir(Path({dest!r}), lambda folder: (folder / "marker.txt").write_text("new"))
"""


def test_kill_after_the_swap_leaves_the_new_folder_and_the_next_run_deletes_the_old_copy(tmp_path):
    dest = tmp_path / "best"
    atomic.write_dir(dest, write_marker("old"))
    done = run_python(KILL_WHILE_DELETING_THE_OLD_COPY.format(dest=str(dest)))
    assert done.returncode == -signal.SIGKILL, done.stderr[-500:]
    assert (dest / "marker.txt").read_text() == "new" and old_copies(tmp_path)
    atomic.write_dir(dest, write_marker("newer"))
    assert (dest / "marker.txt").read_text() == "newer" and os.listdir(tmp_path) == ["best"]


WATCH = """
import os, sys, time
dest, misses, looks = sys.argv[1], 0, 0
print("watching", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    looks += 1
    misses += not os.path.isdir(dest)
print(misses, looks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_readers_always_find_the_folder_while_it_is_replaced(tmp_path):
    dest = tmp_path / "export"
    atomic.write_dir(dest, write_marker("0"))
    watcher = subprocess.Popen([sys.executable, "-c", WATCH, str(dest), "3"], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout.readline().strip() == "watching"
    for n in range(1, 200):
        atomic.write_dir(dest, write_marker(str(n)))
    misses, looks = map(int, watcher.communicate(timeout=60)[0].split())
    assert looks > 1000 and misses == 0, f"{misses} of {looks} looks found no folder"
    assert (dest / "marker.txt").read_text() == "199"
