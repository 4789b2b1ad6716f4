"""The bundled demo chats: reproducible, and every one of them imports cleanly."""

import importlib.util
from pathlib import Path

from rhizome.ingest import IngestReport, detect_format, load_conversations

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
FILES = {"conversations.json": "chatgpt", "conversations2.json": "claude",
         "custom_conversations.json": "custom", "chat.jsonl": "hf_chat"}


def make_conversations_module():
    spec = importlib.util.spec_from_file_location("make_conversations", SAMPLES / "make_conversations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path, capsys):
    assert make_conversations_module().main([str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), f"{name} is stale: rerun the script"


def test_samples_import_without_errors_and_without_their_traps():
    report = IngestReport()
    conversations = load_conversations([SAMPLES / name for name in FILES], report)
    assert report.errors == [] and report.skipped_conversations == 0 and report.skipped_messages == 0
    assert {str(SAMPLES / name): fmt for name, fmt in FILES.items()} == report.files
    assert all(detect_format(SAMPLES / name) == fmt for name, fmt in FILES.items())
    assert [c.source for c in conversations].count("chatgpt") == 9
    assert [c.source for c in conversations].count("claude") == 5
    for conversation in conversations:
        roles = [m.role for m in conversation.messages]
        assert 2 <= len(roles) <= 6 and roles[0] == "user"
        assert roles == ["user", "assistant"] * (len(roles) // 2), conversation.title
    texts = "\n".join(m.text for c in conversations for m in c.messages)
    for trap in ("Put her below and the brood above.", "pasteurize straw how", "When it is fully colonised.",
                 "A fixed-cup spanner.", "fisher_exact", "Thought for 9 seconds", "classic Trichoderma",
                 "not supported on your current device", "Use metric units", "Searching the web"):
        assert trap not in texts
    assert report.filtered["off_branch"] == 8
