"""Regenerated, edited and rated replies come out of the importers beside (never inside) the active branch."""

import json
import zipfile

from rhizome.ingest import IngestReport, load_conversations
from rhizome.ingest.preferences import load_feedback, rating_value


def _node(node_id, parent, children, role="user", text="x"):
    message = {"id": node_id, "author": {"role": role}, "create_time": None,
               "content": {"content_type": "text", "parts": [text]}}
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def chatgpt_export(tmp_path, feedback=None):
    """q1 answered twice (a1 regenerated away, a1b kept); q2 edited (q2 -> q2b), each edit answered."""
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["q1"]},
        "q1": _node("q1", "root", ["a1", "a1b"], text="How do I split a hive in spring?"),
        "a1": _node("a1", "q1", [], "assistant", "Old answer about splitting."),
        "a1b": _node("a1b", "q1", ["q2", "q2b"], "assistant", "Kept answer about splitting."),
        "q2": _node("q2", "a1b", ["a2"], text="When shuld I add a super?"),
        "a2": _node("a2", "q2", [], "assistant", "Abandoned answer about supers."),
        "q2b": _node("q2b", "a1b", ["a2b"], text="When should I add a super?"),
        "a2b": _node("a2b", "q2b", [], "assistant", "Kept answer about supers."),
    }
    (tmp_path / "conversations.json").write_text(json.dumps(
        [{"id": "c1", "title": "hives", "mapping": mapping, "current_node": "a2b"}]))
    if feedback is not None:
        (tmp_path / "message_feedback.json").write_text(json.dumps(feedback))
    return tmp_path / "conversations.json"


def test_chatgpt_regeneration_and_edit_become_alternatives_and_stay_off_the_branch(tmp_path):
    report = IngestReport()
    [conversation] = load_conversations([chatgpt_export(tmp_path)], report)
    texts = [m.text for m in conversation.messages]
    assert texts == ["How do I split a hive in spring?", "Kept answer about splitting.",
                     "When should I add a super?", "Kept answer about supers."]
    kinds = {(a.kind, a.anchor_id, a.reply.text, a.prompt) for a in conversation.alternatives}
    assert kinds == {("regeneration", "q1", "Old answer about splitting.", None),
                     ("edit", "q2b", "Abandoned answer about supers.", "When shuld I add a super?")}


def test_message_feedback_is_read_beside_the_file_and_inside_an_export_zip(tmp_path):
    feedback = [{"message_id": "a1", "conversation_id": "c1", "rating": "thumbsUp"},
                {"message_id": "a2b", "rating": "thumbsDown"}, {"message_id": "x", "rating": "meh"}, "junk"]
    path = chatgpt_export(tmp_path, feedback)
    assert load_feedback([path]) == {"a1": 1, "a2b": -1}
    keyed_by_id = [{"id": "a2", "conversation_id": "c1", "rating": "thumbsDown"},
                   {"id": "fb-1", "message_id": "a1", "rating": "thumbsUp"}]
    (tmp_path / "message_feedback.json").write_text(json.dumps(keyed_by_id))
    assert load_feedback([path]) == {"a2": -1, "a1": 1}  # message_id wins over the record's own id
    (tmp_path / "message_feedback.json").write_text(json.dumps(feedback))
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(path, "conversations.json")
        z.write(tmp_path / "message_feedback.json", "message_feedback.json")
    assert load_feedback([archive]) == {"a1": 1, "a2b": -1}
    (tmp_path / "message_feedback.json").write_text("{broken")
    report = IngestReport()
    assert load_feedback([tmp_path], report) == {}
    assert "message_feedback.json" in report.errors[0][0]


def test_rating_values_of_both_exports():
    assert [rating_value(v) for v in ("thumbsUp", "thumbs_down", "good", 1, -2, True, {"rating": "up"}, "?", None)] \
        == [1, -1, 1, 1, -1, 1, 1, None, None]


def test_claude_retry_is_an_alternative_and_a_rating_field_is_read(tmp_path):
    root = "00000000-0000-4000-8000-000000000000"

    def message(uuid, parent, sender, text, **extra):
        return {"uuid": uuid, "parent_message_uuid": parent, "sender": sender,
                "content": [{"type": "text", "text": text}], **extra}

    record = {"uuid": "k1", "name": "t", "chat_messages": [
        message("h1", root, "human", "Why do bees swarm?"),
        message("r1", "h1", "assistant", "First try.", rating="thumbs_down"),
        message("r2", "h1", "assistant", "Second try, kept."),
    ], "current_leaf_message_uuid": "r2"}
    (tmp_path / "claude.json").write_text(json.dumps([record]))
    [conversation] = load_conversations([tmp_path / "claude.json"])
    assert [m.text for m in conversation.messages] == ["Why do bees swarm?", "Second try, kept."]
    [alternative] = conversation.alternatives
    assert (alternative.kind, alternative.anchor_id, alternative.reply.text) == ("regeneration", "h1", "First try.")
    assert conversation.ratings == {"r1": -1}
