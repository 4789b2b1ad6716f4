"""Embedding throughput of batch_embedder's pipeline vs a bare SentenceTransformer.encode loop.

Side by side in one run, on the same texts and batch size:
  bare       load the model, then model.encode(batch) over consecutive batches of the texts
  one call   model.encode(all texts) in one call, which sorts by length inside (load time added)
  pipeline   build_memory(): read the export, split to the token limit, embed (cache empty), write
             the .npy / .pkl / FAISS index
  rerun      build_memory() again on the unchanged corpus (everything comes from the cache)

Prints texts/s and the ratios. Targets: pipeline >= 0.95x bare, rerun >= 20x faster than the first run.

    python bench/embed.py [--texts 4000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

from rhizome.memory.build import EmbedConfig, build_memory  # noqa: E402
from rhizome.memory.embedder import DEFAULT_EMBEDDING_MODEL, load_embedder  # noqa: E402

WORDS = ("hive queen brood frame honey super varroa smoker nectar comb spore substrate straw oyster "
         "pasteurise humidity flush chain derailleur cassette spoke rim hub bearing grease tyre valve "
         "pressure season spring autumn temperature colony mushroom bicycle repair because therefore").split()


def make_corpus(n: int, seed: int = 0) -> list[dict]:
    """Chat-format conversations whose turns run from a few words to a few paragraphs, like real chats."""
    rng = np.random.default_rng(seed)
    conversations, messages = [], []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS, rng.integers(6, 20))).capitalize() + "."
                     for _ in range(int(rng.choice([1, 2, 4, 8], p=[0.35, 0.3, 0.25, 0.1])))]
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + " ".join(sentences)})
        if len(messages) == 6:
            conversations.append({"messages": messages})
            messages = []
    if messages:
        conversations.append({"messages": messages})
    return conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = make_corpus(args.texts)
        export = tmp / "chat.jsonl"
        export.write_text("".join(json.dumps(c) + "\n" for c in corpus))
        texts = [m["content"] for c in corpus for m in c["messages"]]

        start = time.perf_counter()
        model = load_embedder(DEFAULT_EMBEDDING_MODEL)
        bare_load = time.perf_counter() - start
        for i in range(0, len(texts), args.batch_size):
            model.encode(texts[i:i + args.batch_size], batch_size=args.batch_size, normalize_embeddings=True)
        bare = time.perf_counter() - start
        start = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        single_call = time.perf_counter() - start + bare_load
        del model

        config = EmbedConfig(inputs=[str(export)], output_dir=str(tmp / "out"), cache_dir=str(tmp / "cache"),
                             batch_size=args.batch_size)
        start = time.perf_counter()
        first = build_memory(config)
        pipeline = time.perf_counter() - start
        start = time.perf_counter()
        second = build_memory(config)
        rerun = time.perf_counter() - start

    assert first["items"] == len(texts) and second["newly_embedded"] == 0
    print(f"{len(texts)} texts, batch size {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"  bare encode loop    {bare:7.1f} s  {len(texts) / bare:7.1f} texts/s  (model load {bare_load:.1f} s)")
    print(f"  one encode call     {single_call:7.1f} s  {len(texts) / single_call:7.1f} texts/s")
    print(f"  pipeline, 1st run   {pipeline:7.1f} s  {len(texts) / pipeline:7.1f} texts/s")
    print(f"  pipeline, rerun     {rerun:7.1f} s  (model loaded: {second['model_loaded']})")
    print(f"pipeline / bare throughput: {bare / pipeline:.2f}x   (target >= 0.95x)")
    print(f"pipeline / one encode call: {single_call / pipeline:.2f}x")
    print(f"rerun speed-up over 1st run: {pipeline / rerun:.1f}x   (target >= 20x)")


if __name__ == "__main__":
    main()
