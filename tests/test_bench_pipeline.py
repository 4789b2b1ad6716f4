"""bench/pipeline.py: stage 4's tokenisation as the bench runs it, and the estimate from two measurements."""

import shutil
from pathlib import Path

import pytest

from bench.pipeline import on_the_line, run_stage

FIXTURES = Path(__file__).parent / "train" / "fixtures"


def test_the_tokenise_stage_builds_the_cache_of_both_splits_and_reports_its_peak_memory(tmp_path, smol_dir):
    (tmp_path / "data_finetune").mkdir()
    for split in ("train", "validation"):
        shutil.copy(FIXTURES / f"dataset_{split}.jsonl", tmp_path / "data_finetune" / f"dataset_{split}.jsonl")
    result = run_stage("tokenise", tmp_path)
    assert result["items"] == 48 + len((FIXTURES / "dataset_validation.jsonl").read_text().splitlines())
    assert result["tokens"] > 0 and result["workers"] >= 1 and result["peak_rss_mb"] > 0
    assert len(list((tmp_path / "tokenized_cache").iterdir())) == 2


def test_the_estimate_separates_the_fixed_cost_from_the_cost_per_conversation():
    # 60 s of loading plus 0.5 s per conversation, measured at 100 and 1,000 conversations
    assert on_the_line((100, 1000), (110.0, 560.0), 2000) == pytest.approx(1060.0)
