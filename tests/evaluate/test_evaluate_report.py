"""eval_report.json / .md and the plots are written where asked, with what the training run saw."""

import json

import pytest

from rhizome.evaluate.adapters import EvalInputError, locate, resolve_adapters


def test_report_files_are_written(evaluation):
    report, out = evaluation
    on_disk = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert on_disk["models"].keys() == {"base", "tiny-finetuned"}
    assert on_disk["config"]["rare_max_pairs"] == 2 and on_disk["test"]["pairs"] == 5
    table = (out / "eval_report.md").read_text(encoding="utf-8")
    assert "| tiny-finetuned | rare | 2 |" in table and "| base | common | 2 |" in table
    for name in ("per_theme_perplexity.png", "rare_vs_common.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "eval_config.json").read_text(encoding="utf-8"))["adapters"] == report["config"]["adapters"]


def test_trained_on_comes_from_the_theme_tracker(evaluation):
    report, _ = evaluation
    assert report["models"]["base"]["trained_on"] is None
    trained = report["models"]["tiny-finetuned"]["trained_on"]
    assert trained["coverage"] == 0.75 and trained["themes_seen"] == 3 and trained["themes_total"] == 4
    assert trained["entropy"] > 0


def test_adapter_folders_resolve_to_unique_names(adapter_run, tiny_model_dir):
    assert locate(str(adapter_run)) == (adapter_run / "final", adapter_run)
    assert locate(str(adapter_run / "final")) == (adapter_run / "final", adapter_run)
    names = [a.name for a in resolve_adapters([str(adapter_run), str(adapter_run / "final")])]
    assert names == ["tiny-finetuned", "tiny-finetuned-2"]
    assert resolve_adapters([str(adapter_run / "final")])[0].base_model == str(tiny_model_dir)  # training_config.json


def test_a_run_without_final_points_at_its_checkpoint(tmp_path):
    (tmp_path / "checkpoint-8").mkdir()
    with pytest.raises(EvalInputError, match="checkpoint-8"):
        locate(str(tmp_path))
