"""Tuning fixtures: the training fixtures' data split and settings that make a tiny-model trial take seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import data_dir  # noqa: F401  (the fixture, shared with the training tests)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tune_args(tiny_model_dir, data_dir, tmp_path):  # noqa: F811
    """tune.py flags for a study of tiny-model trials of 8 steps (4 rows of up to 256 tokens), 4 reports each."""
    def args(tune_dir, *extra):
        return ["-o", str(tune_dir), "--model", str(tiny_model_dir),
                "--train-file", str(data_dir / "dataset_train.jsonl"),
                "--validation-file", str(data_dir / "dataset_validation.jsonl"),
                "--cache-dir", str(tmp_path / "tokenized_cache"), "--max-seq-length", "256", "--batch-size", "2",
                "--grad-accum", "2", "--eval-steps", "1", "--eval-samples", "8", "--trial-tokens", "2500",
                "--reports", "4", "--threads", "1", "--no-plots", "--heartbeat-seconds", "1", "--lr", "3e-3",
                "--warmup-steps", "1", *extra]
    return args


def run_tune(args, **popen):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RHIZOME_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "tune.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def run_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())
