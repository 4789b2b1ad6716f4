"""export_model.py: exit 2 with a clear message for what the user can fix, a summary on success."""

import export_model


def test_missing_adapter_exits_2_with_a_clear_message(tmp_path, capsys):
    assert export_model.main([str(tmp_path / "no-such-run")]) == 2
    err = capsys.readouterr().err
    assert "error: adapter not found" in err and "no-such-run" in err and "Traceback" not in err


def test_no_adapter_here_exits_2_and_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert export_model.main([]) == 2
    assert "train_script.py" in capsys.readouterr().err


def test_export_writes_the_default_folder_and_refuses_to_overwrite_silently(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_config.json").write_text((tiny_run / "training_config.json").read_text())
    (run / "final").symlink_to(tiny_run / "final")
    assert export_model.main([str(run), "--no-gguf", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert f"Hugging Face folder: {run / 'merged'}" in out and "AutoModelForCausalLM.from_pretrained" in out
    assert (run / "merged" / "model.safetensors").is_file() and not list(run.glob(".merged*"))

    assert export_model.main([str(run), "--no-gguf", "--no-verify"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert export_model.main([str(run), "--no-gguf", "--no-verify", "--overwrite", "--dtype", "bfloat16"]) == 0
    assert "bfloat16" in capsys.readouterr().out


def test_a_missing_base_model_exits_2_naming_it(tiny_run, tmp_path, capsys):
    assert export_model.main([str(tiny_run), "--base", str(tmp_path / "gone"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot load the base model" in err and "gone" in err and "--base" in err
    assert not (tmp_path / "out").exists()
