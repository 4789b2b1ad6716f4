"""What the training studio costs a run, measured side by side.

1. Step time: the same short training of a tiny model (SmolLM2's tokenizer, 2 layers of width 64), run as a
   ``train_script.py`` subprocess either unwatched or watched (``studio.py`` serving the folder with headless
   Chromium on its Train tab, the plots redrawn at each tick), alternating so that load on a shared machine hits
   both alike. Per run the median ``seconds_per_step`` of metrics.jsonl (the first steps left out: warm-up);
   reported: the median over runs of each, and the difference. Goal: watching adds < 50 ms to a step.
2. Idle watching: the CPU time of the ``studio.py`` process over ``--idle-seconds`` with Chromium attached and
   watching a finished run (ticks that find nothing new). Goal: < 5% of one core.

    python bench/studio.py [--pairs 3] [--steps 30] [--idle-seconds 60] [--refresh 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rhizome import atomic  # noqa: E402
from tests.browser_support import browser_installed, chromium_driver, free_port  # noqa: E402

WARMUP_STEPS = 3
OUT = ROOT / "bench" / "out" / "studio.json"


def make_folder(work: Path) -> None:
    """A working folder with the tiny model and the training fixture data."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import resolve_model

    smol = resolve_model(DEFAULT_MODEL)
    config = AutoConfig.from_pretrained(smol)
    config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "tiny")
    AutoTokenizer.from_pretrained(smol).save_pretrained(work / "tiny")
    shutil.copytree(ROOT / "tests" / "train" / "fixtures", work / "data_finetune")


def train(work: Path, name: str, steps: int) -> float:
    """Train one run to the end; the median seconds per step after the warm-up steps."""
    argv = [sys.executable, str(ROOT / "train_script.py"), "--model", "tiny", "-o", name, "--max-steps", str(steps),
            "--logging-steps", "1", "--save-steps", str(steps), "--eval-steps", str(steps), "--eval-samples", "2",
            "--max-seq-length", "128", "--batch-size", "2", "--grad-accum", "1", "--no-plots"]
    subprocess.run(argv, cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "RHIZOME_NO_PROGRESS": "1"})
    records = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds_per_step"] for r in records if r.get("kind") == "train" and r["step"] > WARMUP_STEPS]
    return statistics.median(seconds)


class WatchingPage:
    """studio.py serving ``work`` in its own process, and headless Chromium on its Train tab."""

    def __init__(self, work: Path, refresh: float):
        port = free_port()
        self.process = subprocess.Popen([sys.executable, str(ROOT / "studio.py"), "--port", str(port),
                                         "--refresh-seconds", str(refresh)], cwd=work,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            if line.startswith("Studio: "):
                break
        self.browser = contextlib.ExitStack()
        self.driver = self.browser.enter_context(chromium_driver())
        self.driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(3)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def close(self) -> None:
        self.browser.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="watched and unwatched runs, alternating")
    parser.add_argument("--steps", type=int, default=30, help="steps per run")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--refresh", type=float, default=2.0, help="the page's tick (studio.py --refresh-seconds)")
    parser.add_argument("--idle-only", action="store_true", help="only the idle watching (a run is trained first)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not browser_installed():
        raise SystemExit("bench/studio.py needs Debian's chromium and chromium-driver")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rhizome-studio-bench-") as folder:
        work = Path(folder)
        make_folder(work)
        unwatched, watched = [], []
        if args.idle_only:
            train(work, "finished", args.steps)
        for pair in range(0 if args.idle_only else args.pairs):
            unwatched.append(train(work, f"unwatched-{pair}", args.steps))
            page = WatchingPage(work, args.refresh)
            try:
                watched.append(train(work, f"watched-{pair}", args.steps))
            finally:
                page.close()
            print(f"pair {pair + 1}: unwatched {unwatched[-1] * 1000:.0f} ms/step, watched "
                  f"{watched[-1] * 1000:.0f} ms/step", flush=True)
        page = WatchingPage(work, args.refresh)
        try:
            start = page.cpu_seconds()
            time.sleep(args.idle_seconds)
            idle_cpu = page.cpu_seconds() - start
        finally:
            page.close()
    result = {"idle_cpu_seconds": idle_cpu, "idle_seconds": args.idle_seconds, "refresh_seconds": args.refresh,
              "idle_cpu_percent": 100 * idle_cpu / args.idle_seconds,
              "load_average": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count()}
    if watched:
        result.update({"unwatched_ms_per_step": [s * 1000 for s in unwatched],
                       "watched_ms_per_step": [s * 1000 for s in watched],
                       "unwatched_median_ms": statistics.median(unwatched) * 1000,
                       "watched_median_ms": statistics.median(watched) * 1000})
        result["overhead_ms"] = result["watched_median_ms"] - result["unwatched_median_ms"]
    atomic.write_json(OUT, result)
    if watched:
        print(f"\nStep time ({args.steps} steps of the tiny model, medians of {args.pairs} runs each, alternating): "
              f"unwatched {result['unwatched_median_ms']:.0f} ms, watched {result['watched_median_ms']:.0f} ms, "
              f"overhead {result['overhead_ms']:+.0f} ms (goal < 50 ms)")
    print(f"Idle watching: studio.py used {idle_cpu:.2f} s of CPU in {args.idle_seconds:.0f} s = "
          f"{result['idle_cpu_percent']:.2f}% of one core (goal < 5%), ticking every {args.refresh:g} s")
    print(f"Load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs; "
          f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
