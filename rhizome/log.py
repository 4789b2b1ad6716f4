"""Logging and progress bars, configured the same way by every stage."""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(verbose: bool = False, log_file: str | os.PathLike | None = None) -> None:
    """Log to stderr (and optionally a file); quiet the chatty libraries we build on."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=_FORMAT, datefmt="%H:%M:%S",
        handlers=handlers, force=True,
    )
    for noisy in ("sentence_transformers", "transformers", "faiss", "pypdf", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Imported by peft on every run, it warns that an optional CPU kernel package is missing; harmless.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
             disable: bool | None = None) -> tqdm:
    """A tqdm bar with the project's defaults; set RHIZOME_NO_PROGRESS=1 to silence all bars."""
    if disable is None:
        disable = os.environ.get("RHIZOME_NO_PROGRESS") == "1"
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
