"""Hostile or unlucky input: each file is named, skipped or repaired, counted, and the run goes on.

Nothing here may end in a traceback, a hang or unbounded memory; every
good conversation next to a bad one is still imported.
"""

import datetime
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from bench.fuzz_inputs import patch_member
from rhizome.ingest import IngestReport, InputLimits, iter_conversations, load_conversations
from rhizome.ingest.chatgpt import active_branch
from rhizome.ingest.stream import JsonGuard

REPO = Path(__file__).resolve().parents[2]


def claude(uuid, *texts, updated="2024-05-01T10:00:00Z", **extra):
    """A Claude conversation whose turns alternate human / assistant."""
    messages = [{"uuid": f"{uuid}-{n}", "sender": "human" if n % 2 == 0 else "assistant", "text": text,
                 "created_at": "2024-05-01T09:00:00Z"} for n, text in enumerate(texts)]
    return {"uuid": uuid, "name": f"chat {uuid}", "created_at": "2024-05-01T09:00:00Z", "updated_at": updated,
            "chat_messages": messages, **extra}


def texts(conversations):
    return {c.id: [m.text for m in c.messages] for c in conversations}


def write_json(path, records):
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


# --- JSON nested very deep -----------------------------------------------------------------------------

DEEP_SCRIPT = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))  # 2 GB: unbounded growth fails, not the machine
from rhizome.ingest import IngestReport, detect_format, iter_conversations
report = IngestReport()
ids = [c.id for c in iter_conversations(sys.argv[1:], report)]
print(json.dumps({"ids": ids, "errors": report.errors, "formats": [detect_format(p) for p in sys.argv[1:]]}))
"""


def test_json_nested_100000_deep_is_reported_in_bounded_memory(tmp_path):
    # 200 KB of nested arrays took over 24 GB in the prefix parser: run under a 2 GB address-space limit.
    deep = tmp_path / "deep.json"
    good = json.dumps(claude("before", "kept before the damage", "yes"))
    deep.write_text(f"[{good}, " + "[" * 100_000 + "]" * 100_000 + f", {json.dumps(claude('after', 'a', 'b'))}]")
    unclosed = tmp_path / "unclosed.json"
    unclosed.write_text("[" * 200_000)  # nothing before the depth: the format peek meets it first
    other = write_json(tmp_path / "other.json", [claude("next", "the next file is read", "yes")])
    done = subprocess.run([sys.executable, "-c", DEEP_SCRIPT, str(deep), str(unclosed), str(other)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["ids"] == ["before", "next"]
    assert result["formats"] == ["claude", "unknown", "claude"]
    [(file, reason), (second, second_reason)] = result["errors"]
    assert second == str(unclosed) and "at byte 256 (nested deeper than 256 levels" in second_reason
    assert file == str(deep)
    offset = len(f"[{good}, ") + 255  # the bracket that opens level 257
    assert f"at byte {offset} (nested deeper than 256 levels" in reason
    assert "Kept the 1 conversation" in reason


def test_jsonl_line_nested_deep_is_skipped_and_the_next_lines_read(tmp_path):
    path = tmp_path / "chat.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]})
    path.write_text(line + "\n" + '{"messages": ' + "[" * 50_000 + "]" * 50_000 + "}\n" + line + "\n")
    report = IngestReport()
    assert len(load_conversations([path], report)) == 2
    [(file, reason)] = report.errors
    assert "line 2 (byte" in reason and "nested deeper than 256 levels" in reason


def test_json_file_whose_first_line_is_nested_deep_is_reported(tmp_path):
    # A .json file starting with "{" is sniffed for JSONL by parsing its first line.
    path = tmp_path / "odd.json"
    path.write_text('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}\n" + '{"b": 1}\n')
    other = write_json(tmp_path / "other.json", [claude("c1", "hello", "hi")])
    report = IngestReport()
    assert [c.id for c in iter_conversations([path, other], report)] == ["c1"]
    assert [file for file, _ in report.errors] == [str(path)]


# --- numbers the parser cannot hold ------------------------------------------------------------------

@pytest.mark.parametrize("number", ["9" * 5000, str(2 ** 63), str(-(2 ** 63)), "1e400", "-4" + "0" * 400 + ".5"])
def test_numbers_beyond_int64_or_double_range_read_as_null_and_the_file_goes_on(tmp_path, number):
    records = [claude("c1", "one", "two"), claude("c2", "three", "four"), claude("c3", "five", "six")]
    text = json.dumps(records).replace('"updated_at": "2024-05-01T10:00:00Z"', '"updated_at": NUMBER', 2)
    text = text.replace("NUMBER", number, 1).replace("NUMBER", '"2024-05-01T10:00:00Z"')
    path = tmp_path / "conversations.json"
    path.write_text(text)
    report = IngestReport()
    conversations = load_conversations([path], report)
    assert [c.id for c in conversations] == ["c1", "c2", "c3"]
    assert conversations[0].update_time is None
    assert report.repaired["number_out_of_range"] == 1
    [(file, reason)] = report.errors
    assert f"(the first at byte {text.index(number)}) read as null" in reason


def test_jsonl_numbers_of_thousands_of_digits_do_not_stop_the_file(tmp_path):
    path = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"id": 1, "messages": [{"role": "user", "content": "when?", "timestamp": 2}]}
    line = json.dumps(bad).replace('"id": 1', '"id": ' + "7" * 5000)
    line = line.replace('"timestamp": 2', f'"timestamp": {2 ** 64}')
    path.write_text("\n".join([json.dumps(good), line, json.dumps(good)]) + "\n")
    report = IngestReport()
    conversations = load_conversations([path], report)
    assert len(conversations) == 3
    assert conversations[1].messages[0].timestamp is None
    assert report.repaired["number_out_of_range"] == 2


# --- fields of the wrong type, times out of range ------------------------------------------------------

def test_fields_of_the_wrong_type_cost_only_their_record(tmp_path):
    bad = claude("c2", "branch", "es")
    for message in bad["chat_messages"]:
        message["uuid"] = [message["uuid"]]  # a list where an id belongs
        message["parent_message_uuid"] = {"not": "an id"}
    path = write_json(tmp_path / "conversations.json", [claude("c1", "a", "b"), bad, claude("c3", "c", "d")])
    report = IngestReport()
    assert [c.id for c in load_conversations([path], report)] == ["c1", "c3"]
    assert report.errors == []


@pytest.mark.parametrize("moment", [1e300, -5e12, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                    "1" * 400])
def test_times_out_of_range_are_dropped_and_counted(tmp_path, moment):
    record = claude("c1", "hello", "hi", updated=moment)
    record["created_at"] = moment
    record["chat_messages"][0]["created_at"] = moment
    path = write_json(tmp_path / "conversations.json", [record])
    report = IngestReport()
    [conversation] = load_conversations([path], report)
    assert conversation.create_time is None and conversation.update_time is None
    assert conversation.messages[0].timestamp is None
    assert report.repaired["timestamp_out_of_range"] == 3
    for when in (conversation.messages[1].timestamp,):  # the good one still formats as a date
        assert datetime.datetime.fromtimestamp(when, datetime.timezone.utc).year == 2024


# --- lone surrogates -------------------------------------------------------------------------------------

def test_lone_surrogates_are_replaced_in_json_and_jsonl(tmp_path):
    jsonl = tmp_path / "chat.jsonl"
    jsonl.write_text('{"messages": [{"role": "user", "content": "a\\udc00b \\ud83d\\ude00"}, '
                     '{"role": "assistant", "content": "c\\ud800"}]}\n')
    records = json.dumps([claude("c1", "x", "y"), claude("c2", "SURROGATE", "z"), claude("c3", "p", "q")])
    export = tmp_path / "conversations.json"
    export.write_text(records.replace("SURROGATE", "left \\udfff right"))
    report = IngestReport()
    conversations = load_conversations([jsonl, export], report)
    assert [m.text for m in conversations[0].messages] == ["a\ufffdb \U0001F600", "c\ufffd"]
    assert [c.id for c in conversations[1:]] == ["c1", "c2", "c3"]
    assert conversations[2].messages[0].text == "left \ufffd right"
    for conversation in conversations:
        for message in conversation.messages:
            message.text.encode("utf-8")  # what the embedder's cache key and write_jsonl do
    assert report.repaired["lone_surrogate"] == 3


def test_bytes_that_are_not_utf8_are_read_as_question_marks(tmp_path):
    # yajl stops a file at a stray byte and lets an encoded surrogate or an overlong form through to
    # Python's decoder, which stopped it with a traceback; either way the rest of the file was lost.
    records = json.dumps([claude("c1", "x", "y"), claude("c2", "BAD", "z"), claude("c3", "p", "q")]).encode()
    path = tmp_path / "conversations.json"
    path.write_bytes(records.replace(b"BAD", b"a\xed\xa0\x80b\xc0\x80c\xffd"))
    jsonl = tmp_path / "chat.jsonl"
    jsonl.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9 \x91quoted\x92"}]}\n')
    report = IngestReport()
    conversations = load_conversations([path, jsonl], report)
    assert [c.id for c in conversations[:3]] == ["c1", "c2", "c3"]
    assert conversations[1].messages[0].text == "a???b??c?d"
    assert conversations[3].messages[0].text == "caf? ?quoted?"
    assert report.repaired["not_utf8_byte"] == 9


def test_the_guard_hands_valid_json_on_unchanged_however_it_is_cut():
    # ensure_ascii writes 🌱 as a surrogate pair of escapes; the other copy keeps the UTF-8 bytes
    value = [{"text": 'quote " backslash \\ tab \t é 東京 🌱', "n": [1, -2.5e10, 2 ** 62],
              "deep": [[[{"a": None, "b": True}]]], "key \\": "\\\\"}] * 3
    data = f"[{json.dumps(value, ensure_ascii=False)}, {json.dumps(value)}]".encode()
    for size in (1, 2, 3, 5, 7, 13, 64, len(data)):
        guard = JsonGuard()
        out = b"".join(guard.feed(data[start:start + size]) for start in range(0, len(data), size))
        out += guard.feed(b"", final=True)
        assert out == data, size
        assert guard.depth == 0 and not guard.in_string
        assert guard.repairs.numbers == guard.repairs.surrogates == guard.repairs.bad_bytes == 0


# --- pipes and devices -----------------------------------------------------------------------------------

def test_a_fifo_or_device_is_refused_not_read(tmp_path):
    fifo = tmp_path / "conversations.json"
    os.mkfifo(fifo)
    folder = tmp_path / "export"
    folder.mkdir()
    os.mkfifo(folder / "conversations-000.json")
    write_json(folder / "conversations-001.json", [claude("c1", "a", "b")])
    report = IngestReport()
    result = []
    reader = threading.Thread(target=lambda: result.extend(iter_conversations([fifo, "/dev/zero", folder],
                                                                              report)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "reading a FIFO hung the import"
    assert [c.id for c in result] == ["c1"]
    reasons = dict(report.errors)
    for name in (str(fifo), "/dev/zero", str(folder / "conversations-000.json")):
        assert "not a regular file" in reasons[name]


# --- zip archives ----------------------------------------------------------------------------------------

def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_password_protected_and_unsupported_members_are_named_and_the_others_read(tmp_path):
    members = {f"conversations-{n}.json": json.dumps([claude(f"c{n}", f"text {n}", "ok")]).encode()
               for n in range(4)}
    data = zip_bytes(members)
    data = patch_member(data, "conversations-1.json", flag_bits=0x1)  # ZipCrypto
    data = patch_member(data, "conversations-2.json", method=9)  # Deflate64
    data = patch_member(data, "conversations-3.json", flag_bits=0x1, method=99)  # WinZip AES
    archive = tmp_path / "export.zip"
    archive.write_bytes(data)
    report = IngestReport()
    assert [c.id for c in load_conversations([archive], report)] == ["c0"]
    reasons = dict(report.errors)
    assert "password-protected" in reasons[f"{archive}/conversations-1.json"]
    assert "unsupported compression (Deflate64)" in reasons[f"{archive}/conversations-2.json"]
    assert "password-protected" in reasons[f"{archive}/conversations-3.json"]


def test_a_zip_bomb_member_is_skipped_and_named_unless_the_limit_is_raised(tmp_path):
    giant = json.dumps([claude("bomb", "a" * 20_000_000, "ok")]).encode()
    archive = tmp_path / "export.zip"
    archive.write_bytes(zip_bytes({"bomb.json": giant, "good.json": json.dumps([claude("c1", "x", "y")]).encode()}))
    assert archive.stat().st_size < 200_000

    report = IngestReport()
    assert [c.id for c in load_conversations([archive], report)] == ["c1"]
    [(file, reason)] = report.errors
    assert file == f"{archive}/bomb.json"
    assert "over the 100-fold limit" in reason and "--max-compression-ratio" in reason

    report = IngestReport()
    limits = InputLimits(max_compression_ratio=100_000)
    conversations = load_conversations([archive], report, limits)
    assert [(c.id, len(c.messages)) for c in conversations] == [("bomb", 1), ("c1", 2)]  # the giant is left out
    [(file, reason)] = report.errors
    assert "left out 1 message longer than 2,000,000 characters (the longest: 20,000,000)" in reason
    assert report.filtered["over_max_message_chars"] == 1

    limits = InputLimits(max_compression_ratio=100_000, max_member_mb=10)
    report = IngestReport()
    load_conversations([archive], report, limits)
    assert "expands to 19 MB, over the 10 MB limit" in report.errors[0][1]


def test_message_length_limit_applies_to_plain_files_too(tmp_path):
    path = write_json(tmp_path / "conversations.json", [claude("c1", "short", "x" * 5000, "fine")])
    report = IngestReport()
    [conversation] = load_conversations([path], report, InputLimits(max_message_chars=1000))
    assert [m.text for m in conversation.messages] == ["short", "fine"]
    assert "--max-message-chars" in report.errors[0][1]


# --- costs that grew with the square of the input ----------------------------------------------------------

def test_a_zip_of_1000_members_reads_its_directory_a_few_times_not_once_per_member(tmp_path, monkeypatch):
    members = {f"conversations-{n:04d}.json": json.dumps([claude(f"c{n}", "q", "a")]).encode() for n in range(1000)}
    archive = tmp_path / "export.zip"
    archive.write_bytes(zip_bytes(members))
    reads = []
    real = zipfile.ZipFile._RealGetContents

    def counting(self):
        reads.append(1)
        return real(self)

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counting)
    assert len(load_conversations([archive])) == 1000
    assert len(reads) <= 3


def test_newest_leaf_search_is_linear_in_the_mapping():
    # A comb without current_node: a spine of 10,000 nodes, each with a leaf. Walking every leaf to the
    # root is 50 million steps; the linear search takes milliseconds.
    spine = 10_000
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for n in range(spine):
        mapping[f"s{n}"] = {"id": f"s{n}", "parent": parent, "children": [],
                            "message": {"author": {"role": "user"}, "content": {"parts": [str(n)]}}}
        mapping[f"l{n}"] = {"id": f"l{n}", "parent": f"s{n}", "children": [],
                            "message": {"author": {"role": "assistant"}, "content": {"parts": [f"leaf {n}"]}}}
        parent = f"s{n}"
    started = time.process_time()
    branch = active_branch(mapping, None)
    assert time.process_time() - started < 3
    assert branch[-1] is mapping[f"l{spine - 1}"]  # the deepest leaf, all without times
    assert len(branch) == spine + 2


# --- one id, two conversations -------------------------------------------------------------------------------

def test_a_newer_version_wins_whichever_file_comes_first(tmp_path):
    older = write_json(tmp_path / "old-export.json", [claude("c1", "q1", "a1", updated="2024-05-01T10:00:00Z")])
    newer = write_json(tmp_path / "new-export.json",
                       [claude("c1", "q1", "a1", "q2", "a2", updated="2024-06-01T10:00:00Z")])
    for order in ([older, newer], [newer, older]):
        report = IngestReport()
        assert texts(load_conversations(order, report)) == {"c1": ["q1", "a1", "q2", "a2"]}
        assert report.filtered["older_version"] == 1
        assert report.conversations == 1 and report.messages == 4


def test_conversations_that_differ_under_one_id_are_both_kept(tmp_path):
    first = write_json(tmp_path / "a.json", [claude("c1", "bees", "yes")])
    second = write_json(tmp_path / "b.json", [claude("c1", "bicycles", "no")])
    report = IngestReport()
    assert texts(load_conversations([first, second], report)) == {"c1": ["bees", "yes"],
                                                                   "c1~2": ["bicycles", "no"]}
    assert "kept both, this one as c1~2" in dict(report.errors)[str(second)]


def test_repeats_inside_one_file_lose_nothing(tmp_path):
    path = write_json(tmp_path / "conversations.json", [
        claude("c1", "q1", "a1"), claude("c1", "q1", "a1"), claude("c1", "q1", "a1", "q2", "a2"), claude("c1", "q1"),
    ])
    report = IngestReport()
    assert texts(load_conversations([path], report)) == {"c1": ["q1", "a1"], "c1~2": ["q1", "a1", "q2", "a2"]}
    assert report.filtered["duplicate_conversation"] == 1 and report.filtered["older_version"] == 1
