"""Memory.add / Memory.save: appending items to a memory that batch_embedder.py wrote, with the shipped embedder."""

import json

import faiss
import numpy as np
import pytest

from rhizome.memory.embedder import text_key
from rhizome.memory.store import Memory

pytestmark = pytest.mark.slow

TEXTS = ["Bees need water near the hive.", "A worn chain skips on the cassette.", "Oyster mushrooms like humidity."]


def items(texts, start=0):
    return [{"id": f"custom:c:{start + i}", "text": t, "text_hash": text_key(t), "source": "custom", "role": "user",
             "timestamp": None, "part": 0, "parts": 1} for i, t in enumerate(texts)]


def test_added_items_are_embedded_saved_and_searchable_after_load(tmp_path):
    memory = Memory.empty()
    memory.add(items(TEXTS))
    memory.config["exact_index_max"] = 4  # as batch_embedder.py saves it
    memory.save(tmp_path)
    first = np.load(tmp_path / "memory_texts.npy")

    loaded = Memory.load(tmp_path)
    assert isinstance(loaded.index, faiss.IndexFlatIP)
    loaded.add(items(["Sourdough starter wants feeding daily.", "Rain makes the bees stay home."], start=3))
    loaded.save(tmp_path)

    again = Memory.load(tmp_path)
    vectors = np.load(tmp_path / "memory_texts.npy")
    assert vectors.shape == (5, 384) and again.index.ntotal == 5
    np.testing.assert_array_equal(vectors[:3], first)  # existing vectors are kept, not recomputed
    np.testing.assert_allclose(vectors[3], again.embed(["Sourdough starter wants feeding daily."])[0], atol=1e-5)
    assert isinstance(again.index, faiss.IndexHNSWFlat)  # grew past exact_index_max: switched as a rebuild would
    assert again.search("how often do I feed my sourdough?", k=1)[0].metadata["id"] == "custom:c:3"
    assert json.loads((tmp_path / "memory_config.json").read_text())["summary"] == {"items": 5, "appended_items": 5}
    assert not list(tmp_path.glob(".*.tmp"))
