"""Preference pairs: one test per mining rule, and the formatter's files, counts and grouped split."""

import json

import pytest

from rhizome.format.pipeline import FormatConfig, run
from rhizome.format.preferences import PreferenceStats, mine
from rhizome.ingest.preferences import Alternative
from rhizome.ingest.records import Conversation, Message

PROMPT = "How do I keep my hive from swarming in late spring when the colony is very strong?"
KEPT = ("Give the queen room: add a super before the brood nest fills, and check for queen cells every week. "
        "If you find capped cells, make a split with the old queen.")
OTHER = ("Swarming is natural, but you can reduce it. Remove queen cells only as a last resort; it is better to "
         "relieve congestion by adding space early and splitting strong colonies.")


def conversation(alternatives, prompt=PROMPT):
    return Conversation("c1", "chatgpt", "f.json", [
        Message("user", prompt, id="u1"), Message("assistant", KEPT, id="a1")], alternatives=alternatives)


def test_regeneration_prefers_the_reply_on_the_active_branch():
    stats = PreferenceStats()
    [pair] = mine(conversation([Alternative("u1", "regeneration", Message("assistant", OTHER, id="a0"))]), {}, stats)
    assert (pair.kind, pair.chosen, pair.rejected) == ("regeneration", KEPT, OTHER)
    assert pair.prompt == [{"role": "user", "content": PROMPT}]
    assert pair.record()["chosen"] == [{"role": "assistant", "content": KEPT}]


def test_edit_pairs_only_when_the_prompts_are_near_identical():
    stats = PreferenceStats()
    typo = Alternative("u1", "edit", Message("assistant", OTHER, id="a0"), prompt=PROMPT.replace("swarming", "swarmin"))
    other_question = Alternative("u1", "edit", Message("assistant", OTHER, id="a9"), prompt="What is propolis made of?")
    [pair] = mine(conversation([typo, other_question]), {}, stats)
    assert (pair.kind, pair.chosen, pair.rejected) == ("edit", KEPT, OTHER)
    assert stats.dropped == {"edit_prompt_changed": 1}


def test_a_rating_decides_the_order_even_against_the_active_branch():
    stats = PreferenceStats()
    [pair] = mine(conversation([Alternative("u1", "regeneration", Message("assistant", OTHER, id="a0"))]),
                  {"a0": 1, "a1": -1}, stats)
    assert (pair.kind, pair.chosen, pair.rejected) == ("rating", OTHER, KEPT)
    assert stats.ratings_used == 2


def test_a_rating_without_an_alternative_is_counted_not_paired():
    stats = PreferenceStats()
    assert mine(conversation([]), {"a1": 1}, stats) == []
    assert stats.ratings_without_alternative == 1


def test_near_duplicate_chosen_and_rejected_are_dropped_and_counted():
    stats = PreferenceStats()
    same = KEPT.replace("every week", "every  week!")
    assert mine(conversation([Alternative("u1", "regeneration", Message("assistant", same, id="a0"))]), {}, stats) == []
    assert stats.dropped == {"near_duplicate": 1}


def test_the_abandoned_reply_is_redacted_like_the_supervised_ones():
    stats = PreferenceStats()
    leaked = OTHER + " My key is sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD."
    [pair] = mine(conversation([Alternative("u1", "regeneration", Message("assistant", leaked, id="a0"))]), {}, stats)
    assert "sk-proj-abcdefghij" not in pair.rejected and "[REDACTED:" in pair.rejected


def _node(node_id, parent, children, role, text):
    return {"id": node_id, "parent": parent, "children": children,
            "message": {"id": node_id, "author": {"role": role}, "content": {"content_type": "text", "parts": [text]}}}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """24 conversations of three answered turns; every second conversation regenerated its first answer."""
    folder = tmp_path_factory.mktemp("export")
    records, feedback = [], []
    for c in range(24):
        topic = ["hives", "queens", "honey", "mites", "wax", "pollen"][c % 6]
        mapping = {"root": {"id": "root", "message": None, "parent": None, "children": [f"{c}q0"]}}
        parent = "root"
        for t in range(3):
            q, a, old = f"{c}q{t}", f"{c}a{t}", f"{c}old{t}"
            regenerated = t == 0 and c % 2 == 0
            mapping[parent]["children"] = [q]
            mapping[q] = _node(q, parent, [old, a] if regenerated else [a], "user",
                               f"Conversation {c}, question {t}: what should a beekeeper know about {topic} in "
                               f"month {t + 1} of the season?")
            mapping[a] = _node(a, q, [], "assistant",
                               f"In month {t + 1}, {topic} need attention: inspect every week, write down what you "
                               f"see, and act early. Case {c} shows why a calm, regular routine works best.")
            if regenerated:
                mapping[old] = _node(old, q, [], "assistant", f"{topic.title()}? No idea, sorry. Try a book ({c}).")
                if c % 4 == 0:
                    feedback.append({"message_id": old, "conversation_id": f"conv{c}", "rating": "thumbsDown"})
            parent = a
        records.append({"id": f"conv{c}", "title": topic, "mapping": mapping, "current_node": parent})
    (folder / "conversations.json").write_text(json.dumps(records))
    (folder / "message_feedback.json").write_text(json.dumps(feedback))
    return folder


def test_formatter_writes_trl_preference_files_in_the_split_of_each_conversation(export, tmp_path):
    out = tmp_path / "data_finetune"
    metadata = run(FormatConfig(inputs=[str(export / "conversations.json")], output_dir=str(out),
                                input_memory_texts=str(tmp_path / "none.npy"), cache_dir=str(tmp_path / "cache"),
                                dedup_similarity_threshold=1.01))
    split_of = {}
    for name in ("train", "validation", "test"):
        for line in (out / f"dataset_{name}.jsonl").read_text().splitlines():
            split_of.setdefault(json.loads(line)["conversation_id"], set()).add(name)
    written = {}
    for name in ("train", "validation", "test"):
        for line in (out / f"dataset_preferences_{name}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert set(record) >= {"prompt", "chosen", "rejected", "kind", "source", "conversation_id", "id"}
            assert record["prompt"][-1]["role"] == "user" and record["chosen"][0]["role"] == "assistant"
            assert split_of[record["conversation_id"]] == {name}  # the conversation never spans splits
            written[record["id"]] = record
    assert len(written) == 12
    kinds = [r["kind"] for r in written.values()]
    assert kinds.count("rating") == 6 and kinds.count("regeneration") == 6
    assert all("No idea" in r["rejected"][0]["content"] for r in written.values())
    assert metadata["preferences"]["mined"] == {"rating": 6, "regeneration": 6}
    assert metadata["preferences"]["kept"] == 12
    assert sum(sum(k.values()) for k in metadata["preferences"]["splits"].values()) == 12
    # Off-branch text never reaches the supervised files.
    for name in ("train", "validation", "test"):
        assert "No idea" not in (out / f"dataset_{name}.jsonl").read_text()


def test_no_preferences_writes_none_and_removes_stale_files(export, tmp_path):
    out = tmp_path / "data_finetune"
    out.mkdir()
    (out / "dataset_preferences_train.jsonl").write_text("{}\n")
    run(FormatConfig(inputs=[str(export / "conversations.json")], output_dir=str(out), preferences=False,
                     input_memory_texts=str(tmp_path / "none.npy"), cache_dir=str(tmp_path / "cache")))
    assert not list(out.glob("dataset_preferences_*"))


def test_every_regeneration_edit_and_rating_of_the_sample_export_is_mined_as_the_generator_says(tmp_path):
    import importlib.util
    from pathlib import Path

    from rhizome.format.clean import clean_conversation
    from rhizome.ingest import load_conversations
    from rhizome.ingest.preferences import load_feedback

    samples = Path(__file__).resolve().parents[2] / "samples"
    spec = importlib.util.spec_from_file_location("make_conversations", samples / "make_conversations.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.main([str(tmp_path)]) == 0
    assert (tmp_path / "message_feedback.json").read_bytes() == (samples / "message_feedback.json").read_bytes()

    ratings = load_feedback([samples / "conversations.json"])
    stats = PreferenceStats()
    found = [p for c in load_conversations([samples / "conversations.json"])
             for p in mine(clean_conversation(c), ratings, stats)]
    truth = generator.PREFERENCE_TRUTH
    assert dict(stats.mined) == truth["mined"] and dict(stats.dropped) == truth["dropped"]
    assert len(ratings) == truth["ratings"]
    assert stats.ratings_without_alternative == truth["ratings_without_alternative"]
    assert {p.rejected for p in found} == {"A Demaree is a way to separate the queen from the brood. Put her below "
                                           "and the brood above.", "When it is fully colonised.",
                                           "Probably not. Hangers are tough, and if shifting feels fine you can leave "
                                           "it alone."}
