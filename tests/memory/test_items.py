import pytest

from rhizome.ingest.records import Conversation, Message
from rhizome.memory.embedder import load_tokenizer, text_key
from rhizome.memory.items import TokenSplitter, items_from_conversations, items_from_pdf_chunks


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("all-MiniLM-L6-v2")


def n_tokens(tokenizer, text):
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_short_text_is_one_piece(tokenizer):
    assert TokenSplitter(tokenizer, 254).split("A short note about bees.") == ["A short note about bees."]


def test_long_text_splits_at_sentences_within_the_limit(tokenizer):
    sentences = [f"Sentence number {i} talks about queen cells and drones in late spring." for i in range(60)]
    pieces = TokenSplitter(tokenizer, 64).split(" ".join(sentences))
    assert len(pieces) > 1
    assert all(n_tokens(tokenizer, p) <= 64 for p in pieces)
    assert all(p.endswith(".") for p in pieces)  # cut between sentences, not inside one
    assert " ".join(pieces) == " ".join(sentences)  # nothing lost


def test_a_single_huge_sentence_is_cut_by_tokens(tokenizer):
    text = " ".join(["mycelium"] * 500)
    pieces = TokenSplitter(tokenizer, 50).split(text)
    assert all(n_tokens(tokenizer, p) <= 50 for p in pieces)
    assert sum(p.count("mycelium") for p in pieces) == 500


def test_items_carry_metadata_and_hashes(tokenizer):
    splitter = TokenSplitter(tokenizer, 254)
    conv = Conversation(id="c1", source="chatgpt", file="conversations.json", title="Bees",
                        messages=[Message("user", "Why do bees swarm?", 1700000000.0),
                                  Message("assistant", "To reproduce the colony.", 1700000005.0, model="gpt-4o")])
    items = list(items_from_conversations([conv], splitter))
    assert [(i["role"], i["text"], i["conversation_title"], i["timestamp"]) for i in items] == [
        ("user", "Why do bees swarm?", "Bees", 1700000000.0),
        ("assistant", "To reproduce the colony.", "Bees", 1700000005.0),
    ]
    assert items[0]["text_hash"] == text_key("Why do bees swarm?")
    assert len({i["id"] for i in items}) == 2

    chunk = {"id": "mushrooms.pdf#4", "text": "Oyster mushrooms fruit at 15 °C.", "source_file": "mushrooms.pdf", "page_start": 2,
             "page_end": 3, "chunk_index": 4, "sha256": "ab" * 32, "title": "Mushrooms", "author": "Me"}
    (item,) = items_from_pdf_chunks([chunk], splitter)
    assert (item["source"], item["file"], item["page_start"], item["page_end"], item["role"]) == (
        "pdf", "mushrooms.pdf", 2, 3, "document")
