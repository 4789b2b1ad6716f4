"""What recording a run costs a training step: the work the loop adds after each step, timed on its own.

Per step the trainer appends a metrics.jsonl line (flushed), sends the same scalars to each --report-to
tracker, asks the observers, and looks for the STOP file; the heartbeat thread rewrites heartbeat.json every
5 s. This times that per-step work over many records (a real RunRecorder in a temporary run folder, the real
trackers), with the heartbeat thread running, and prints milliseconds per step for each --report-to choice.
The studio page's budget is 50 ms per step.

    python bench/train_live.py [--steps 2000] [--trackers none tensorboard trackio mlflow]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rhizome.runs import STOP_FILE  # noqa: E402
from rhizome.train.live import RunRecorder, StopRequests  # noqa: E402
from rhizome.train.report import open_trackers  # noqa: E402


def _record(step: int) -> dict:
    return {"kind": "train", "step": step, "epoch": step / 1000, "loss": 2.5 - step * 1e-4, "lr": 5e-5,
            "grad_norm": 0.8, "tokens_per_s": 1234.5, "seconds_per_step": 3.2, "elapsed": step * 3.2,
            "eta_s": 1000.0, "coverage": 0.5, "entropy": 3.1, "time": time.time()}


def measure(trackers: list[str], steps: int) -> tuple[float, float]:
    """Median and worst milliseconds of one step's recording (record + STOP-file check) over ``steps`` steps."""
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        run_dir.mkdir()
        os.environ.setdefault("TRACKIO_DIR", str(Path(folder) / "trackio"))
        previous = os.getcwd()
        os.chdir(folder)  # mlflow.db lands in the temporary folder
        try:
            recorder = RunRecorder(run_dir, {"step": 0, "total_steps": steps}, resumed_step=0,
                                   trackers=open_trackers(trackers, run_dir, 0, {"lr": 5e-5}),
                                   observers=[lambda record: None])
            times = []
            with StopRequests(run_dir / STOP_FILE) as stops:
                for step in range(1, steps + 1):
                    record = _record(step)
                    started = time.perf_counter()
                    recorder.record(record)
                    stops.poll()
                    times.append(time.perf_counter() - started)
            recorder.close("finished")
        finally:
            os.chdir(previous)
    return 1000 * statistics.median(times), 1000 * max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--trackers", nargs="*", default=["none", "tensorboard", "trackio", "mlflow"])
    args = parser.parse_args()
    print(f"{'--report-to':<14} {'median ms/step':>15} {'max ms':>8}  (budget 50 ms)")
    for name in args.trackers:
        median, worst = measure([name], args.steps)
        print(f"{name:<14} {median:>15.3f} {worst:>8.2f}")


if __name__ == "__main__":
    main()
