"""Where does an approximate FAISS index start to beat exact search at recall@10 >= 0.95?

Prints, for growing corpus sizes, query time of exact IndexFlatIP vs HNSW and
HNSW's recall against the exact answer, all measured side by side in one run.
Vectors are unit-norm 384-d, clustered like real sentence embeddings.

    python bench/index.py [--sizes 5000 20000 50000] [--queries 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhizome.memory.index import build_index  # noqa: E402


def clustered(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((max(8, n // 200), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 1.2 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed_search(index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    ids = np.vstack([index.search(q[None, :], k)[1] for q in queries])  # one query at a time, as the chat does
    return (time.perf_counter() - start) / len(queries), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000, 20_000, 50_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'vectors':>8} {'exact ms/q':>11} {'hnsw ms/q':>10} {'speed-up':>9} {'recall@10':>10} {'hnsw build s':>13}")
    for n in args.sizes:
        data = clustered(n + args.queries, 384, rng)
        corpus, queries = data[:n], data[n:]
        exact = build_index(corpus, exact_max=n)
        start = time.perf_counter()
        hnsw = build_index(corpus, exact_max=0)
        build_s = time.perf_counter() - start
        exact_t, truth = timed_search(exact, queries, args.k)
        hnsw_t, found = timed_search(hnsw, queries, args.k)
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(truth, found)])
        print(f"{n:>8} {exact_t * 1e3:>11.3f} {hnsw_t * 1e3:>10.3f} {exact_t / hnsw_t:>8.2f}x {recall:>10.3f} {build_s:>13.1f}")


if __name__ == "__main__":
    main()
