"""evaluate.py exits with code 2 and says what is missing and what to do, never a traceback."""

import evaluate


def test_missing_test_file_exits_2(eval_data, adapter_run, tmp_path, capsys):
    code = evaluate.main([str(adapter_run), "--test-file", str(tmp_path / "nope.jsonl"),
                          "--train-file", str(eval_data[0])])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.jsonl not found" in err and "data_formatter.py" in err and "Traceback" not in err


def test_missing_adapter_exits_2(eval_data, tmp_path, capsys):
    code = evaluate.main([str(tmp_path / "no-such-run"), "--train-file", str(eval_data[0]),
                          "--test-file", str(eval_data[1])])
    assert code == 2
    err = capsys.readouterr().err
    assert "adapter not found" in err and "no-such-run" in err and "train_script.py" in err


def test_cli_prints_the_comparison(eval_data, adapter_run, tmp_path, capsys):
    code = evaluate.main([str(adapter_run), "--train-file", str(eval_data[0]), "--test-file", str(eval_data[1]),
                          "--max-samples", "2", "-o", str(tmp_path), "--no-plots", "--force-cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "tiny-finetuned" in out and "Evaluated 2 test pairs" in out
    assert (tmp_path / "eval_report.json").exists() and not (tmp_path / "rare_vs_common.png").exists()
