"""The formatter's run as a list of named steps, each counting what came in and what went out.

A step is a function of the run's state that returns a :class:`StepResult`;
:meth:`StepLog.run` calls them in order and keeps one :class:`StepRecord` each.
Counts go into ``dataset_metadata.json`` (deterministic, so two runs with the same
inputs write the same bytes); wall times, and counts that depend on what a cache
held (``varying``), only into the console table and the bench.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rhizome.log import get_logger

log = get_logger(__name__)


@dataclass
class StepResult:
    count_in: int
    count_out: int
    details: dict[str, Any] = field(default_factory=dict)
    varying: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    name: str
    count_in: int
    count_out: int
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    varying: dict[str, Any] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        return {"step": self.name, "in": self.count_in, "out": self.count_out, **self.details}


class StepLog:
    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def run(self, steps: Sequence[tuple[str, Callable[[Any], StepResult]]], state: Any) -> None:
        """Run each ``(name, function)`` on ``state`` in order, recording its counts and wall time."""
        for name, function in steps:
            log.debug("step %s", name)
            start = time.perf_counter()
            result = function(state)
            self.records.append(StepRecord(name, result.count_in, result.count_out, result.details,
                                           time.perf_counter() - start, result.varying))
            log.debug("step %s: %d in, %d out", name, result.count_in, result.count_out)

    def metadata(self) -> list[dict[str, Any]]:
        return [record.as_metadata() for record in self.records]

    def table(self) -> str:
        lines = [f"{'step':<12} {'in':>8} {'out':>8} {'seconds':>8}  notes"]
        for r in self.records:
            notes = ", ".join(f"{k} {v}" for k, v in {**r.details, **r.varying}.items()
                              if isinstance(v, (int, float, str)) and v)
            lines.append(f"{r.name:<12} {r.count_in:>8} {r.count_out:>8} {r.seconds:>8.1f}  {notes}")
        return "\n".join(lines)
