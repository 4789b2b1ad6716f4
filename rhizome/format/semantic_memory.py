"""``semantic_memory.pkl``: theme statistics carried across formatter runs (``--semantic-mode adaptive``).

In adaptive mode each run weighs themes by an *effective* count that adds the
decayed history to this run's count::

    f_t = c_t + decay * H_t

where ``c_t`` is the number of this run's pairs with theme ``t`` and ``H_t`` the
stored history. After the run the history becomes ``H_t <- f_t``, so it is an
exponentially decayed sum over all runs (a run ``k`` runs ago counts
``decay ** k``). A theme that was common before keeps a large ``f_t`` and a low
weight even when this run has little of it; one that stayed rare over the runs
keeps a small ``f_t`` and a high weight. Themes whose history decays below
``FORGET_BELOW`` are dropped, so the file does not grow without bound.

``normal`` mode neither reads nor writes the file: each run stands alone.

The file holds plain dicts, strings, ints and floats only; it is read through
:func:`rhizome.safe_pickle.load` (which refuses anything else) and written
atomically with :func:`rhizome.atomic.write_pickle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rhizome import atomic, safe_pickle
from rhizome.errors import UserError
from rhizome.log import get_logger

log = get_logger(__name__)

FILENAME = "semantic_memory.pkl"
SCHEMA = "rhizome.semantic_memory"
VERSION = 1
DEFAULT_DECAY = 0.5
FORGET_BELOW = 0.01
MAX_RUN_TIMESTAMPS = 100


class SemanticMemoryError(UserError, RuntimeError):
    """``semantic_memory.pkl`` exists but cannot be used."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_REMEDY = ("This file holds the theme history of --semantic-mode adaptive. Delete it to start the history "
           "fresh (the next adaptive run recreates it), or run with --semantic-mode normal to ignore it.")


def _unusable(path: Path, why: str) -> SemanticMemoryError:
    return SemanticMemoryError(f"{path}: {why}. {_REMEDY}")


@dataclass
class SemanticMemory:
    theme_counts: dict[str, float] = field(default_factory=dict)  # decayed history H_t
    source_counts: dict[str, float] = field(default_factory=dict)  # pairs per source, decayed the same way
    runs: int = 0
    pairs_seen: int = 0  # all pairs ever recorded, not decayed
    decay: float = DEFAULT_DECAY
    created: str = ""
    updated: str = ""
    run_timestamps: list[str] = field(default_factory=list)  # the last MAX_RUN_TIMESTAMPS runs

    @classmethod
    def load(cls, path: str | Path, decay: float = DEFAULT_DECAY) -> SemanticMemory:
        """The stored history, or an empty one when ``path`` does not exist yet."""
        path = Path(path)
        if not path.exists():
            log.info("no %s yet: adaptive theme history starts fresh", path)
            return cls(decay=decay)
        try:
            data = safe_pickle.load(path, remedy=_REMEDY)  # refused or damaged: an UnsafePickleError saying so
        except OSError as exc:
            raise _unusable(path, f"cannot be read ({exc})") from exc
        memory = cls._from_dict(data, path)
        memory.decay = decay
        return memory

    @classmethod
    def _from_dict(cls, data: Any, path: Path) -> SemanticMemory:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise _unusable(path, "is not a RhizomeML semantic memory file")
        if data.get("version") != VERSION:
            raise _unusable(path, f"has version {data.get('version')!r}; this RhizomeML reads version {VERSION}")
        try:
            return cls(
                theme_counts=_counts(data["theme_counts"]), source_counts=_counts(data["source_counts"]),
                runs=int(data["runs"]), pairs_seen=int(data["pairs_seen"]),
                created=str(data["created"]), updated=str(data["updated"]),
                run_timestamps=[str(t) for t in data["run_timestamps"]],
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise _unusable(path, f"is damaged (bad or missing field: {exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "version": VERSION, "runs": self.runs, "pairs_seen": self.pairs_seen,
            "decay": self.decay, "created": self.created, "updated": self.updated,
            "run_timestamps": list(self.run_timestamps),
            "theme_counts": dict(self.theme_counts), "source_counts": dict(self.source_counts),
        }

    def save(self, path: str | Path) -> None:
        atomic.write_pickle(path, self.to_dict())

    def effective_counts(self, counts: Mapping[str, float]) -> dict[str, float]:
        """``f_t = c_t + decay * H_t`` for each theme of this run."""
        return {theme: float(c) + self.decay * self.theme_counts.get(theme, 0.0) for theme, c in counts.items()}

    def record_run(self, theme_counts: Mapping[str, float], source_counts: Mapping[str, float],
                   pairs: int, when: str | None = None) -> None:
        """Fold this run into the history: ``H <- c + decay * H`` for themes and sources alike."""
        self.theme_counts = _decayed(self.theme_counts, theme_counts, self.decay)
        self.source_counts = _decayed(self.source_counts, source_counts, self.decay)
        self.runs += 1
        self.pairs_seen += int(pairs)
        when = when or _now()
        self.created = self.created or when
        self.updated = when
        self.run_timestamps = (self.run_timestamps + [when])[-MAX_RUN_TIMESTAMPS:]

    def as_dict(self) -> dict[str, Any]:
        """For dataset_metadata.json: a summary, not the whole history."""
        return {"runs": self.runs, "pairs_seen": self.pairs_seen, "decay": self.decay,
                "themes_remembered": len(self.theme_counts), "created": self.created, "updated": self.updated}


def _counts(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict of counts, got {type(value).__name__}")
    return {str(k): float(v) for k, v in value.items()}


def _decayed(history: Mapping[str, float], now: Mapping[str, float], decay: float) -> dict[str, float]:
    merged = {key: decay * value for key, value in history.items()}
    for key, value in now.items():
        merged[key] = merged.get(key, 0.0) + float(value)
    return {key: value for key, value in merged.items() if value >= FORGET_BELOW}
