"""Runs the page's jobs (training, evaluation, export) as subprocesses, one at a time, the rest queued.

A job is an argv list run with ``subprocess.Popen`` (never a shell) in the working folder, in its own session
so that training outlives the page (stop it from the page or with a ``STOP`` file). One job runs at a time,
and none starts while a run on disk says it is running (one started from a terminal, or by an earlier page):
on a CPU two trainings only slow each other down. The page's state lives on disk (``rhizome.runs``); the
launcher only adds what disk cannot know yet: what is queued, and the console output of a job that failed
before its run folder had a log.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rhizome import runs
from rhizome.errors import UserError
from rhizome.log import get_logger

log = get_logger(__name__)

OUTPUT_LINES = 200
POLL_SECONDS = 1.0


class JobConflict(UserError):
    """A second queued job for the same run."""


@dataclass
class Job:
    kind: str                      # "train", "evaluate" or "export"
    run_name: str                  # the run folder it is about
    argv: list[str]
    process: subprocess.Popen | None = None
    returncode: int | None = None
    started: float | None = None   # unix seconds
    output: deque = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))

    @property
    def state(self) -> str:
        if self.process is None:
            return "queued"
        if self.returncode is None:
            return "running"
        return "done" if self.returncode == 0 else f"exit {self.returncode}"


class Launcher:
    def __init__(self, root: str | Path = ".", poll_seconds: float = POLL_SECONDS):
        self.root = Path(root)
        self.poll_seconds = poll_seconds
        self.queue: list[Job] = []
        self.finished: dict[str, Job] = {}  # the last job of each run, with its output
        self.active: Job | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._supervise, name="studio-launcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, run_name: str, argv: Sequence[str]) -> Job:
        job = Job(kind, run_name, list(argv))
        with self._wake:
            # A job for a run whose process is still ending (it has written "stopped") waits behind it, as any job.
            if any(j.run_name == run_name for j in self.queue):
                raise JobConflict(f"{run_name} already has a job queued; wait for it, or stop it to take it off")
            self.queue.append(job)
            self._wake.notify_all()
        return job

    def jobs(self) -> list[Job]:
        """The running job (if any) then the queued ones, in order."""
        return ([self.active] if self.active is not None else []) + list(self.queue)

    def job_for(self, run_name: str) -> Job | None:
        """The run's queued or running job, else its last finished one."""
        return next((j for j in self.jobs() if j.run_name == run_name), None) or self.finished.get(run_name)

    def cancel(self, run_name: str) -> bool:
        """Drop the run's queued job; True when there was one."""
        with self._wake:
            before = len(self.queue)
            self.queue = [j for j in self.queue if j.run_name != run_name]
            return len(self.queue) < before

    def terminate(self, run_name: str) -> bool:
        """SIGTERM to the run's running job: an evaluation or export ends; a training finishes its step and
        checkpoints (a training that already writes its run folder is better stopped through its STOP file,
        which also reaches one started elsewhere)."""
        job = self.active
        if job is None or job.run_name != run_name or job.process is None or job.returncode is not None:
            return False
        job.process.terminate()
        return True

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=5)

    def _busy(self) -> bool:
        if self.active is not None:
            return True
        return any(run.status == "running" for run in runs.find_runs(self.root, nested=True))

    def _supervise(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self.queue or self._busy()):
                    self._wake.wait(self.poll_seconds if self.queue else None)
                if self._closed:
                    return
                job = self.active = self.queue.pop(0)
            self._start(job)

    def _start(self, job: Job) -> None:
        log.info("studio: starting %s of %s: %s", job.kind, job.run_name, " ".join(job.argv))
        job.started = time.time()
        env = {**os.environ, "RHIZOME_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
        try:
            job.process = subprocess.Popen(job.argv, cwd=self.root, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                           errors="replace", start_new_session=True)
        except OSError as exc:
            job.output.append(f"could not start: {exc}")
            self._finish(job, -1)
            return
        threading.Thread(target=self._follow, args=(job,), name=f"studio-{job.kind}", daemon=True).start()

    def _follow(self, job: Job) -> None:
        for line in job.process.stdout:
            job.output.append(line.rstrip("\n"))
        self._finish(job, job.process.wait())

    def _finish(self, job: Job, returncode: int) -> None:
        with self._wake:
            job.returncode = returncode
            self.finished[job.run_name] = job
            if self.active is job:
                self.active = None
            self._wake.notify_all()
        log.info("studio: %s of %s ended with exit code %s", job.kind, job.run_name, returncode)
