"""The formatter reuses the memory's vectors through Memory.load, and only a sound memory made with its model."""

import numpy as np

from rhizome.format.embeddings import memory_vectors
from rhizome.memory import index as faiss_index
from rhizome.memory.embedder import DEFAULT_EMBEDDING_MODEL
from rhizome.memory.store import VECTORS_FILE, Memory


def saved_memory(folder, model=DEFAULT_EMBEDDING_MODEL):
    vectors = np.eye(3, 4, dtype=np.float32)
    items = [{"text": f"text {i}", "text_hash": f"h{i}"} for i in range(3)]
    Memory(vectors, items, faiss_index.build_index(vectors), {"embedding_model": model}).save(folder)
    return folder / VECTORS_FILE


def test_vectors_of_a_memory_made_with_the_same_model_are_reused(tmp_path):
    known = memory_vectors(saved_memory(tmp_path), DEFAULT_EMBEDDING_MODEL)
    assert sorted(known) == ["h0", "h1", "h2"] and np.array_equal(known["h1"], np.eye(3, 4)[1])
    assert memory_vectors(saved_memory(tmp_path / "other", "some/other-model"), DEFAULT_EMBEDDING_MODEL) == {}
    assert memory_vectors(tmp_path / "none" / VECTORS_FILE, DEFAULT_EMBEDDING_MODEL) == {}


def test_a_damaged_memory_is_not_reused_and_says_why(tmp_path, caplog):
    vectors = saved_memory(tmp_path)
    vectors.write_bytes(vectors.read_bytes()[:60])  # cut short, as by a full disk
    assert memory_vectors(vectors, DEFAULT_EMBEDDING_MODEL) == {}
    assert "not reused" in caplog.text and "batch_embedder.py" in caplog.text
