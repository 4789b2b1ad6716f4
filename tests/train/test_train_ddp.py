"""torchrun with DistributedDataParallel (gloo, 2 CPU processes): the same global batch gives the same run."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _train(launcher: list[str], tiny_model_dir, data_dir, out: Path, batch_size: int, grad_accum: int,
           extra: tuple[str, ...] | list[str] = ()):
    command = [
        *launcher, str(ROOT / "train_script.py"), "--model", str(tiny_model_dir),
        "--train-file", str(data_dir / "dataset_train.jsonl"), "--validation-file", str(data_dir / "dataset_validation.jsonl"),
        "--output-dir", str(out), "--cache-dir", str(data_dir / "tokenized_cache"), "--max-seq-length", "256",
        "--batch-size", str(batch_size), "--grad-accum", str(grad_accum), "--max-steps", "4", "--lr", "2e-3",
        "--warmup-steps", "1", "--lora-dropout", "0", "--save-steps", "2", "--no-plots", "--threads", "1",
        "--precision", "fp32", *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RHIZOME_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=data_dir.parent, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "final" / "training_metrics.json").read_text()), done


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_model_dir, data_dir, tmp_path):
    single, _ = _train([sys.executable], tiny_model_dir, data_dir, tmp_path / "one", batch_size=2, grad_accum=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    ddp, _ = _train(torchrun, tiny_model_dir, data_dir, tmp_path / "two", batch_size=2, grad_accum=1)

    assert [m["step"] for m in ddp["train"]] == [1, 2, 3, 4]
    for a, b in zip(single["train"], ddp["train"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a["step"], a["loss"], b["loss"])
        assert a["real_tokens"] == b["real_tokens"]
    for a, b in zip(single["eval"], ddp["eval"]):
        assert abs(a["loss"] - b["loss"]) <= 1e-4
    checkpoints = sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / "two" / "train.log").read_text().count("saved ") == 2  # written once, by rank 0

    _, again = _train(torchrun, tiny_model_dir, data_dir, tmp_path / "two", batch_size=2, grad_accum=1)
    assert "already complete" in again.stderr
