import collections
import datetime
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rhizome import atomic, safe_pickle

ROOT = Path(__file__).resolve().parents[1]


class _ObjectDtype:
    def __reduce__(self):
        return np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0x3D)


class PointerArray:
    """Pickles as a crafted array that names only numpy's array globals (``_reconstruct``, ``ndarray``,
    ``dtype``): an object dtype whose state drops its list-pickle flag, so the array's raw bytes (0x4141...)
    are taken as a pointer to a Python object, which reading the array dereferences."""

    def __reduce__(self):
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                (1, (1,), _ObjectDtype(), False, (0x4141414141414141).to_bytes(8, "little")))


def run_python(code: str) -> subprocess.CompletedProcess:
    """In a child process, so that a crash (SIGSEGV) fails the test instead of ending pytest."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_round_trips(tmp_path, protocol):
    data = [
        {"text": "Grüße 🌱", "score": 0.5, "n": 3, "ok": True, "none": None, "pages": (1, 2), "tags": {"a"}},
        collections.Counter({"bees": 3}),
        collections.defaultdict(list, {"x": [1]}),
        collections.OrderedDict(a=1),
        datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc),
        b"\x00\xff", bytearray(b"x"), 10**40, frozenset({(1, 2)}),
    ]
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = safe_pickle.load(tmp_path / "m.pkl")
    assert loaded == data
    assert loaded[2].default_factory is list


def test_atomic_write_pickle_round_trips(tmp_path):
    atomic.write_pickle(tmp_path / "m.pkl", [{"text": "hi", "timestamp": 1.5}])
    assert safe_pickle.load(tmp_path / "m.pkl") == [{"text": "hi", "timestamp": 1.5}]


@pytest.mark.parametrize("value", [np.arange(4, dtype=np.float32), np.float32(0.25), np.dtype("f4")])
def test_numpy_objects_are_refused(tmp_path, value):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps([{"text": "hi", "score": value}]))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"m\.pkl: refusing to load 'numpy"):
        safe_pickle.load(path)


def test_numpy_object_pointer_pickle_is_refused_not_dereferenced(tmp_path):
    path = tmp_path / "memory_metadata.pkl"
    path.write_bytes(pickle.dumps([{"text": "hi", "title": PointerArray()}], protocol=5))
    done = run_python(
        "import sys\nfrom rhizome import safe_pickle\n"
        f"try:\n    items = safe_pickle.load({str(path)!r})\n"
        "except safe_pickle.UnsafePickleError as exc:\n    print('refused:', exc)\n    sys.exit(0)\n"
        "print(bool(items[0]['title']))\n"
    )
    assert done.returncode == 0, f"child ended with {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.startswith("refused:") and "memory_metadata.pkl" in done.stdout and "numpy" in done.stdout


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_crafted_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "memory_metadata.pkl"
    path.write_bytes(pickle.dumps([{"text": "hi"}, _Exploit()]))
    with pytest.raises(safe_pickle.UnsafePickleError) as info:
        safe_pickle.load(path)
    message = str(info.value)
    assert str(path) in message and "system" in message


def test_arbitrary_class_is_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(pytest.MonkeyPatch()))
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.load(path)


def test_truncated_pickle_names_the_file_and_the_remedy(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(list(range(100)))[:20])
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"broken\.pkl: damaged.*EOFError.*Do this"):
        safe_pickle.load(path, remedy="Do this.")


PROTO5 = b"\x80\x05"


DAMAGED = [
    # a length of 2**62 characters: the unpickler asks for that much memory
    ("giant string", PROTO5 + b"\x8d" + struct.pack("<Q", 2**62) + b"abc.", "MemoryError"),
    ("giant frame", PROTO5 + b"\x95" + struct.pack("<Q", 2**62) + b"N.", "MemoryError"),
    ("empty file", b"", "EOFError"),
    ("no STOP", PROTO5 + b"N", "EOFError"),
    ("unknown opcode", PROTO5 + b"\xff.", "KeyError"),
    ("reduce of a non-callable", PROTO5 + b"K\x01)R.", "TypeError"),
    ("memo key never stored", PROTO5 + b"h\x07.", "Memo value not found"),
    ("int() of a non-number", PROTO5 + b"\x8c\x08builtins\x8c\x03int\x93\x8c\x01x\x85R.", "ValueError"),
    ("set item on a list", PROTO5 + b"]K\x01K\x02s.", "IndexError"),
]


@pytest.mark.parametrize("name, data, error", DAMAGED, ids=[case[0] for case in DAMAGED])
def test_every_failure_inside_load_is_the_one_named_error(tmp_path, name, data, error):
    path = tmp_path / "semantic_memory.pkl"
    path.write_bytes(data)
    with pytest.raises(safe_pickle.UnsafePickleError, match=rf"semantic_memory\.pkl: damaged.*{error}") as info:
        safe_pickle.load(path)
    assert "rerunning the stage that wrote it" in str(info.value), name


def test_deeply_nested_tuple_is_refused_before_it_is_hashed(tmp_path):
    # {((((None,),),)...): None} a million deep: hashing the key overflows the C stack (a crash, not an error)
    path = tmp_path / "memory_metadata.pkl"
    path.write_bytes(PROTO5 + b"}N" + b"\x85" * 1_000_000 + b"Ns.")
    done = run_python(
        "from rhizome import safe_pickle\n"
        f"try:\n    safe_pickle.load({str(path)!r})\n"
        "except safe_pickle.UnsafePickleError as exc:\n    print('refused:', exc)\n"
    )
    assert done.returncode == 0, f"child ended with {done.returncode}: {done.stderr[-500:]}"
    assert "refused:" in done.stdout and "nested more than" in done.stdout


@pytest.mark.parametrize("level", [
    b"h\x00\x85",  # (previous,)
    b"(]h\x00ai" + b"builtins\ntuple\n",  # INST: tuple([previous])
    b"\x8c\x08builtins\x8c\x05tuple\x93]h\x00a\x85R",  # REDUCE: tuple([previous])
], ids=["TUPLE1", "INST", "REDUCE"])
def test_tuples_nested_deeper_than_any_file_holds_are_refused_however_they_are_built(tmp_path, level):
    path = tmp_path / "m.pkl"
    path.write_bytes(PROTO5 + b"Nq\x000" + (level + b"q\x000") * 101 + b"h\x00.")  # memo 0: the latest level
    with pytest.raises(safe_pickle.UnsafePickleError, match="nested more than 100 deep"):
        safe_pickle.load(path)


def test_copies_that_expand_far_beyond_the_file_are_refused(tmp_path):
    # A 100,000-item list, then list() of it 1,000 times through the memo: 800 MB of copies from a 0.2 MB file.
    data = bytearray(PROTO5 + b"\x8c\x08builtins\x8c\x04list\x93\x94(")  # memo 0: list
    data += b"K\x01" * 100_000 + b"l\x94"  # memo 1: the list
    data += b"(" + b"h\x00h\x01\x85R" * 1_000 + b"l."
    path = tmp_path / "m.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(safe_pickle.UnsafePickleError, match="expands far beyond its own size"):
        safe_pickle.load(path)


@pytest.mark.parametrize("call", [b"\x8c\x08builtins\x8c\x05bytes\x93J\x00\x00\x00\x10\x85R.",
                                  b"\x8c\x08builtins\x8c\x03str\x93]\x85R."], ids=["bytes(2**28)", "str([])"])
def test_constructor_calls_no_writer_makes_are_refused(tmp_path, call):
    path = tmp_path / "m.pkl"
    path.write_bytes(PROTO5 + call)
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused"):
        safe_pickle.load(path)
