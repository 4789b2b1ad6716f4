"""eval_report.json / .md and the plots are written where asked, with what the training run saw."""

import json

import pytest

from rhizome.errors import UserError
from rhizome.evaluate.adapters import EvalInputError, default_adapter, resolve_adapters


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
    names = [a.name for a in resolve_adapters([str(adapter_run), str(adapter_run / "final")])]
    assert names == ["tiny-finetuned", "tiny-finetuned-2"]
    first = resolve_adapters([str(adapter_run / "final")])[0]
    assert (first.path, first.run_dir) == (adapter_run / "final", adapter_run)
    assert first.base_model == str(tiny_model_dir)  # training_config.json


def test_a_run_without_final_points_at_its_checkpoint(tmp_path):
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="not finished.*checkpoint-8"):
        resolve_adapters([str(tmp_path)])


def test_with_no_adapter_named_the_newest_run_here_is_evaluated(tmp_path, adapter_run, tiny_model_dir):
    with pytest.raises(EvalInputError, match="No trained adapter found.*python evaluate.py RUN_OR_ADAPTER_FOLDER"):
        default_adapter(str(tiny_model_dir), root=tmp_path)
    (tmp_path / "mine").symlink_to(adapter_run)
    assert default_adapter(str(tiny_model_dir), root=tmp_path) == str(tmp_path / "mine")
    with pytest.raises(EvalInputError, match="No adapter trained on Qwen/Qwen2.5-0.5B-Instruct"):
        default_adapter("Qwen/Qwen2.5-0.5B-Instruct", root=tmp_path)
