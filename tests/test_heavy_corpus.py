"""bench/heavy_corpus.py: what the generator says it wrote is what the importer finds, and nothing hidden leaks."""

import json

import pytest

from bench.heavy_corpus import BRANCH_MARKER, MARKER, TRUTH_FILE, generate
from rhizome.ingest import IngestReport, iter_conversations


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("heavy")
    generate(out, scale=0.03, seed=3)
    return out


def test_every_generated_conversation_is_imported_with_its_visible_turns_only(corpus):
    truth = json.loads((corpus / TRUTH_FILE).read_text())
    report = IngestReport()
    conversations = list(iter_conversations([str(corpus / "conversations.json"), str(corpus / "conversations2.json")],
                                            report))
    by_source = {source: sorted(c.id for c in conversations if c.source == source) for source in ("chatgpt", "claude")}
    assert by_source == {source: sorted(ids) for source, ids in truth["ids"].items()}
    assert len(conversations) == truth["conversations"] >= 40
    assert sum(len(c.messages) for c in conversations) == truth["visible_messages"] >= 300
    assert all(c.messages[0].role == "user" and c.messages[-1].role == "assistant" for c in conversations)
    # the corpus exercises every kind of text that must stay out, and none of it comes through
    assert all(n > 0 for kind, n in truth["features"].items() if kind != "reused"), truth["features"]
    for marker in (MARKER, BRANCH_MARKER):
        assert not [m.text for c in conversations for m in c.messages if marker in m.text]
        assert not [c.title for c in conversations if c.title and marker in c.title]
    assert report.filtered  # the importer saw and counted what it left out


def test_same_seed_writes_the_same_bytes(corpus, tmp_path):
    generate(tmp_path, scale=0.03, seed=3)
    for name in ("conversations.json", "conversations2.json", TRUTH_FILE):
        assert (tmp_path / name).read_bytes() == (corpus / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "PDFs").iterdir()) == ["report_000.pdf"]
