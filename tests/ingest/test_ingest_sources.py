"""Every shape an export arrives in, and every way it can be broken, read to the same conversations."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from rhizome.ingest import (
    DEFAULT_CONVERSATION_FILES, IngestReport, detect_format, iter_conversations, load_conversations,
)

FIXTURES = Path(__file__).parent / "fixtures"
CHATGPT = FIXTURES / "chatgpt_export.json"
CLAUDE = FIXTURES / "claude_export.json"


def summary(conversations):
    return [(c.id, [(m.role, m.text) for m in c.messages]) for c in conversations]


def reference(path):
    return summary(load_conversations([path]))


def chatgpt_records():
    return json.loads(CHATGPT.read_text(encoding="utf-8"))


def test_default_file_names_are_the_originals():
    assert DEFAULT_CONVERSATION_FILES == ("conversations.json", "conversations2.json")


@pytest.mark.parametrize("name, expected", [
    ("chatgpt_export.json", "chatgpt"),
    ("claude_export.json", "claude"),
    ("custom_conversations.json", "custom"),
    ("chat.jsonl", "hf_chat"),
    ("pdf_texts.json", "pdf_texts"),
    ("pdf_chunks_list.json", "pdf_texts"),
])
def test_detect_format_of_each_kind_of_file(name, expected):
    assert detect_format(FIXTURES / name) == expected


def test_detect_format_peeks_instead_of_parsing_the_whole_file(tmp_path):
    # Valid at the start, garbage at the end: only a reader that stops early can still say "chatgpt".
    path = tmp_path / "conversations.json"
    text = json.dumps(chatgpt_records())
    path.write_text(text[:-200] + "@@ damaged @@" * 1000, encoding="utf-8")
    assert detect_format(path) == "chatgpt"


def test_detect_format_of_odd_inputs(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "page.json").write_text("<html></html>")
    (tmp_path / "user.json").write_text('{"id": "user-1", "email": "a@example.org"}')
    (tmp_path / "single.json").write_text(json.dumps(chatgpt_records()[0]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"account": {}, "conversations": json.loads(CLAUDE.read_text())}))
    assert detect_format(tmp_path / "empty.json") == "unknown"
    assert detect_format(tmp_path / "page.json") == "unknown"
    assert detect_format(tmp_path / "user.json") == "unknown"
    assert detect_format(tmp_path / "missing.json") == "unknown"
    assert detect_format(tmp_path / "single.json") == "chatgpt"
    assert detect_format(tmp_path / "wrapped.json") == "claude"


def test_zip_export_is_read_in_place_and_ignores_the_other_files(tmp_path):
    archive = tmp_path / "chatgpt-export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("chat.html", "<html>...</html>")
        zf.writestr("user.json", '{"id": "user-abc", "email": "beekeeper@example.org"}')
        zf.writestr("message_feedback.json", '[{"id": "f1", "conversation_id": "x", "rating": "thumbsUp"}]')
        zf.write(CHATGPT, "conversations.json")
        zf.writestr("__MACOSX/._conversations.json", b"\x00\x05\x16\x07")
    report = IngestReport()
    assert detect_format(archive) == "chatgpt"
    assert summary(iter_conversations([archive], report)) == reference(CHATGPT)
    assert report.errors == []
    assert report.files[f"{archive}/conversations.json"] == "chatgpt"
    assert report.files[f"{archive}/user.json"] == "unknown"
    assert {c.file for c in load_conversations([archive])} == {f"{archive}/conversations.json"}


def test_folder_of_per_conversation_files(tmp_path):
    for record in chatgpt_records():
        if isinstance(record, dict):
            (tmp_path / f"{record['id']}.json").write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    shutil.copy(FIXTURES / "pdf_texts.json", tmp_path / "pdf_texts.json")
    report = IngestReport()
    expected = sorted(reference(CHATGPT))  # files are read in name order
    assert summary(iter_conversations([tmp_path], report)) == expected
    assert report.errors == []
    assert report.skipped_conversations == 1  # the record whose mapping is a list
    assert report.files[str(tmp_path / "pdf_texts.json")] == "pdf_texts"


def test_numbered_split_files_are_read_in_numeric_order(tmp_path):
    records = chatgpt_records()
    for number, record in enumerate(records):
        (tmp_path / f"conversations-{number * 5:d}.json").write_text(json.dumps([record]), encoding="utf-8")
    (tmp_path / "conversations.json.index").write_text("not read")
    (tmp_path / "export_manifest.json").write_text('{"version": 1, "files": ["conversations-000.json"]}')
    report = IngestReport()
    # conversations-5 before conversations-10 before conversations-15, as exported
    assert summary(iter_conversations([tmp_path], report)) == reference(CHATGPT)
    assert report.errors == []


def test_the_same_export_given_twice_is_imported_once(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(CHATGPT, "conversations.json")
    report = IngestReport()
    assert summary(iter_conversations([CHATGPT, archive], report)) == reference(CHATGPT)
    assert report.filtered["duplicate_conversation"] == 4


def test_mixed_inputs_keep_path_order_and_skip_pdf_texts_silently():
    paths = [CLAUDE, FIXTURES / "pdf_texts.json", CHATGPT, FIXTURES / "chat.jsonl"]
    report = IngestReport()
    conversations = load_conversations(paths, report)
    assert [c.source for c in conversations] == ["claude"] * 4 + ["chatgpt"] * 4 + ["hf_chat"] * 4
    assert report.files == {str(CLAUDE): "claude", str(FIXTURES / "pdf_texts.json"): "pdf_texts",
                            str(CHATGPT): "chatgpt", str(FIXTURES / "chat.jsonl"): "hf_chat"}
    assert [file for file, _ in report.errors] == [str(FIXTURES / "chat.jsonl")]  # its deliberately broken line
    assert summary(load_conversations(paths)) == summary(conversations)


def test_one_file_may_mix_formats_decided_per_conversation(tmp_path):
    path = tmp_path / "mixed.json"
    claude_record = json.loads(CLAUDE.read_text())[1]
    custom_record = {"id": "k1", "messages": [{"author": "human", "content": "Hi"},
                                              {"author": "bot", "content": "Hello"}]}
    path.write_text(json.dumps({"conversations": [chatgpt_records()[0], claude_record, custom_record]}))
    assert [c.source for c in load_conversations([path])] == ["chatgpt", "claude", "custom"]


def test_truncated_file_keeps_the_conversations_before_the_damage(tmp_path):
    data = CHATGPT.read_bytes()
    cut = data.index(b'"title": "Sturmey-Archer hub rebuild"') + 200  # inside the third conversation
    path = tmp_path / "conversations.json"
    path.write_bytes(data[:cut])
    report = IngestReport()
    conversations = load_conversations([path], report)
    assert summary(conversations) == reference(CHATGPT)[:2]
    [(file, reason)] = report.errors
    assert file == str(path)
    assert reason.startswith(f"truncated: the JSON stops unfinished at byte {cut} ")
    assert "Kept the 2 conversations before the damage" in reason
    assert "Download the export again" in reason


def test_invalid_byte_is_located_exactly_even_deep_in_a_large_file(tmp_path):
    records = chatgpt_records()[:4] * 60  # about 1.4 MB: the damage sits past the parser's first chunks
    for number, record in enumerate(records):
        record = dict(record, id=f"conv-{number}")
        records[number] = record
    text = json.dumps(records, ensure_ascii=False)
    damaged_at = text.index('"conv-150"')
    text = text[:damaged_at] + "#" + text[damaged_at + 1:]
    path = tmp_path / "conversations.json"
    path.write_text(text, encoding="utf-8")
    report = IngestReport()
    conversations = load_conversations([path], report)
    assert [c.id for c in conversations] == [f"conv-{n}" for n in range(150)]
    [(file, reason)] = report.errors
    assert reason.startswith(f"invalid JSON at byte {len(text[:damaged_at].encode('utf-8'))} (")
    assert "Kept the 150 conversations before the damage" in reason


def test_bad_input_files_are_reported_by_name_without_a_traceback(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "blank.json").write_text("  \n\n ")
    (tmp_path / "chat.html").write_text("<!DOCTYPE html><html></html>")
    (tmp_path / "notes.json").write_text('{"title": "shopping list", "items": ["wax", "frames"]}')
    (tmp_path / "empty_list.json").write_text("[]")
    (tmp_path / "windows.json").write_bytes(json.dumps(chatgpt_records()).encode("utf-16"))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    names = ["missing.json", "empty.json", "blank.json", "chat.html", "notes.json", "empty_list.json",
             "windows.json", "broken.zip", "missing_folder"]
    report = IngestReport()
    assert load_conversations([tmp_path / name for name in names], report) == []
    reasons = dict(report.errors)
    assert [Path(file).name for file, _ in report.errors] == names
    assert "no such file or folder" in reasons[str(tmp_path / "missing.json")]
    assert "the file is empty" in reasons[str(tmp_path / "empty.json")]
    assert "the file is empty" in reasons[str(tmp_path / "blank.json")]
    assert "not JSON (it starts with '<')" in reasons[str(tmp_path / "chat.html")]
    assert "no conversations found" in reasons[str(tmp_path / "notes.json")]
    assert "no conversations found" in reasons[str(tmp_path / "empty_list.json")]
    assert "UTF-16" in reasons[str(tmp_path / "windows.json")]
    assert "not a readable zip archive" in reasons[str(tmp_path / "broken.zip")]


def test_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "conversations.json"
    path.write_bytes(b"\xef\xbb\xbf" + CHATGPT.read_bytes())
    assert detect_format(path) == "chatgpt"
    assert summary(load_conversations([path])) == reference(CHATGPT)


def test_a_folder_without_conversations_and_an_archive_without_json_are_reported(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "user.json").write_text('{"id": "u"}')
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("jar.jpg", b"\xff\xd8\xff")
    report = IngestReport()
    assert load_conversations([folder, archive], report) == []
    reasons = dict(report.errors)
    assert "no conversation files in this folder" in reasons[str(folder)]
    assert "holds no .json or .jsonl files" in reasons[str(archive)]


def test_iteration_is_lazy_one_conversation_at_a_time():
    iterator = iter_conversations([CHATGPT, "does-not-exist.json"])
    first = next(iterator)
    assert first.id == "66a1f0c2-0001-8000-a000-000000000001"
