"""Exact resume: kill -9 a run (while it writes a checkpoint), rerun the same command, get the same run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _command(tiny_model_dir, data_dir, out: Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "train_script.py"), "--model", str(tiny_model_dir),
        "--train-file", str(data_dir / "dataset_train.jsonl"), "--validation-file", str(data_dir / "dataset_validation.jsonl"),
        "--output-dir", str(out), "--cache-dir", str(data_dir / "tokenized_cache"), "--max-seq-length", "256",
        "--batch-size", "2", "--grad-accum", "2", "--num-train-epochs", "2", "--lr", "2e-3", "--warmup-steps", "2",
        "--lora-dropout", "0.1", "--save-steps", "3", "--eval-steps", "4", "--logging-steps", "1", "--no-plots",
        "--threads", "1",
    ]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RHIZOME_NO_PROGRESS": "1"}


def _run(command, cwd):
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _kill_while_saving(command, cwd, out: Path, step: int) -> None:
    """Start the run and SIGKILL it as soon as checkpoint-<step> is being written."""
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if list(out.glob(f".checkpoint-{step}.tmp-*")) or (out / f"checkpoint-{step}").exists():
                break
            time.sleep(0.002)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def _metrics(out: Path) -> dict:
    return json.loads((out / "final" / "training_metrics.json").read_text())


def test_kill_9_and_rerun_matches_an_uninterrupted_run(tiny_model_dir, data_dir, tmp_path):
    reference = tmp_path / "reference"
    uninterrupted = subprocess.Popen(_command(tiny_model_dir, data_dir, reference), cwd=tmp_path, env=_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    resumed = tmp_path / "resumed"
    command = _command(tiny_model_dir, data_dir, resumed)
    _kill_while_saving(command, tmp_path, resumed, step=6)
    print("after kill:", sorted(p.name for p in resumed.iterdir()))
    assert not (resumed / "final").exists()
    checkpoint_6 = resumed / "checkpoint-6"
    assert not checkpoint_6.exists() or (checkpoint_6 / "trainer_state.json").exists()  # never half-written
    rerun = _run(command, tmp_path)
    assert "resuming from" in rerun.stderr
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()[-3000:]
    assert not list(resumed.glob(".checkpoint-*"))  # the killed run's temporary folder was cleaned up

    expected, got = _metrics(reference), _metrics(resumed)
    assert [m["step"] for m in got["train"]] == [m["step"] for m in expected["train"]]
    for a, b in zip(expected["train"], got["train"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a["step"], a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4
    assert [round(m["loss"], 5) for m in got["eval"]] == [round(m["loss"], 5) for m in expected["eval"]]
    assert got["train"][-1]["loss"] < got["train"][0]["loss"]

    weights_a = load_file(reference / "final" / "adapter_model.safetensors")
    weights_b = load_file(resumed / "final" / "adapter_model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], atol=1e-5, rtol=0)
    assert any(weights_a[name].abs().sum() > 0 for name in weights_a if "lora_B" in name)

    again = _run(command, tmp_path)  # a finished run: the same command does nothing more
    assert "already complete" in again.stderr
