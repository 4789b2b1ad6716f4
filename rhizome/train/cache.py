"""Tokenisation cache in ``data_finetune/tokenized_cache/``: a rerun loads the arrays instead of re-tokenising.

An entry is a folder named by a fingerprint of everything the tokens depend on: the data file's
content, the tokenizer (vocabulary, merges, special tokens), the chat template, ``max_seq_length``
and which assistant turns carry loss. Change any of them and the name changes, so the entry is
rebuilt. Packing is not part of the key on purpose: rows are packed per epoch from the cached samples,
after weighted sampling (see ``rhizome.train.packing``), so changing packing never needs a re-tokenise.
An entry is written into a temporary folder and renamed, so a killed run never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from rhizome import atomic
from rhizome.log import get_logger
from rhizome.train.data import TokenizedData, load_pairs, tokenize_pairs

log = get_logger(__name__)

FORMAT_VERSION = 2  # 2: overlong pairs lose their oldest context turns before being truncated


def tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    special = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256(f"{vocabulary}\n{special}".encode()).hexdigest()


def fingerprint(data_file: str | Path, tokenizer, max_seq_length: int, loss_on: str) -> str:
    parts = {
        "format": FORMAT_VERSION, "data": atomic.file_sha256(data_file), "tokenizer": tokenizer_digest(tokenizer),
        "template": hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest(),
        "max_seq_length": max_seq_length, "loss_on": loss_on,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _save(data: TokenizedData, folder: Path, replace: bool) -> None:
    def write(tmp: Path) -> None:
        for name in ("tokens", "targets", "offsets", "weights"):
            atomic.write_npy(tmp / f"{name}.npy", getattr(data, name))
        atomic.write_json(tmp / "samples.json", {"ids": data.ids, "themes": data.themes, "stats": data.stats},
                          indent=None)

    # The folder name is the fingerprint: one that appears meanwhile (another rank) holds the same data.
    atomic.write_dir(folder, write, keep_existing=not replace)


def _load(folder: Path) -> TokenizedData:
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
              for name in ("tokens", "targets", "offsets", "weights")}
    meta = json.loads((folder / "samples.json").read_text(encoding="utf-8"))
    data = TokenizedData(arrays["tokens"], arrays["targets"], np.asarray(arrays["offsets"]), meta["ids"],
                         meta["themes"], np.asarray(arrays["weights"]), meta["stats"])
    if len(data.ids) != len(data) or data.offsets[-1] != len(data.tokens):
        raise ValueError("sample count and arrays disagree")
    return data


def load_or_tokenize(data_file: str | Path, tokenizer, max_seq_length: int, loss_on: str, *,
                     cache_dir: str | Path | None, force_rebuild: bool = False,
                     read_pairs=load_pairs) -> tuple[TokenizedData, str]:
    """Tokenised samples of ``data_file`` and where they came from: "loaded from cache", "tokenized" or "tokenized and cached".

    ``read_pairs`` turns the file into chat pairs (``rhizome.train.dpo`` reads preference files with it)."""
    if cache_dir is None:
        return tokenize_pairs(read_pairs(data_file), tokenizer, max_seq_length, loss_on), "tokenized"
    folder = Path(cache_dir) / f"{Path(data_file).stem}-{fingerprint(data_file, tokenizer, max_seq_length, loss_on)}"
    if folder.exists() and not force_rebuild:
        try:
            return _load(folder), "loaded from cache"
        except (OSError, ValueError, KeyError) as exc:
            log.warning("tokenisation cache %s is unreadable (%s); rebuilding it", folder, exc)
    data = tokenize_pairs(read_pairs(data_file), tokenizer, max_seq_length, loss_on)
    try:
        _save(data, folder, replace=folder.exists())
    except OSError as exc:
        log.warning("could not write the tokenisation cache %s (%s); continuing without it", folder, exc)
        return data, "tokenized"
    return data, "tokenized and cached"
