"""torchrun with FSDP2 (gloo, 2 CPU processes): the same global batch gives the run of one process, and a run
resumed from a sharded checkpoint follows the run that never stopped."""

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from rhizome.train import sharding
from rhizome.train.checkpoint import REQUIRED_FILES, STATE_FILE
from rhizome.train.config import TrainConfig
from rhizome.train.loop import FineTune, ResumeError
from tests.train.test_train_ddp import _train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _adapter(folder):
    return load_file(folder / "adapter_model.safetensors")


def _assert_same_adapter(a: dict, b: dict, tolerance: float) -> None:
    assert a.keys() == b.keys() and any(".lora_A." in k for k in a)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tolerance, rtol=0), key


def test_fsdp_on_two_gloo_processes_matches_one_process_and_resumes_exactly(tiny_model_dir, data_dir, tmp_path):
    single, _ = _train([sys.executable], tiny_model_dir, data_dir, tmp_path / "one", batch_size=2, grad_accum=2)
    out = tmp_path / "fsdp"
    fsdp, done = _train(TORCHRUN, tiny_model_dir, data_dir, out, batch_size=2, grad_accum=1,
                        extra=["--sharding", "fsdp"])
    assert "x 2 processes (fsdp)" in done.stderr

    assert [m["step"] for m in fsdp["train"]] == [1, 2, 3, 4]
    for a, b in zip(single["train"], fsdp["train"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a["step"], a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * max(1.0, a["grad_norm"])
        assert a["real_tokens"] == b["real_tokens"]
    for a, b in zip(single["eval"], fsdp["eval"], strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4
    # The checkpoint holds the whole adapter and optimizer, as one process writes them.
    for step in (2, 4):
        assert all((out / f"checkpoint-{step}" / name).is_file() for name in REQUIRED_FILES)
    _assert_same_adapter(_adapter(tmp_path / "one" / "final"), _adapter(out / "final"), 1e-5)
    one_moments = torch.load(tmp_path / "one" / "checkpoint-4" / "optimizer.pt", weights_only=True)
    fsdp_moments = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=True)
    assert one_moments["state"].keys() == fsdp_moments["state"].keys()
    for i, state in one_moments["state"].items():
        assert torch.allclose(state["exp_avg_sq"], fsdp_moments["state"][i]["exp_avg_sq"], atol=1e-9, rtol=1e-3)

    # Killed after the checkpoint of step 2: the rerun resumes there and ends where the whole run ended.
    uninterrupted = _adapter(out / "final")
    for name in ("checkpoint-4", "final", "best"):
        shutil.rmtree(out / name)
    resumed, done = _train(TORCHRUN, tiny_model_dir, data_dir, out, batch_size=2, grad_accum=1,
                           extra=["--sharding", "fsdp"])
    assert "resuming from" in done.stderr and "step 2 of 4" in done.stderr
    assert [m["loss"] for m in resumed["train"]] == [m["loss"] for m in fsdp["train"]]
    _assert_same_adapter(uninterrupted, _adapter(out / "final"), 0.0)


def test_a_checkpoint_resumes_only_under_the_number_of_processes_that_wrote_it(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    for name in REQUIRED_FILES:
        (checkpoint / name).write_text("{}")
    (checkpoint / STATE_FILE).write_text(json.dumps({"step": 2, "world_size": 2}))
    with pytest.raises(ResumeError, match="written by 2 processes and this run has 1"):
        FineTune(TrainConfig(output_dir=str(tmp_path / "run")))._prepare_run_dir()


def test_sharding_names_what_the_launch_lacks():
    assert [sharding.resolve("auto", world) for world in (1, 2)] == ["none", "ddp"]
    with pytest.raises(sharding.ShardingError, match="torchrun --nproc-per-node"):
        sharding.resolve("fsdp", 1)
    with pytest.raises(sharding.ShardingError, match="separate copies"):
        sharding.resolve("none", 2)
