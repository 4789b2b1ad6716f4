"""UCS_v3_4_1.py chat with messages piped in: one reply per line read, and with --stats one timing line per reply."""

import io
import re

import pytest

import UCS_v3_4_1 as ucs

STATS = re.compile(r"^prompt_tokens=(\d+) ttft_ms=(\d+) decode_tok_s=([\d.]+) engine=(\S+)$", re.MULTILINE)


@pytest.mark.parametrize("engine", ["ct2", "torch"])
def test_piped_messages_get_one_reply_each_and_a_stats_line(engine, tiny_chat_model_dir, small_memory_dir,
                                                           tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RHIZOME_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("How warm should the fruiting room be?\n\nAnd how humid?\n"))
    rc = ucs.main(["chat", "--stats", "--engine", engine, "--base-model", tiny_chat_model_dir, "--adapter", "none",
                   "--memory-dir", str(small_memory_dir), "--k", "0", "--no-remember", "--temperature", "0",
                   "--max-new-tokens", "12"])
    captured = capsys.readouterr()
    assert rc == 0
    # A tiny random model's replies are random tokens, newlines among them: a reply is what precedes its stats line.
    parts = STATS.split(captured.out)
    assert len(parts) == 1 + 2 * 5 and not parts[-1].strip()  # two replies, each followed by one stats line
    first, second = parts[1:5], parts[6:10]
    assert int(second[0]) > int(first[0])  # the second prompt carries the first turn (no memories: --k 0)
    assert float(first[2]) > 0 and first[3] == ("ct2-int8" if engine == "ct2" else "torch-float32")
    assert f"Engine: {engine}" in captured.err  # the choice and its reason, off the replies' stream
