"""bench/stages.py: a bench's stage is computed once per settings and reused by a rerun."""

import json

from bench.stages import stage


def test_a_stage_is_reused_while_its_settings_stay_and_computed_again_when_they_change(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    assert stage(tmp_path, "data", {"n": 1}, compute) == {"value": 1}
    assert stage(tmp_path, "data", {"n": 1}, compute) == {"value": 1}
    assert len(calls) == 1
    assert stage(tmp_path, "data", {"n": 2}, compute) == {"value": 2}
    saved = json.loads((tmp_path / "data.json").read_text(encoding="utf-8"))
    assert saved["settings"] == {"n": 2} and saved["result"] == {"value": 2} and saved["seconds"] >= 0
