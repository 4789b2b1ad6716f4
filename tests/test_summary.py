"""The demo's last step reads back what each stage wrote and says where it is."""

import json

from rhizome import summary


def test_summary_lists_outputs_and_compares_perplexity(tmp_path, capsys):
    (tmp_path / "pdf_texts.json").write_text(json.dumps({"files": [{"file": "a.pdf"}, {"file": "b.pdf"}],
                                                         "chunks": [{"text": "x"}] * 5}))
    (tmp_path / "memory_config.json").write_text(json.dumps({"summary": {"items": 42, "dim": 384}}))
    (tmp_path / "data_finetune").mkdir()
    (tmp_path / "data_finetune" / "dataset_metadata.json").write_text(
        json.dumps({"splits": {"train": 8, "validation": 1, "test": 2}, "unique_themes": 7}))
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_model.safetensors").write_bytes(b"\0" * 2048)
    (run / "final" / "adapter_config.json").write_text("{}")
    overall = {"loss": 0, "token_accuracy": 0, "pairs": 2, "tokens": 90}
    (run / "eval_report.json").write_text(json.dumps({"models": {
        "base": {"overall": {**overall, "perplexity": 50.0}},
        "run": {"overall": {**overall, "perplexity": 40.0}}}}))
    (run / "eval_report.md").write_text("|")

    assert summary.main(["--root", str(tmp_path), "--run-dir", "run", "--seconds", "90"]) == 0
    out = capsys.readouterr().out
    assert "5 chunks from 2 PDFs" in out and "42 items x 384 dims" in out
    assert "8 train / 1 validation / 2 test pairs, 7 themes" in out and "2.0 KB" in out
    assert "base 50.00 -> run 40.00 (-20.0%)" in out and "1.5 min" in out


def test_summary_of_nothing_says_what_to_run(tmp_path, capsys):
    assert summary.main(["--root", str(tmp_path)]) == 1
    assert "make demo" in capsys.readouterr().err
