"""What a training run tells others while it runs, and how they ask it to stop.

The files (their formats are written down once, in :mod:`rhizome.runs`): ``run.json`` (rewritten at the start,
at each evaluation and checkpoint, at the end), ``heartbeat.json`` (a daemon thread, every HEARTBEAT_SECONDS)
and ``metrics.jsonl`` (one line per optimizer step and per evaluation, flushed at once, so the studio page
draws a step within seconds however long ``logging_steps`` is; a line costs microseconds). Only the main
process of a torchrun job records.

Observers, the hook hyperparameter tuning builds on: ``FineTune(config, observers=[...])`` calls each
``observer(record) -> str | None`` on the main process with every record appended to ``metrics.jsonl`` (train
and eval records, the same dict). A returned string stops the run after the current step exactly as a STOP
file does: a checkpoint, run.json status "stopped" with that string as ``stop_reason``, exit 0.

A stop is asked for by SIGTERM or SIGINT (stop_reason "signal") or a STOP file in the run folder ("stop-file",
checked between steps). A second Ctrl+C raises KeyboardInterrupt at once, as users expect of a terminal.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rhizome import atomic
from rhizome.log import get_logger
from rhizome.runs import HEARTBEAT_FILE, HEARTBEAT_SECONDS, METRICS_FILE, RUN_STATE_FILE, RUN_STATE_FORMAT, STOP_FILE

log = get_logger(__name__)

Observer = Callable[[dict], str | None]


def _finite(value):
    # NaN and Infinity are not JSON: a browser's JSON.parse rejects the whole line (a diverged loss is null).
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def error_line(exc: BaseException) -> str:
    """``type: message`` on one line, for run.json."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


class MetricsLog:
    """``metrics.jsonl``, opened for appending after dropping the lines a resumed run will write again."""

    def __init__(self, run_dir: Path, resumed_step: int):
        self.path = run_dir / METRICS_FILE
        self._trim(resumed_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def _trim(self, resumed_step: int) -> None:
        kept: list[str] = []
        # From step 0 everything is written again, the baseline evaluation included.
        if resumed_step > 0 and self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    step = json.loads(line).get("step")
                except (ValueError, AttributeError):
                    continue  # a line cut short by a kill
                if isinstance(step, int) and step <= resumed_step:
                    kept.append(line)
        atomic.write_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(_finite(record), ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Heartbeat:
    """A daemon thread rewriting ``heartbeat.json`` every ``interval`` seconds until :meth:`close`."""

    def __init__(self, run_dir: Path, interval: float = HEARTBEAT_SECONDS):
        self.path = run_dir / HEARTBEAT_FILE
        self.interval = interval
        self._closed = threading.Event()
        self._write()  # before the constructor returns, so a reader never sees a running run without one
        self._thread = threading.Thread(target=self._beat, name="rhizome-heartbeat", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            atomic.write_json(self.path, {"pid": os.getpid(), "host": socket.gethostname(), "updated": time.time()})
        except OSError as exc:  # a full disk must not end the run; the next beat tries again
            log.warning("cannot write %s: %s", self.path, exc)

    def _beat(self) -> None:
        while not self._closed.wait(self.interval):
            self._write()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()


class RunRecorder:
    """run.json, the heartbeat, metrics.jsonl, the trackers of --report-to and the observers, for one run."""

    def __init__(self, run_dir: Path, fields: dict, resumed_step: int, trackers: Iterable = (),
                 observers: Iterable[Observer] = ()):
        self.run_dir = run_dir
        self.trackers = list(trackers)
        self.observers = tuple(observers)
        self.stop_reason: str | None = None
        now = time.time()
        self.state = {"format": RUN_STATE_FORMAT, "status": "running", "stop_reason": None, "error": None, **fields,
                      "pid": os.getpid(), "host": socket.gethostname(), "command": list(sys.argv),
                      "started": now, "updated": now, "ended": None}
        self.metrics = MetricsLog(run_dir, resumed_step)
        self.write_state()
        self.heartbeat = Heartbeat(run_dir)

    def write_state(self, **changes) -> None:
        self.state.update(changes, updated=time.time())
        atomic.write_json(self.run_dir / RUN_STATE_FILE, _finite(self.state))

    def record(self, record: dict) -> None:
        """Append ``record`` to metrics.jsonl, send it to the trackers, and ask the observers whether to stop."""
        self.metrics.append(record)
        for tracker in self.trackers:
            tracker.log(record)
        for observer in self.observers:
            reason = observer(record)
            if reason is not None and self.stop_reason is None:
                self.stop_reason = str(reason)
                log.info("stopping after this step: %s", self.stop_reason)

    def close(self, status: str, *, stop_reason: str | None = None, error: str | None = None) -> None:
        self.heartbeat.close()
        self.metrics.close()
        try:
            for tracker in self.trackers:
                tracker.close()
        finally:  # a tracker failing to flush must not leave the run "running"
            self.write_state(status=status, stop_reason=stop_reason, error=error, ended=time.time())


class StopRequests:
    """SIGTERM, SIGINT and the STOP file, turned into a stop after the current step (a context manager)."""

    def __init__(self, stop_file: Path | None):
        self.stop_file = stop_file
        self.reason: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if self.stop_file is not None and self.stop_file.exists():
            log.warning("removing %s left from before this run started", self.stop_file)
            self.stop_file.unlink(missing_ok=True)
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self.stop_file is not None and self.reason is not None:
            self.stop_file.unlink(missing_ok=True)

    def _on_signal(self, signum, frame) -> None:
        if self.reason is None:
            self.reason = "signal"
            log.warning("%s: stopping after this step with a checkpoint (Ctrl+C again to abort at once)",
                        signal.Signals(signum).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def request(self, reason: str | None) -> None:
        if reason is not None and self.reason is None:
            self.reason = reason

    def poll(self) -> str | None:
        """The stop asked for so far; looks for the STOP file."""
        if self.reason is None and self.stop_file is not None and self.stop_file.exists():
            self.reason = "stop-file"
            log.info("%s found: stopping after this step", self.stop_file)
        return self.reason
