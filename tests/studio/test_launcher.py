"""Jobs run as real subprocesses, one at a time; none starts while a run on disk is training."""

import json
import os
import socket
import sys
import time

import pytest

from rhizome import runs
from rhizome.studio.launcher import JobConflict, Launcher


def _wait(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_one_job_at_a_time_the_next_starts_when_it_ends(tmp_path):
    launcher = Launcher(tmp_path, poll_seconds=0.05)
    try:
        first = launcher.submit("train", "a", _script("import time; print('first', flush=True); time.sleep(1.5)"))
        second = launcher.submit("train", "b", _script("import os; print('second in', os.getcwd())"))
        _wait(lambda: first.state == "running")
        assert second.state == "queued" and [j.run_name for j in launcher.jobs()] == ["a", "b"]
        with pytest.raises(JobConflict):
            launcher.submit("evaluate", "b", _script("pass"))
        _wait(lambda: second.state == "done")
        assert first.state == "done" and list(first.output) == ["first"]
        assert list(second.output) == [f"second in {tmp_path}"]  # run in the working folder
        assert launcher.job_for("a") is first and launcher.jobs() == []
    finally:
        launcher.close()


def test_a_queued_job_can_be_cancelled_and_a_failing_one_keeps_its_output(tmp_path):
    launcher = Launcher(tmp_path, poll_seconds=0.05)
    try:
        blocker = launcher.submit("train", "a", _script("import sys, time; time.sleep(1); "
                                                        "print('error: no data', file=sys.stderr); sys.exit(2)"))
        launcher.submit("train", "b", _script("open('b-ran', 'w')"))
        assert launcher.cancel("b") and not launcher.cancel("b")
        _wait(lambda: blocker.returncode is not None)
        time.sleep(0.3)
        assert blocker.state == "exit 2" and list(blocker.output) == ["error: no data"]
        assert not (tmp_path / "b-ran").exists()
    finally:
        launcher.close()


def test_nothing_starts_while_a_run_on_disk_is_training(tmp_path):
    run = tmp_path / "cli-run"
    run.mkdir()
    now = time.time()
    state = {"format": 1, "status": "running", "pid": os.getpid(), "host": socket.gethostname(), "updated": now}
    (run / runs.RUN_STATE_FILE).write_text(json.dumps(state))
    (run / runs.HEARTBEAT_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                       "updated": now}))
    launcher = Launcher(tmp_path, poll_seconds=0.05)
    try:
        job = launcher.submit("train", "b", _script("pass"))
        time.sleep(0.5)
        assert job.state == "queued"
        (run / runs.RUN_STATE_FILE).write_text(json.dumps({**state, "status": "finished"}))
        _wait(lambda: job.state == "done")
    finally:
        launcher.close()
