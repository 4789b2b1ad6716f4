import faiss
import numpy as np

from rhizome.memory.index import build_index, load_index, save_index


def unit_vectors(n, dim=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_small_corpus_gets_exact_index_that_finds_each_vector_itself(tmp_path):
    vectors = unit_vectors(100)
    index = build_index(vectors, exact_max=1000)
    assert isinstance(index, faiss.IndexFlatIP)
    save_index(index, tmp_path / "i.faiss")
    scores, ids = load_index(tmp_path / "i.faiss", dim=32, count=100).search(vectors[:10], 1)
    assert ids[:, 0].tolist() == list(range(10))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_large_corpus_gets_hnsw_with_high_recall():
    vectors = unit_vectors(3000, dim=64, seed=1)
    queries = unit_vectors(100, dim=64, seed=2)
    approx = build_index(vectors, exact_max=1000)
    assert isinstance(approx, faiss.IndexHNSWFlat)
    truth = build_index(vectors, exact_max=10_000).search(queries, 10)[1]
    found = approx.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall >= 0.95
