import json
import os

import numpy as np
import pytest

from rhizome import atomic


def test_write_json_replaces_whole_file(tmp_path):
    target = tmp_path / "out" / "data.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"b": "ü"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": "ü"}
    assert os.listdir(target.parent) == ["data.json"]  # no temp file left behind


def test_failure_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.jsonl"
    atomic.write_jsonl(target, [{"n": 1}])

    def rows():
        yield {"n": 2}
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        atomic.write_jsonl(target, rows())
    assert target.read_text() == '{"n": 1}\n'
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_write_npy_round_trip(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic.write_npy(tmp_path / "v.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), array)


def test_atomic_open_rejects_read_and_append(tmp_path):
    with pytest.raises(ValueError):
        with atomic.atomic_open(tmp_path / "x", "a"):
            pass


def test_outputs_get_normal_file_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "t.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o644
