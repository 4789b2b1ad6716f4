"""UCS_v3_4_1.py: search a memory from the terminal, show the effective config, clear errors."""

import json

import pytest

import UCS_v3_4_1 as ucs
from rhizome.memory.embedder import text_key
from rhizome.memory.store import Memory

TEXTS = {
    "Queen cells in May mean the colony is preparing to swarm.": ("pdf", "/srv/private/PDFs/bees.pdf"),
    "A worn chain skips on the rear cog under load.": ("chatgpt", None),
}


@pytest.mark.slow
def test_search_prints_scores_and_sources(tmp_path, capsys):
    memory = Memory.empty()
    memory.add([{"id": f"i{n}", "text": text, "text_hash": text_key(text), "source": source, "role": "document",
                 "file": file, "page_start": 7, "page_end": 7, "conversation_title": "Bike chain",
                 "timestamp": 1714608000} for n, (text, (source, file)) in enumerate(TEXTS.items())])
    memory.save(tmp_path)
    rc = ucs.main(["search", "signs that my bees will swarm", "--memory-dir", str(tmp_path), "--k", "1",
                   "--min-score", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Memory: 2 items. 1 used for 'signs that my bees will swarm' (k=1, min score 0.20" in out
    assert "1. score 0." in out and "bees.pdf, p. 7" in out and "Queen cells in May" in out
    assert "/srv/private" not in out and "chain" not in out

    assert ucs.main(["search", "bicycle", "--memory-dir", str(tmp_path), "--min-score", "0.99"]) == 0
    assert "none scored 0.99 or more" in capsys.readouterr().out


def test_missing_memory_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    assert ucs.main(["search", "anything", "--memory-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: memory files missing") and "python batch_embedder.py" in err
    assert ucs.main(["search", "--memory-dir", str(tmp_path)]) == 2
    assert "say what to search for" in capsys.readouterr().err


def test_config_prints_the_effective_settings_and_the_adapter_choice(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chat.json").write_text(json.dumps({"temperature": 0.2}))
    assert ucs.main(["config", "--config", "chat.json", "--port", "8000"]) == 0
    out = capsys.readouterr().out
    settings = json.loads(out[:out.rindex("}") + 1])
    assert settings["temperature"] == 0.2 and settings["port"] == 8000 and settings["adapter"] == "auto"
    assert "No trained adapter found" in out
    assert ucs.main(["config", "--adapter", "nowhere"]) == 2
    assert "error: adapter not found: nowhere" in capsys.readouterr().err


def test_config_never_prints_a_password(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ucs.main(["config", "--auth", "me:hunter2"]) == 0
    out = capsys.readouterr().out
    settings = json.loads(out[:out.rindex("}") + 1])
    assert "hunter2" not in out and "auth" not in settings, "the printed settings are saved and reused as --config"
    assert "Login: user(s) me from --auth (passwords not shown)." in out

    monkeypatch.setenv("RHIZOME_AUTH", "you:pass word")
    assert ucs.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "pass word" not in out and "Login: user(s) you from RHIZOME_AUTH" in out
    (tmp_path / "logins.txt").write_text("me:hunter2\nbroken line\n")
    assert ucs.main(["config", "--auth-file", "logins.txt"]) == 2
    err = capsys.readouterr().err
    assert "line 2 of --auth-file logins.txt" in err and "hunter2" not in err
