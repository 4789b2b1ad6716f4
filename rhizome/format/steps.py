"""The formatter's run as a list of named steps, each counting what came in and what went out.

Counts go into ``dataset_metadata.json`` (deterministic, so two runs with the same
inputs write the same bytes); wall times only into the console summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rhizome.log import get_logger

log = get_logger(__name__)


@dataclass
class StepRecord:
    name: str
    count_in: int
    count_out: int
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {"step": self.name, "in": self.count_in, "out": self.count_out, **self.details}


class StepLog:
    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def step(self, name: str, count_in: int) -> "_Running":
        return _Running(self, name, count_in)

    def metadata(self) -> list[dict[str, Any]]:
        return [record.as_metadata() for record in self.records]

    def table(self) -> str:
        lines = [f"{'step':<10} {'in':>8} {'out':>8} {'seconds':>8}  notes"]
        for r in self.records:
            notes = ", ".join(f"{k} {v}" for k, v in r.details.items() if isinstance(v, (int, float, str)) and v)
            lines.append(f"{r.name:<10} {r.count_in:>8} {r.count_out:>8} {r.seconds:>8.1f}  {notes}")
        return "\n".join(lines)


class _Running:
    """``with steps.step("dedup", len(pairs)) as s: ...; s.done(len(kept), exact=3)``."""

    def __init__(self, owner: StepLog, name: str, count_in: int):
        self.owner, self.name, self.count_in = owner, name, count_in
        self.record: StepRecord | None = None

    def __enter__(self) -> "_Running":
        self.start = time.perf_counter()
        log.debug("step %s: %d in", self.name, self.count_in)
        return self

    def done(self, count_out: int, **details: Any) -> None:
        self.record = StepRecord(self.name, self.count_in, count_out, details)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        if self.record is None:
            raise RuntimeError(f"step {self.name} finished without reporting its output count")
        self.record.seconds = time.perf_counter() - self.start
        self.owner.records.append(self.record)
        log.debug("step %s: %d out", self.name, self.record.count_out)
