"""Near-duplicate search: RhizomeML's FAISS dedup vs scikit-learn all-pairs cosine similarity.

A synthetic corpus of unit 384-d vectors, clustered like sentence embeddings,
with planted near-duplicate groups (copies at cosine 0.955-0.995 to an
original) and planted near misses (cosine 0.90-0.94). For each size it times

* sklearn: ``cosine_similarity`` in row blocks (never the whole n x n matrix), every pair >= threshold;
* flat:    FAISS ``IndexFlatIP`` range search, exact (what dedup uses up to ``EXACT_MAX_DEFAULT``);
* ivf:     IVF candidates over PCA-64 + exact check (what dedup uses above it);

asserts that all three give identical duplicate groups, and that every planted
duplicate is found and no near miss is, then prints ratios and time per item.

    python bench/dedup.py [--sizes 10000 30000 100000] [--threshold 0.95] [--sklearn-max 100000]

Measured on a 2-core AMD EPYC shared with other jobs (load average ~3 during the run):

          n  sklearn s  flat s  ivf s  ratio (sklearn / dedup's path)
     10,000       2.04    0.82   0.31    2.5x (flat, exact)
     30,000       9.65    6.16   0.87   11.1x (IVF)
    100,000      85.64   68.38   3.18   27.0x (IVF); IVF time grows as n^1.01

Groups identical to sklearn's at every size, planted recall 1.000, no near miss grouped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# FAISS's OpenMP threads busy-wait between parallel regions by default. On a 2-core machine that is
# running anything else, that makes them fight the threads they wait for: here PCA training took 6.0 s,
# and 0.11 s with this set (the same as with one thread). Must be set before faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index import clustered  # bench/index.py, beside this script

from rhizome.format.dedup import EXACT_MAX_DEFAULT, near_duplicate_labels

DIM = 384


def at_cosine(base: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly ``cosines`` to the rows of ``base``."""
    noise = rng.standard_normal(base.shape)
    noise -= (noise * base).sum(axis=1, keepdims=True) * base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cosines[:, None] * base + np.sqrt(1 - cosines[:, None] ** 2) * noise).astype(np.float32)


def corpus(n: int, rng: np.random.Generator) -> tuple[np.ndarray, set[tuple[int, ...]], list[tuple[int, int]]]:
    """Vectors, the planted groups, and the planted near-miss pairs (which must stay apart)."""
    x = clustered(n, DIM, rng)
    order = rng.permutation(n)
    originals, near_miss_base = order[: n // 50], order[n // 50: n // 50 + n // 100]
    free = iter(order[n // 50 + n // 100:])
    groups = set()
    for original in originals:
        copies = [next(free) for _ in range(rng.integers(1, 4))]
        base = np.repeat(x[original][None, :].astype(np.float64), len(copies), axis=0)
        x[copies] = at_cosine(base, rng.uniform(0.955, 0.995, len(copies)), rng)
        groups.add(tuple(sorted([int(original), *map(int, copies)])))
    misses = []
    for original in near_miss_base:
        other = next(free)
        x[other] = at_cosine(x[original][None, :].astype(np.float64), rng.uniform(0.90, 0.94, 1), rng)[0]
        misses.append((int(original), int(other)))
    return x, groups, misses


def sklearn_labels(x: np.ndarray, threshold: float, block: int = 1024) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.metrics.pairwise import cosine_similarity

    rows, cols = [], []
    for start in range(0, len(x), block):
        sims = cosine_similarity(x[start:start + block], x)
        i, j = np.nonzero(sims >= threshold)
        i += start
        upper = j > i
        rows.append(i[upper])
        cols.append(j[upper])
    i, j = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(len(x), len(x)))
    return connected_components(graph, directed=False)[1]


def groups_of(labels: np.ndarray) -> set[tuple[int, ...]]:
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return {tuple(sorted(g.tolist())) for g in np.split(order, bounds) if len(g) > 1}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--sklearn-max", type=int, default=100_000,
                        help="skip the sklearn reference above this size (its time grows as n^2)")
    parser.add_argument("--flat-max", type=int, default=100_000, help="skip exact FAISS search above this size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"threads: {os.cpu_count()} CPUs; dedup uses exact search up to {EXACT_MAX_DEFAULT:,} vectors, IVF above")
    print(f"{'n':>7} {'groups':>6} {'sklearn s':>9} {'flat s':>7} {'ivf s':>6} {'dedup s':>7} {'ratio':>7} "
          f"{'us/item':>7} {'candidates':>10} {'same':>5} {'recall':>6}")
    rows = []
    for n in args.sizes:
        x, planted, misses = corpus(n, rng)
        sk_s = flat_s = None
        reference = None
        if n <= args.sklearn_max:
            sk_s, labels = timed(sklearn_labels, x, args.threshold)
            reference = groups_of(labels)
        if n <= args.flat_max:
            flat_s, (labels, _) = timed(near_duplicate_labels, x, args.threshold, exact_max=n)
            flat = groups_of(labels)
            assert reference is None or flat == reference, f"n={n}: flat FAISS groups differ from sklearn"
            reference = reference or flat
        ivf_s, (labels, info) = timed(near_duplicate_labels, x, args.threshold, exact_max=0)
        ivf = groups_of(labels)
        same = reference is None or ivf == reference
        assert same, f"n={n}: IVF groups differ from the exact reference ({len(ivf ^ reference)} differ)"
        assert not any(labels[a] == labels[b] for a, b in misses), "a near miss was grouped"
        recall = np.mean([len({labels[m] for m in g}) == 1 for g in planted])
        assert recall == 1.0, f"n={n}: planted recall {recall:.4f}"
        dedup_s = flat_s if n <= EXACT_MAX_DEFAULT and flat_s is not None else ivf_s
        ratio = sk_s / dedup_s if sk_s else float("nan")
        rows.append((n, ivf_s, sk_s, ratio))
        fmt = lambda v, w: f"{v:>{w}.2f}" if v is not None else f"{'-':>{w}}"
        print(f"{n:>7} {len(planted):>6} {fmt(sk_s, 9)} {fmt(flat_s, 7)} {ivf_s:>6.2f} {dedup_s:>7.2f} "
              f"{ratio:>6.1f}x {dedup_s / n * 1e6:>7.1f} {info['candidates']:>10} {'yes' if same else 'NO':>5} "
              f"{recall:>6.3f}", flush=True)
    if len(rows) > 1:
        (n0, t0, _, _), (n1, t1, _, _) = rows[0], rows[-1]
        exponent = np.log(t1 / t0) / np.log(n1 / n0)
        print(f"IVF time grows as n^{exponent:.2f} from {n0:,} to {n1:,} vectors (1.00 = linear, sklearn: 2.00)")
    both = [r for r in rows if r[2] is not None]
    if both:
        n, _, _, ratio = both[-1]
        print(f"dedup vs sklearn at n={n:,}: {ratio:.1f}x faster (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
