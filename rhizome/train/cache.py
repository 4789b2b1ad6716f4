"""Tokenisation cache in ``data_finetune/tokenized_cache/``: a rerun loads the arrays instead of re-tokenising.

An entry is a folder named by a fingerprint of everything the tokens depend on: the data file's
content, the tokenizer (vocabulary, merges, special tokens), the chat template, ``max_seq_length``
and which assistant turns carry loss. Change any of them and the name changes, so the entry is
rebuilt. Packing is not part of the key on purpose: rows are packed per epoch from the cached samples,
after weighted sampling (see ``rhizome.train.packing``), so changing packing never needs a re-tokenise.
An entry is written into a temporary folder and renamed, so a killed run never leaves half an entry; it is
written a chunk of pairs at a time as they are tokenised (by several processes with ``--workers``) and read back
memory-mapped, so neither the pairs nor their tokens sit in memory whole (``bench/pipeline.py`` measures it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from rhizome import atomic
from rhizome.log import get_logger
from rhizome.train.data import (
    TokenizedData, add_stats, default_workers, iter_pairs, no_samples_error, tokenize_pairs, tokenized_chunks,
)

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


ARRAYS = {"tokens": np.int32, "targets": np.bool_, "offsets": np.int64, "weights": np.float64}


def _write_entry(chunks: Iterable[TokenizedData], folder: Path, replace: bool, max_seq_length: int) -> None:
    """The samples of ``chunks`` as the entry ``folder``, written a chunk at a time so that memory holds one chunk,
    not the data set: each array is appended to a raw file that gets its ``.npy`` header at the end, and the ids and
    themes are appended as JSON text."""
    def write(tmp: Path) -> None:
        stats: dict = {}
        written = 0
        lengths = dict.fromkeys(ARRAYS, 0)
        with ExitStack() as files:
            raw = {name: files.enter_context(open(tmp / f"{name}.raw", "wb")) for name in ARRAYS}
            listed = {name: files.enter_context(open(tmp / f"{name}.json", "w", encoding="utf-8"))
                      for name in ("ids", "themes")}
            np.zeros(1, np.int64).tofile(raw["offsets"])
            lengths["offsets"] = 1
            for part in chunks:
                values = {"tokens": part.tokens, "targets": part.targets, "weights": part.weights,
                          "offsets": part.offsets[1:] + lengths["tokens"]}
                for name, dtype in ARRAYS.items():
                    np.ascontiguousarray(values[name], dtype=dtype).tofile(raw[name])
                    lengths[name] += len(values[name])
                for name, handle in listed.items():
                    for position, value in enumerate(getattr(part, name)):
                        handle.write(("," if written or position else "") + json.dumps(value))
                written += len(part.ids)
                stats = add_stats(stats, part.stats)
        if not written:
            raise no_samples_error(max_seq_length)
        for name, dtype in ARRAYS.items():
            with open(tmp / f"{name}.npy", "wb") as out, open(tmp / f"{name}.raw", "rb") as data:
                np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                           "fortran_order": False, "shape": (lengths[name],)})
                shutil.copyfileobj(data, out, 1 << 24)
            (tmp / f"{name}.raw").unlink()
        with open(tmp / "samples.json", "w", encoding="utf-8") as out:
            for key, name in (('{"ids": [', "ids"), ('], "themes": [', "themes")):
                out.write(key)
                with open(tmp / f"{name}.json", encoding="utf-8") as part_file:
                    shutil.copyfileobj(part_file, out, 1 << 24)
                (tmp / f"{name}.json").unlink()
            out.write(f'], "stats": {json.dumps(stats)}}}')

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
                     cache_dir: str | Path | None, force_rebuild: bool = False, read_pairs=iter_pairs,
                     workers: int = 0) -> tuple[TokenizedData, str]:
    """Tokenised samples of ``data_file`` and where they came from: "loaded from cache", "tokenized" or "tokenized and cached".

    ``read_pairs`` turns the file into chat pairs (``rhizome.train.dpo`` reads preference files with it).
    ``workers`` processes tokenise (0 = :func:`rhizome.train.data.default_workers`); the samples are the same
    for any number. A new entry is written as it is tokenised and then memory-mapped, so a large data set is
    never held in memory whole."""
    workers = workers or default_workers()
    if cache_dir is None:
        return tokenize_pairs(read_pairs(data_file), tokenizer, max_seq_length, loss_on, workers), "tokenized"
    folder = Path(cache_dir) / f"{Path(data_file).stem}-{fingerprint(data_file, tokenizer, max_seq_length, loss_on)}"
    if folder.exists() and not force_rebuild:
        try:
            return _load(folder), "loaded from cache"
        except (OSError, ValueError, KeyError) as exc:
            log.warning("tokenisation cache %s is unreadable (%s); rebuilding it", folder, exc)
    try:
        _write_entry(tokenized_chunks(read_pairs(data_file), tokenizer, max_seq_length, loss_on, workers), folder,
                     folder.exists(), max_seq_length)
    except OSError as exc:
        log.warning("could not write the tokenisation cache %s (%s); continuing without it", folder, exc)
        return tokenize_pairs(read_pairs(data_file), tokenizer, max_seq_length, loss_on, workers), "tokenized"
    return _load(folder), "tokenized and cached"
