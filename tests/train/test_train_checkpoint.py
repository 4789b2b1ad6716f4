"""Checkpoints are written whole or not at all; resume picks the newest complete one."""

import json
import random

import numpy as np
import pytest
import torch

from rhizome.train import checkpoint as ckpt


def _fake_checkpoint(folder, step):
    for name in ckpt.REQUIRED_FILES:
        (folder / name).write_text("{}")
    (folder / ckpt.STATE_FILE).write_text(json.dumps({"step": step}))


def test_latest_skips_incomplete_checkpoints(tmp_path):
    for step in (3, 6):
        ckpt.write_checkpoint(tmp_path, step, lambda folder, s=step: _fake_checkpoint(folder, s))
    broken = tmp_path / "checkpoint-9"
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_text("half")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-6"


def test_a_failed_save_leaves_no_checkpoint(tmp_path):
    def write(folder):
        (folder / "adapter_model.safetensors").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.write_checkpoint(tmp_path, 3, write)
    assert list(tmp_path.iterdir()) == []


def test_leftover_temporary_folders_are_removed_and_old_checkpoints_rotated(tmp_path):
    (tmp_path / ".checkpoint-12.tmp-abc").mkdir()
    ckpt.remove_partial(tmp_path)
    assert not (tmp_path / ".checkpoint-12.tmp-abc").exists()
    for step in (1, 2, 3, 4):
        ckpt.write_checkpoint(tmp_path, step, lambda folder, s=step: _fake_checkpoint(folder, s))
    ckpt.rotate(tmp_path, keep=2)
    assert [s for s, _ in ckpt.checkpoints(tmp_path)] == [3, 4]


def test_rng_state_restores_python_numpy_and_torch(tmp_path):
    ckpt.save_rng_state(tmp_path / "rng_state.pth")
    before = (random.random(), np.random.rand(), torch.rand(3).tolist())
    ckpt.load_rng_state(tmp_path / "rng_state.pth")
    assert (random.random(), np.random.rand(), torch.rand(3).tolist()) == before
