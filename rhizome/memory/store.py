"""The memory API the chat uses: load what ``batch_embedder.py`` wrote, search it, append to it.

    memory = Memory.load(".")                 # memory_texts.npy, memory_metadata.pkl, memory_index.faiss, memory_config.json
    for hit in memory.search("how do I split a hive?", k=5):
        print(hit.score, hit.text, hit.metadata["file"])
    memory.add(new_items)                     # embeds only the new texts
    memory.save(".")                          # every file written atomically
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rhizome import atomic, safe_pickle
from rhizome.errors import UserError
from rhizome.log import get_logger
from rhizome.memory import index as faiss_index
from rhizome.memory.embedder import DEFAULT_EMBEDDING_MODEL, load_embedder

VECTORS_FILE = "memory_texts.npy"
METADATA_FILE = "memory_metadata.pkl"
INDEX_FILE = "memory_index.faiss"
CONFIG_FILE = "memory_config.json"

log = get_logger(__name__)


@functools.lru_cache(maxsize=4)
def _shared_embedder(name: str, device: str):
    """One copy of an embedder per process, however many memories are opened (a chat reopens its memory)."""
    return load_embedder(name, device=device)


class MemoryFilesError(UserError, RuntimeError):
    """A memory file is missing, damaged or refused; the message names it and says what to do."""


_REBUILD = "Rebuild the memory with python batch_embedder.py."
_OPTIONAL_STR = (str, type(None))
_PLAIN_VALUE = (str, int, float, type(None))
# The item fields the chat reads (see rhizome.memory.items), with the types a built memory holds.
_ITEM_FIELD_TYPES = {
    "text": (str,), "text_hash": (str,), "id": (str,), "source": _OPTIONAL_STR, "role": _OPTIONAL_STR,
    "conversation_id": _OPTIONAL_STR, "conversation_title": _OPTIONAL_STR, "file": _OPTIONAL_STR,
    "timestamp": (int, float, type(None)), "page_start": _PLAIN_VALUE, "page_end": _PLAIN_VALUE,
}


def _load_metadata(path: Path) -> list[dict]:
    try:
        metadata = safe_pickle.load(path, remedy=_REBUILD)
    except (safe_pickle.UnsafePickleError, OSError) as exc:
        raise MemoryFilesError(str(exc)) from exc
    if not isinstance(metadata, list):
        raise MemoryFilesError(f"{path} holds a {type(metadata).__name__}, not a list of items. {_REBUILD}")
    for row, item in enumerate(metadata):
        problem = _item_problem(item)
        if problem:
            raise MemoryFilesError(f"{path}: item {row} {problem}; the file is damaged or not RhizomeML's. "
                                   f"{_REBUILD}")
    return metadata


def _item_problem(item) -> str | None:
    if type(item) is not dict:
        return f"is a {type(item).__name__}, not a dict"
    if "text" not in item:
        return "has no text"
    for name, types in _ITEM_FIELD_TYPES.items():
        value = item.get(name)
        if name in item and type(value) not in types:
            return f"has a {type(value).__name__} as {name}"
    return None


def _load_vectors(path: Path, items: int, metadata_path: Path) -> np.ndarray:
    try:
        # Memory-mapped first, so a header claiming more rows than the file holds fails before any allocation.
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    # A file from elsewhere can make np.load raise almost anything (ValueError, EOFError, OSError...).
    except Exception as exc:
        raise MemoryFilesError(f"{path} is not a readable .npy array ({exc}). {_REBUILD}") from exc
    if not isinstance(mapped, np.ndarray) or mapped.ndim != 2 or mapped.dtype != np.float32:
        shape = f"{mapped.dtype} array of shape {mapped.shape}" if isinstance(mapped, np.ndarray) else "archive"
        raise MemoryFilesError(f"{path} holds a {shape}, not rows of float32 vectors. {_REBUILD}")
    if len(mapped) != items:
        raise MemoryFilesError(f"{metadata_path} has {items} items but {path} has {len(mapped)} vectors. {_REBUILD}")
    return np.array(mapped)


def _load_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MemoryFilesError(f"{path} is not readable JSON ({exc}). {_REBUILD}") from exc
    if (not isinstance(config, dict) or not isinstance(config.get("embedding_model"), str)
            or type(config.get("exact_index_max", 0)) is not int):
        raise MemoryFilesError(f"{path} is not a memory config (embedding_model, exact_index_max). {_REBUILD}")
    return config


def _load_or_rebuild_index(path: Path, vectors: np.ndarray, config: dict):
    exact_max = int(config.get("exact_index_max") or faiss_index.EXACT_MAX_DEFAULT)
    if not path.exists():
        return faiss_index.build_index(vectors, exact_max=exact_max)
    try:
        return faiss_index.load_index(path, dim=vectors.shape[1], count=len(vectors))
    except faiss_index.IndexFileError as exc:
        # The index is derived from the vectors, so rebuilding it loses nothing.
        log.warning("%s; searching with an index rebuilt from %s instead (nothing is lost; the next save or "
                    "python batch_embedder.py writes a sound one)", exc, VECTORS_FILE)
        return faiss_index.build_index(vectors, exact_max=exact_max)


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

            try:
                title += f" ({datetime.datetime.fromtimestamp(when, datetime.timezone.utc):%Y-%m-%d})"
            except (OverflowError, OSError, ValueError):
                pass  # a time no calendar date has (1e300, NaN): the label goes without one
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
    def load(cls, folder: str | os.PathLike = ".", device: str = "cpu", *, with_index: bool = True) -> Memory:
        """The memory in ``folder``; ``with_index=False`` skips reading (or rebuilding) the search index.

        Every file is checked before use (they may have come from elsewhere): a damaged or crafted one
        is a :class:`MemoryFilesError` naming it; a damaged index is rebuilt from the vectors, which
        loses nothing."""
        folder = Path(folder)
        paths = {name: folder / name for name in (VECTORS_FILE, METADATA_FILE, CONFIG_FILE)}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise MemoryFilesError(
                f"memory files missing: {', '.join(missing)}. Build the memory first: python batch_embedder.py"
            )
        metadata = _load_metadata(paths[METADATA_FILE])
        vectors = _load_vectors(paths[VECTORS_FILE], len(metadata), paths[METADATA_FILE])
        config = _load_config(paths[CONFIG_FILE])
        if not with_index:
            return cls(vectors, metadata, None, config, device)
        return cls(vectors, metadata, _load_or_rebuild_index(folder / INDEX_FILE, vectors, config), config, device)

    @classmethod
    def empty(cls, embedding_model: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu") -> Memory:
        """A memory with no items yet; :meth:`add` and :meth:`save` turn it into memory files."""
        return cls(np.zeros((0, 0), dtype=np.float32), [], None, {"embedding_model": embedding_model}, device)

    def __len__(self) -> int:
        return len(self.metadata)

    def add(self, items: list[dict], vectors: np.ndarray | None = None) -> None:
        """Append items (dicts with a ``text``, see rhizome.memory.items), embedding only their texts
        (or taking ``vectors`` already made with :meth:`embed`)."""
        if not items:
            return
        if vectors is None:
            vectors = self.embed([item["text"] for item in items])
        self.vectors = vectors if not len(self.vectors) else np.concatenate([self.vectors, vectors])
        self.metadata = self.metadata + [dict(item) for item in items]
        exact_max = int(self.config.get("exact_index_max") or faiss_index.EXACT_MAX_DEFAULT)
        grew_past_exact = self.index is not None and self.index.ntotal <= exact_max < len(self.vectors)
        if self.index is None or grew_past_exact:
            self.index = faiss_index.build_index(self.vectors, exact_max=exact_max)
        else:
            self.index.add(vectors)
        summary = self.config.setdefault("summary", {})
        summary["items"] = len(self.metadata)
        summary["appended_items"] = int(summary.get("appended_items", 0)) + len(items)

    def save(self, folder: str | os.PathLike = ".") -> None:
        """Write the four memory files, each atomically (a reader sees the old file or the new one, never a part).

        The metadata follows the vectors and index it describes, so a crash between two files leaves more
        vectors than items, which :meth:`load` reports, never items pointing at the wrong vectors."""
        folder = Path(folder)
        atomic.write_npy(folder / VECTORS_FILE, self.vectors)
        faiss_index.save_index(self.index, folder / INDEX_FILE)
        atomic.write_pickle(folder / METADATA_FILE, self.metadata)
        atomic.write_json(folder / CONFIG_FILE, self.config)

    @property
    def model(self):
        if self._model is None:
            self._model = _shared_embedder(self.config["embedding_model"], self.device)
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
