"""The original README's custom JSON and Hugging Face chat JSONL."""

import json
from pathlib import Path

from rhizome.ingest import IngestReport, load_conversations

FIXTURES = Path(__file__).parent / "fixtures"


def turns(conversation):
    return [(m.role, m.text) for m in conversation.messages]


def test_custom_json_with_author_synonyms_and_mixed_timestamps():
    report = IngestReport()
    first, second = load_conversations([FIXTURES / "custom_conversations.json"], report)
    assert (first.id, first.title, first.source) == ("conv_001", "Hive scale readings", "custom")
    assert turns(first) == [
        ("user", "The hive scale dropped 1.2 kg overnight. Swarm?"),
        ("assistant", "Overnight losses are usually water evaporating from nectar being ripened; a swarm shows as "
                      "a sudden drop of one to three kilos around midday."),
        ("user", "It happened at 11:40 on a sunny day."),
        ("assistant", "Then it was almost certainly a swarm. Check the apiary hedges and look for queen cells in "
                      "the hive."),
    ]
    # int seconds, ISO-8601, epoch milliseconds
    assert [m.timestamp for m in first.messages] == [1719820800.0, 1719820860.0, 1719828000.0, 1719828000.123]
    assert second.id == "2"
    assert turns(second) == [
        ("assistant", "Hello! Ask me anything about bees."),
        ("user", "What is a nuc?"),
        ("assistant", "A nucleus colony: a small colony on three to five frames with a laying queen."),
    ]
    assert second.messages[1].timestamp == 1719900000.0
    assert report.skipped_conversations == 1  # "messages" is not a list
    assert report.skipped_messages == 2  # null content; unknown speaker
    assert report.filtered == {"system": 1, "empty": 1, "empty_conversation": 1}


def test_chat_jsonl_skips_system_and_tool_turns_and_reports_a_bad_line_by_number():
    path = FIXTURES / "chat.jsonl"
    report = IngestReport()
    conversations = load_conversations([path], report)
    assert [c.id for c in conversations] == [f"{path}:1", f"{path}:3", f"{path}:5", "chat-7"]
    assert {c.source for c in conversations} == {"hf_chat"}
    assert [turns(c) for c in conversations] == [
        [("user", "How tight should a cone nut be?"),
         ("assistant", "Just loose enough that the axle turns freely with a trace of play, which the quick-release "
                       "clamp then takes up.")],
        [("user", "What grease for a Brooks saddle?"),
         ("assistant", "None: Brooks leather wants Proofide, not grease.")],
        [("user", "What's the weather in Zürich?"),
         ("assistant", "12 °C and rain in Zürich: a day for the workshop, not the road.")],
        [("user", "Best chain lube for winter?"), ("assistant", "A wet lube; wipe the chain after salty rides.")],
    ]
    [(file, reason)] = report.errors
    lines = path.read_bytes().splitlines(keepends=True)
    unterminated_string_at = sum(len(line) for line in lines[:3]) + lines[3].index(b'"a line cut off')
    assert file == str(path)
    assert reason.startswith(f"line 4 (byte {unterminated_string_at}) is not valid JSON (Unterminated string")
    assert "read the rest" in reason
    assert report.skipped_conversations == 2  # the bad line; a JSON list where a conversation should be
    assert report.filtered == {"system": 2, "tool": 1, "tool_call": 1}


def test_jsonl_content_under_a_json_name_is_read_line_by_line(tmp_path):
    path = tmp_path / "exported_chats.json"
    lines = [{"messages": [{"role": "user", "content": f"Question {i}"}, {"role": "assistant", "content": "Answer"}]}
             for i in range(3)]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    conversations = load_conversations([path])
    assert [turns(c)[0][1] for c in conversations] == ["Question 0", "Question 1", "Question 2"]
