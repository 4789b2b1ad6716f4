import collections
import datetime
import os
import pickle

import numpy as np
import pytest

from rhizome import atomic, safe_pickle


def test_plain_data_round_trips(tmp_path):
    data = [
        {"text": "Grüße 🌱", "score": 0.5, "n": 3, "ok": True, "none": None, "pages": (1, 2), "tags": {"a"}},
        collections.Counter({"bees": 3}),
        collections.defaultdict(list, {"x": [1]}),
        datetime.datetime(2024, 5, 1, 12, 0),
        np.arange(4, dtype=np.float32),
        np.float32(0.25),
    ]
    atomic.write_pickle(tmp_path / "m.pkl", data)
    loaded = safe_pickle.load(tmp_path / "m.pkl")
    assert loaded[:4] == data[:4]
    np.testing.assert_array_equal(loaded[4], data[4])
    assert loaded[5] == np.float32(0.25)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_crafted_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "memory_metadata.pkl"
    path.write_bytes(pickle.dumps([{"text": "hi"}, _Exploit()]))
    with pytest.raises(safe_pickle.UnsafePickleError) as info:
        safe_pickle.load(path)
    message = str(info.value)
    assert str(path) in message and "system" in message


def test_arbitrary_class_is_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(pytest.MonkeyPatch()))
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.load(path)


def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(list(range(100)))[:20])
    with pytest.raises(pickle.UnpicklingError, match="broken.pkl"):
        safe_pickle.load(path)
