"""A fast engine's converted copy of the chat model (base + adapter merged), made once and cached.

Where: next to the adapter (``final.<engine>-<variant>/`` beside ``final/``) or, for the base alone, in the models
cache (``<models dir>/<engine>/<name>-<variant>``). The folder holds a key file recording what it was made from:
the adapter's files, the base's weight files, the variant (quantisation) and the converter's version; a different
key converts again. Folders are written with :func:`rhizome.atomic.write_dir`, so a killed conversion leaves none.
CTranslate2 (:mod:`rhizome.chat.engine_ct2`) and ONNX Runtime GenAI (:mod:`rhizome.chat.engine_ort`) share this.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rhizome import atomic
from rhizome.log import get_logger
from rhizome.train.model import models_dir, resolve_model

log = get_logger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def _hash_files(digest, folder: Path, content: bool) -> None:
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or path.name.endswith("config.json")):
            digest.update(path.name.encode())
            if content:
                digest.update(atomic.file_sha256(path).encode())
            else:
                stat = path.stat()
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())


def conversion_key(base_path: str, adapter: str | None, variant: str, converter_version: str) -> str:
    """What a converted folder was made from: the adapter's files by content (megabytes), the base's weight files
    by size and modification time (hashing gigabytes of weights would add seconds to every start)."""
    digest = hashlib.sha256(f"{converter_version}|{variant}".encode())
    base = Path(base_path)
    if base.is_dir():
        _hash_files(digest, base, content=False)
    else:
        digest.update(base_path.encode())  # a Hugging Face id: its cache folder is not ours to watch
    if adapter:
        _hash_files(digest, Path(adapter), content=True)
    return digest.hexdigest()[:16]


def cache_folder(base_path: str, adapter: str | None, engine: str, variant: str) -> Path:
    if adapter:
        adapter_dir = Path(adapter).resolve()
        return adapter_dir.with_name(f"{adapter_dir.name}.{engine}-{variant}")
    return models_dir() / engine / f"{Path(base_path.rstrip('/')).name}-{variant}"


def converted_model(base_model: str, adapter: str | None, *, engine: str, variant: str, converter_version: str,
                    key_file: str, convert: Callable[[str, Path], None]) -> Path:
    """The ``engine`` folder for base (+ adapter merged), made by ``convert(hugging face folder, output folder)``
    when missing or stale."""
    base_path = resolve_model(base_model)
    key = conversion_key(base_path, adapter, variant, converter_version)
    folder = cache_folder(base_path, adapter, engine, variant)
    try:
        if json.loads((folder / key_file).read_text(encoding="utf-8")).get("key") == key:
            return folder
        log.info("%s was made from other weights: converting again", folder)
    except (OSError, ValueError):
        pass
    started = time.perf_counter()
    log.info("converting %s%s for %s (%s) into %s, once", base_model, f" + adapter {adapter}" if adapter else "",
             engine, variant, folder)

    def write(tmp: Path) -> None:
        if adapter:
            from rhizome.chat.llm import ChatModel

            # Beside the cache, not in /tmp: a merged fp32 model is 4 bytes a weight.
            with tempfile.TemporaryDirectory(prefix=".merged-", dir=folder.parent) as merged_dir:
                merged = ChatModel.load(base_model, adapter, device="cpu", quantize=False)
                merged.model.save_pretrained(merged_dir)
                merged.tokenizer.save_pretrained(merged_dir)
                del merged
                convert(merged_dir, tmp)
        else:
            convert(base_path, tmp)
        atomic.write_json(tmp / key_file, {"key": key, "base_model": base_model, "adapter": adapter,
                                           "variant": variant, "seconds": round(time.perf_counter() - started, 1)})

    atomic.write_dir(folder, write)
    log.info("converted in %.0f s", time.perf_counter() - started)
    return folder
