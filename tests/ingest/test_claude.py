"""Claude export: only text blocks, only the active branch, ISO times as Unix seconds."""

from datetime import datetime, timezone
from pathlib import Path

from rhizome.ingest import IngestReport, load_conversations

EXPORT = Path(__file__).parent / "fixtures" / "claude_export.json"


def turns(conversation):
    return [(m.role, m.text) for m in conversation.messages]


def unix(iso):
    return datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp()


def load_fixture():
    report = IngestReport()
    conversations = {c.id: c for c in load_conversations([EXPORT], report)}
    return conversations, report


def test_only_text_blocks_of_the_active_branch_come_out():
    conversations, _ = load_fixture()
    assert list(conversations) == [
        "c1a0de00-0000-4000-8000-000000000001",
        "c1a0de00-0000-4000-8000-000000000002",
        "c1a0de00-0000-4000-8000-000000000003",
        "c1a0de00-0000-4000-8000-000000000005",
    ]
    # thinking, tool_use and tool_result blocks (with their nested text) are out; a message with no content
    # falls back to its flat text, one with empty content too, minus the "not supported" placeholder;
    # a message of only tool and thinking blocks is no turn at all.
    assert turns(conversations["c1a0de00-0000-4000-8000-000000000001"]) == [
        ("user", "A spoke snapped on my 1962 Raleigh's rear wheel. Can I true it without a stand?"),
        ("assistant", "Yes. Use the brake pads as a gauge.\n\n"
                      "Tighten the spokes on the side away from the rub a quarter turn at a time."),
        ("user", "Danke! Und die Speichenspannung — wie fühle ich die?"),
        ("assistant", "Pluck neighbouring spokes like guitar strings: on the same side they should ring at the "
                      "same pitch."),
    ]
    # parent_message_uuid links: the edited question ("They have eggs"), its answer and the retried answer
    # ("Destroy them all.") are off the branch that ends at the last message.
    assert turns(conversations["c1a0de00-0000-4000-8000-000000000002"]) == [
        ("user", "I found queen cups on three frames."),
        ("assistant", "Empty cups are normal in May; look inside for eggs or larvae."),
        ("user", "Two of them hold young larvae floating in royal jelly."),
        ("assistant", "Charged cups mean swarm preparations have begun: make an artificial swarm (a Pagden split) "
                      "today rather than only breaking down the cups."),
    ]
    # current_leaf_message_uuid names the leaf: the later message is not on the branch.
    assert turns(conversations["c1a0de00-0000-4000-8000-000000000003"]) == [
        ("user", "Can I grow oysters on used coffee grounds?"),
        ("assistant", "Yes, if the grounds are fresh (under a day old) and mixed with about 20% straw for air."),
    ]
    # Null text and content, a missing sender and a non-object message are skipped; a bad date costs only the time.
    propolis = conversations["c1a0de00-0000-4000-8000-000000000005"]
    assert turns(propolis) == [
        ("user", "How strong should a propolis tincture be?"),
        ("assistant", "A 20% tincture (one part propolis to four parts 70% alcohol by weight) is the usual strength."),
    ]
    assert propolis.messages[1].timestamp is None


def test_uuid_name_and_iso_timestamps_are_kept_as_unix_seconds():
    conversations, _ = load_fixture()
    wheel = conversations["c1a0de00-0000-4000-8000-000000000001"]
    assert wheel.source == "claude"
    assert wheel.title == "Truing a wheel with a broken spoke"
    assert wheel.create_time == unix("2024-09-14T08:30:00")
    assert wheel.update_time == unix("2024-09-14T09:05:12.500000")
    assert [m.timestamp for m in wheel.messages] == [
        unix("2024-09-14T08:30:00.100000"), unix("2024-09-14T08:30:05"),
        unix("2024-09-14T07:00:00"),  # written as 09:00+02:00
        unix("2024-09-14T07:01:00"),
    ]
    assert wheel.messages[0].id == "m1000000-0000-4000-8000-000000000001"
    oysters = conversations["c1a0de00-0000-4000-8000-000000000003"]
    assert [m.model for m in oysters.messages] == [None, "claude-sonnet-4-20250514"]


def test_report_counts():
    _, report = load_fixture()
    assert (report.conversations, report.messages) == (4, 12)
    assert report.skipped_conversations == 1  # chat_messages is null
    assert report.skipped_messages == 3
    assert report.files == {str(EXPORT): "claude"}
    assert report.filtered == {"off_branch": 4, "non_text": 1, "empty_conversation": 1}
