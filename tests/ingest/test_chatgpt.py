"""ChatGPT export: only the turns the person saw on the active branch come out, exactly."""

import json
from pathlib import Path

from rhizome.ingest import IngestReport, load_conversations
from rhizome.ingest.chatgpt import active_branch

EXPORT = Path(__file__).parent / "fixtures" / "chatgpt_export.json"


def turns(conversation):
    return [(m.role, m.text) for m in conversation.messages]


def load_fixture():
    report = IngestReport()
    conversations = {c.id: c for c in load_conversations([EXPORT], report)}
    return conversations, report


def test_exactly_the_visible_turns_of_the_active_branch_come_out():
    conversations, _ = load_fixture()
    assert list(conversations) == [
        "66a1f0c2-0001-8000-a000-000000000001",
        "66a1f0c2-0002-8000-a000-000000000002",
        "66a1f0c2-0003-8000-a000-000000000003",
        "66a1f0c2-0004-8000-a000-000000000004",
    ]
    # Edited-away question, its answer and the regenerated-away answer are off the branch; the system
    # message and the custom instructions (user_editable_context) are hidden context.
    assert turns(conversations["66a1f0c2-0001-8000-a000-000000000001"]) == [
        ("user", "When should I treat my hives for varroa mites? Grüße aus München!"),
        ("assistant", "Right after the last honey harvest, in late July or early August, so the winter bees are "
                      "raised mite-free. Count the natural mite drop first."),
        ("user", "And oxalic acid in winter?"),
        ("assistant", "Yes: trickle oxalic acid once the colony is broodless, usually around mid-December."),
    ]
    # Image pointer dropped from the multimodal question; thoughts, reasoning recap, the analysis channel,
    # python code and its output, the browser call, browsing display, quote and a system error all left out;
    # the answer's two visible pieces (before and after the tool detour) are one turn.
    assert turns(conversations["66a1f0c2-0002-8000-a000-000000000002"]) == [
        ("user", "This jar of rye spawn from a shop in 東京 has green spots. Trichoderma? 🌱"),
        ("assistant", "Let me measure how much of the jar is affected.\n\nAbout 18% of the jar shows green "
                      "sporulation: that is Trichoderma. Do not open it indoors."),
        ("user", "Should I bin the whole batch?"),
        ("assistant", "Yes. Seal the jars in a bag and bin them outside; start again from clean culture."),
    ]
    # No current_node: the newest leaf decides the branch, so the older regeneration ("Replace the whole hub.")
    # is out; old-style custom instructions (a system message flagged is_user_system_message) are out.
    assert turns(conversations["66a1f0c2-0003-8000-a000-000000000003"]) == [
        ("user", "My AW three-speed hub slips in second gear. Where do I start?"),
        ("assistant", "Check the indicator chain adjustment first: with the shifter in second, the end of the "
                      "indicator rod should sit exactly level with the axle end."),
    ]
    # Voice mode: the transcriptions are the words; audio pointers and saved memories are not.
    assert turns(conversations["66a1f0c2-0004-8000-a000-000000000004"]) == [
        ("user", "How often should I soak my shiitake logs?"),
        ("assistant", "Soak them for a day after each flush, roughly every eight to twelve weeks."),
    ]


def test_metadata_is_kept_per_conversation_and_message():
    conversations, _ = load_fixture()
    varroa = conversations["66a1f0c2-0001-8000-a000-000000000001"]
    assert varroa.source == "chatgpt"
    assert varroa.file == str(EXPORT)
    assert varroa.title == "Varroa treatment timing"
    assert varroa.create_time == 1715162400.118504
    assert varroa.update_time == 1715166120.90213
    assert [m.timestamp for m in varroa.messages] == [1715162520.75, 1715162580.5, 1715165900.0, 1715165950.125]
    assert [m.id for m in varroa.messages] == ["a5-user-edited", "a7-kept-answer", "a8-user-followup", "a9-answer"]
    assert [m.model for m in varroa.messages] == [None, "gpt-4o", None, "gpt-4o-mini"]


def test_report_counts_malformed_records_and_says_why_the_rest_was_left_out():
    _, report = load_fixture()
    assert report.conversations == 4
    assert report.messages == 12
    assert report.skipped_conversations == 2  # "mapping" is a list; a string where a conversation should be
    assert report.skipped_messages == 2  # content null; parts null
    assert report.errors == []
    assert report.files == {str(EXPORT): "chatgpt"}
    assert report.filtered == {
        "off_branch": 4, "system": 2, "custom_instructions": 2, "memory_context": 1, "reasoning": 3,
        "tool_call": 2, "tool": 3, "non_text": 1, "empty": 1, "empty_conversation": 1,
    }


def _node(node_id, parent, children, role="user", text="x", created=None, **message_fields):
    message = {"id": node_id, "author": {"role": role}, "create_time": created,
               "content": {"content_type": "text", "parts": [text]}, **message_fields}
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def test_branch_falls_back_to_the_deepest_leaf_when_no_leaf_has_a_time():
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["q"]},
        "q": _node("q", "root", ["short", "a"]),
        "short": _node("short", "q", [], role="assistant"),
        "a": _node("a", "q", ["q2"], role="assistant"),
        "q2": _node("q2", "a", []),
    }
    assert [n["id"] for n in active_branch(mapping, None)] == ["root", "q", "a", "q2"]
    assert [n["id"] for n in active_branch(mapping, "not-a-node")] == ["root", "q", "a", "q2"]
    assert [n["id"] for n in active_branch(mapping, "short")] == ["root", "q", "short"]


def test_branch_follows_children_lists_when_parent_links_are_missing_and_survives_cycles():
    mapping = {
        "root": {"id": "root", "message": None, "children": ["q"]},
        "q": {"id": "q", "message": _node("q", None, [])["message"], "children": ["a"]},
        "a": {"id": "a", "message": _node("a", None, [], role="assistant")["message"], "children": []},
    }
    assert [n["id"] for n in active_branch(mapping, "a")] == ["root", "q", "a"]
    looped = {"x": _node("x", "y", ["y"]), "y": _node("y", "x", ["x"])}
    assert [n["id"] for n in active_branch(looped, "x")] == ["y", "x"]


def test_wrongly_typed_fields_skip_the_message_not_the_conversation(tmp_path):
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["q"]},
        "q": _node("q", "root", ["bad-author"], text="Is 18 °C warm enough for oyster pinning?"),
        "bad-author": {"id": "bad-author", "parent": "q", "children": ["bad-type"],
                       "message": {"author": "assistant", "content": {"content_type": "text", "parts": ["?"]}}},
        "bad-type": {"id": "bad-type", "parent": "bad-author", "children": ["not-a-dict"],
                     "message": {"author": {"role": "assistant"}, "content": {"content_type": ["text"], "parts": []}}},
        "not-a-dict": {"id": "not-a-dict", "parent": "bad-type", "children": ["a"], "message": "hello"},
        "a": _node("a", "not-a-dict", [], role="assistant", text="Yes; 12 to 18 °C triggers pinning.",
                   recipient="all", metadata={"model_slug": 7}),
    }
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([{"id": "c", "title": None, "create_time": "garbage", "mapping": mapping,
                                 "current_node": "a"}]))
    report = IngestReport()
    [conversation] = load_conversations([path], report)
    assert turns(conversation) == [("user", "Is 18 °C warm enough for oyster pinning?"),
                                   ("assistant", "Yes; 12 to 18 °C triggers pinning.")]
    assert conversation.create_time is None and conversation.title is None
    assert conversation.messages[1].model is None
    assert report.skipped_messages == 3
