"""The memory API the chat uses: load what ``batch_embedder.py`` wrote and search it.

    memory = Memory.load(".")                 # memory_texts.npy, memory_metadata.pkl, memory_index.faiss, memory_config.json
    for hit in memory.search("how do I split a hive?", k=5):
        print(hit.score, hit.text, hit.metadata["file"])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rhizome import safe_pickle
from rhizome.memory import index as faiss_index
from rhizome.memory.embedder import load_embedder

VECTORS_FILE = "memory_texts.npy"
METADATA_FILE = "memory_metadata.pkl"
INDEX_FILE = "memory_index.faiss"
CONFIG_FILE = "memory_config.json"


class MemoryFilesError(RuntimeError):
    pass


@dataclass
class Hit:
    score: float
    text: str
    metadata: dict

    def source_label(self) -> str:
        """Where the text came from, for a person: a conversation title and date, or a PDF file and pages."""
        meta = self.metadata
        if meta.get("source") == "pdf":
            start, end = meta.get("page_start"), meta.get("page_end")
            pages = f"p. {start}" if start == end else f"pp. {start}-{end}"
            return f"{Path(str(meta.get('file'))).name}, {pages}"
        title = meta.get("conversation_title") or meta.get("conversation_id") or "conversation"
        when = meta.get("timestamp")
        if when:
            import datetime

            title += f" ({datetime.datetime.fromtimestamp(when, datetime.timezone.utc):%Y-%m-%d})"
        return f"{meta.get('source')}: {title} [{meta.get('role')}]"


class Memory:
    def __init__(self, vectors: np.ndarray, metadata: list[dict], index, config: dict, device: str = "cpu"):
        self.vectors = vectors
        self.metadata = metadata
        self.index = index
        self.config = config
        self.device = device
        self._model = None

    @classmethod
    def load(cls, folder: str | os.PathLike = ".", device: str = "cpu") -> "Memory":
        folder = Path(folder)
        paths = {name: folder / name for name in (VECTORS_FILE, METADATA_FILE, CONFIG_FILE)}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise MemoryFilesError(
                f"memory files missing: {', '.join(missing)}. Build the memory first: python batch_embedder.py"
            )
        vectors = np.load(paths[VECTORS_FILE], allow_pickle=False)
        metadata = safe_pickle.load(paths[METADATA_FILE])
        config = json.loads(paths[CONFIG_FILE].read_text(encoding="utf-8"))
        if not isinstance(metadata, list) or len(metadata) != len(vectors):
            raise MemoryFilesError(
                f"{paths[METADATA_FILE]} has {len(metadata) if isinstance(metadata, list) else 'no'} items but "
                f"{paths[VECTORS_FILE]} has {len(vectors)} vectors; rebuild with python batch_embedder.py"
            )
        index_path = folder / INDEX_FILE
        index = (faiss_index.load_index(index_path) if index_path.exists()
                 else faiss_index.build_index(vectors))
        if index.ntotal != len(vectors):
            index = faiss_index.build_index(vectors)
        return cls(vectors, metadata, index, config, device)

    def __len__(self) -> int:
        return len(self.metadata)

    @property
    def model(self):
        if self._model is None:
            self._model = load_embedder(self.config["embedding_model"], device=self.device)
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                            show_progress_bar=False), dtype=np.float32)

    def search(self, query: str, k: int = 5, min_score: float | None = None) -> list[Hit]:
        if not len(self):
            return []
        scores, ids = self.index.search(self.embed([query]), min(k, len(self)))
        hits = []
        for score, idx in zip(scores[0], ids[0]):
            if idx < 0 or (min_score is not None and score < min_score):
                continue
            meta = self.metadata[idx]
            hits.append(Hit(float(score), meta["text"], meta))
        return hits
