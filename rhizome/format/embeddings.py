"""Vectors for the formatter: reuse the memory's, the cache's, and embed only what neither has.

A pair is represented by the normalised sum of its prompt's and reply's
vectors. Those are message texts, so most were already embedded by
``batch_embedder.py``: they come from ``memory_texts.npy`` (when it was made
with the same model) or the shared embedding cache, and only texts that
cleaning changed, or that were never embedded (the instructions made for PDF
chunks), are computed. Texts over the token limit are split as the memory
splits them, so their pieces are found there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rhizome.format.records import Pair
from rhizome.log import get_logger
from rhizome.memory.embedder import EmbeddingCache, canonical_model_name, embed_missing, text_key
from rhizome.memory.store import Memory, MemoryFilesError

log = get_logger(__name__)


@dataclass
class PairVectors:
    pairs: np.ndarray  # one L2-normalised row per pair
    prompt_reply_similarity: np.ndarray  # cosine of each pair's prompt and reply
    from_memory: int  # distinct texts (or pieces of long ones) whose vector came from memory_texts.npy
    embedded: int  # distinct texts (or pieces) embedded (or taken from the cache) in this run


def memory_vectors(vectors_path: str | Path, model_name: str) -> dict[str, np.ndarray]:
    """text hash -> vector from the memory whose ``memory_texts.npy`` is ``vectors_path``, if made with ``model_name``.

    A memory that is missing, made with another model, or damaged is not reused (its texts are embedded instead)."""
    vectors_path = Path(vectors_path)
    if not vectors_path.exists():
        return {}
    try:
        memory = Memory.load(vectors_path.parent, with_index=False)
    except MemoryFilesError as exc:
        log.warning("the memory beside %s is not reused: %s", vectors_path, exc)
        return {}
    made_with = memory.config["embedding_model"]
    if canonical_model_name(made_with) != canonical_model_name(model_name):
        log.info("%s was made with %s, not %s: not reused", vectors_path, made_with, model_name)
        return {}
    return {item["text_hash"]: memory.vectors[row] for row, item in enumerate(memory.metadata) if "text_hash" in item}


def embed_pairs(pairs: Sequence[Pair], known: dict[str, np.ndarray], cache: EmbeddingCache,
                load_model: Callable, batch_size: int, split: Callable[[str], list[str]] | None = None) -> PairVectors:
    """Vectors of each pair's prompt and reply, and the pair's vector.

    ``split`` cuts a text to the embedder's token limit, as ``batch_embedder.py`` does; a text of several
    pieces gets the normalised mean of its pieces' vectors. So a long message is represented whole (the
    model alone would see only its first 256 word pieces), and its vector comes from the pieces the memory
    already holds instead of being computed again.
    """
    prompts = [p.prompt for p in pairs]
    replies = [p.reply for p in pairs]
    texts = list(dict.fromkeys(prompts + replies))
    pieces_of = {t: split(t) if split else [t] for t in texts}
    pieces = list(dict.fromkeys(piece for t in texts for piece in pieces_of[t]))
    keys = [text_key(p) for p in pieces]
    missing = [(p, k) for p, k in zip(pieces, keys) if k not in known]
    computed = {}
    if missing:
        vectors = embed_missing([p for p, _ in missing], [k for _, k in missing], cache, load_model,
                                batch_size=batch_size)
        computed = dict(zip((k for _, k in missing), vectors))
    piece_vector = {p: known[k] if k in known else computed[k] for p, k in zip(pieces, keys)}
    vector_of = {t: _mean_direction([piece_vector[p] for p in pieces_of[t]]) for t in texts}
    prompt_vectors = np.stack([vector_of[t] for t in prompts]) if pairs else np.zeros((0, 0), np.float32)
    reply_vectors = np.stack([vector_of[t] for t in replies]) if pairs else prompt_vectors
    summed = prompt_vectors + reply_vectors
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    pair_vectors = (summed / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    similarity = np.einsum("ij,ij->i", prompt_vectors, reply_vectors) if pairs else np.zeros(0)
    return PairVectors(pair_vectors, similarity, from_memory=len(keys) - len(missing), embedded=len(missing))


def _mean_direction(vectors: list[np.ndarray]) -> np.ndarray:
    if len(vectors) == 1:
        return vectors[0]
    mean = np.mean(vectors, axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)
