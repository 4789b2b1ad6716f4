"""Memory.load on memory files that are damaged or were crafted: a named error or a rebuilt index, never a crash."""

import logging
import pickle
import struct

import numpy as np
import pytest

from rhizome.memory import index as faiss_index
from rhizome.memory.store import INDEX_FILE, METADATA_FILE, VECTORS_FILE, Hit, Memory, MemoryFilesError
from tests.test_safe_pickle import PointerArray, run_python


def items(n):
    return [{"id": f"chatgpt:c:{i}", "text": f"text {i}", "text_hash": f"h{i}", "source": "chatgpt", "role": "user",
             "timestamp": 1.7e9, "conversation_id": "c", "conversation_title": "Bees", "message_index": i,
             "file": "conversations.json", "part": 0, "parts": 1} for i in range(n)]


def write_memory(folder, n=12, dim=8, exact_max=2_000):
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = {"embedding_model": "sentence-transformers/all-MiniLM-L6-v2", "exact_index_max": exact_max}
    Memory(vectors, items(n), faiss_index.build_index(vectors, exact_max=exact_max), config).save(folder)
    return vectors


def test_sound_memory_loads_with_its_saved_index(tmp_path, caplog):
    vectors = write_memory(tmp_path, n=300, exact_max=100)
    memory = Memory.load(tmp_path)
    assert memory.index.ntotal == 300 and "HNSW" in faiss_index.describe(memory.index)
    assert memory.index.search(vectors[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_metadata_with_a_numpy_pointer_array_is_refused_not_read(tmp_path):
    write_memory(tmp_path)
    crafted = items(12)
    crafted[0]["conversation_title"] = PointerArray()
    (tmp_path / METADATA_FILE).write_bytes(pickle.dumps(crafted, protocol=5))
    done = run_python(
        "from rhizome.memory.store import Hit, Memory, MemoryFilesError\n"
        f"try:\n    memory = Memory.load({str(tmp_path)!r})\n"
        "except MemoryFilesError as exc:\n    print('refused:', exc)\n"
        "else:\n    print(Hit(1.0, 'x', memory.metadata[0]).source_label())\n"
    )
    assert done.returncode == 0, f"child ended with {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.startswith("refused:") and METADATA_FILE in done.stdout and "batch_embedder.py" in done.stdout


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "damaged"),
    (lambda data: b"", "damaged"),
    (lambda data: pickle.dumps({"not": "a list"}), "holds a dict, not a list"),
    (lambda data: pickle.dumps(["text"] * 12), "item 0 is a str, not a dict"),
    (lambda data: pickle.dumps([{"id": "x"}] * 12), "item 0 has no text"),
    (lambda data: pickle.dumps([{**item, "conversation_title": ["a"]} for item in items(12)]),
     "item 0 has a list as conversation_title"),
    (lambda data: pickle.dumps([{**item, "text_hash": {"a": 1}} for item in items(12)]),
     "item 0 has a dict as text_hash"),
    (lambda data: pickle.dumps([{**item, "timestamp": "yesterday"} for item in items(12)]),
     "item 0 has a str as timestamp"),
], ids=["cut in half", "empty", "not a list", "item not a dict", "no text", "title a list", "hash a dict",
        "timestamp a string"])
def test_damaged_metadata_is_a_named_memory_error(tmp_path, damage, message):
    write_memory(tmp_path)
    path = tmp_path / METADATA_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(MemoryFilesError, match=message) as info:
        Memory.load(tmp_path)
    assert METADATA_FILE in str(info.value) and "batch_embedder.py" in str(info.value)


def npy_header(shape, descr="<f4"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize("content, message", [
    (lambda: npy_header((10**12, 8)) + b"\x00" * 64, "not a readable .npy"),  # claims 32 TB
    (lambda: npy_header((12,), "|O") + b"\x00" * 96, "not a readable .npy"),
    (lambda: npy_header((12, 8), "<f8") + b"\x00" * 768, "float64 array of shape"),
    (lambda: npy_header((12, 8), ">f4") + b"\x00" * 384, "not rows of float32"),
    (lambda: npy_header((96,)) + b"\x00" * 384, r"shape \(96,\)"),
    (lambda: npy_header((11, 8)) + b"\x00" * 352, "has 12 items but .* has 11 vectors"),
    (lambda: b"PK\x03\x04garbage", "not a readable .npy"),
], ids=["claims 32 TB", "object array", "float64", "big-endian", "one row", "row count", "garbage"])
def test_damaged_vectors_are_a_named_memory_error(tmp_path, content, message):
    write_memory(tmp_path)
    (tmp_path / VECTORS_FILE).write_bytes(content())
    with pytest.raises(MemoryFilesError, match=message) as info:
        Memory.load(tmp_path)
    assert VECTORS_FILE in str(info.value) and "batch_embedder.py" in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not readable JSON"),
    ("[]", "is not a memory config"),
    ('{"summary": {}}', "is not a memory config"),
    ('{"embedding_model": "m", "exact_index_max": "many"}', "is not a memory config"),
], ids=["not json", "a list", "no model", "threshold a string"])
def test_damaged_config_is_a_named_memory_error(tmp_path, text, message):
    write_memory(tmp_path)
    (tmp_path / "memory_config.json").write_text(text)
    with pytest.raises(MemoryFilesError, match=f"memory_config.json {message}.*batch_embedder.py"):
        Memory.load(tmp_path)


def hnsw_link_offset(data: bytes) -> int:
    """Where the neighbours array of a serialised IndexHNSWFlat starts (after its header and four arrays)."""
    offset = 37
    for itemsize in (8, 4, 4, 8):
        (count,) = struct.unpack_from("<Q", data, offset)
        offset += 8 + count * itemsize
    return offset + 8


def flat_header(data: bytes, dim: int, count: int) -> bytes:
    return data[:4] + struct.pack("<iq", dim, count) + data[16:]


@pytest.mark.parametrize("damage, why", [
    (lambda data: data[:100], "cut short"),
    (lambda data: b"\x00" * len(data), "does not start like a FAISS index"),
    (lambda data: b"IxF2" + data[4:], "does not start like a FAISS index"),  # an L2 index: wrong scores
    (lambda data: flat_header(data, 8, 13), "13 vectors of 8 dimensions, the memory has 12 of 8"),
    (lambda data: flat_header(data, 4, 24), "24 vectors of 4 dimensions, the memory has 12 of 8"),
    (lambda data: data[:37] + b"\xff" * 8 + data[45:], "cut short"),  # a vector length of 2**64 - 1
    (lambda data: data + b"\x00", "1 bytes follow the index"),
], ids=["truncated", "zeros", "L2 index", "count", "dimensions", "giant length", "trailing bytes"])
def test_damaged_exact_index_is_rebuilt_from_the_vectors(tmp_path, caplog, damage, why):
    vectors = write_memory(tmp_path)
    path = tmp_path / INDEX_FILE
    path.write_bytes(damage(path.read_bytes()))
    memory = Memory.load(tmp_path)
    assert memory.index.search(vectors[:3], 1)[1][:, 0].tolist() == [0, 1, 2]
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"{path} is damaged" in warning and why in warning and "rebuilt from memory_texts.npy" in warning


def test_hnsw_index_with_a_link_out_of_range_is_rebuilt_not_searched(tmp_path):
    write_memory(tmp_path, n=300, exact_max=100)
    path = tmp_path / INDEX_FILE
    data = bytearray(path.read_bytes())
    links = hnsw_link_offset(bytes(data))
    data[links:links + 4] = struct.pack("<i", 50_000_000)  # node 0's first link: far outside the vectors
    path.write_bytes(bytes(data))
    done = run_python(
        "import numpy as np\nfrom rhizome.memory.store import Memory\n"
        f"memory = Memory.load({str(tmp_path)!r})\n"
        "print('found', memory.index.search(memory.vectors[:50], 10)[1][:, 0].tolist() == list(range(50)))\n"
    )
    assert done.returncode == 0, f"child ended with {done.returncode}: {done.stderr[-500:]}"
    assert "found True" in done.stdout and "HNSW graph is inconsistent" in done.stderr


def test_hnsw_link_to_a_node_without_that_level_is_caught(tmp_path):
    write_memory(tmp_path, n=300, exact_max=100)
    path = tmp_path / INDEX_FILE
    data = path.read_bytes()
    index = faiss_index.load_index(path, dim=8, count=300)
    levels = np.array([index.hnsw.levels.at(i) for i in range(300)])
    offsets = [index.hnsw.offsets.at(i) for i in range(301)]
    upper, ground = int(np.argmax(levels)), int(np.argmin(levels))
    assert levels[upper] > 1 and levels[ground] == 1
    links = hnsw_link_offset(data)
    # The upper node's first link on level 1 (its slots after level 0's 64) now leads to a level-0-only node.
    slot = links + 4 * (offsets[upper] + index.hnsw.cum_nneighbor_per_level.at(1))
    crafted = data[:slot] + struct.pack("<i", ground) + data[slot + 4:]
    with pytest.raises(faiss_index.IndexFileError, match="HNSW graph is inconsistent"):
        faiss_index.check_index_bytes(crafted, path, dim=8, count=300)


def test_source_label_of_a_time_no_calendar_has_goes_without_a_date():
    for when in (1e300, float("nan"), -1e20):
        label = Hit(1.0, "x", {**items(1)[0], "timestamp": when}).source_label()
        assert label == "chatgpt: Bees [user]"
