"""ChatMemory on a small real memory (the shipped embedder): relevant, diverse, within budget, remembers turns."""

import os
import shutil

import numpy as np
import pytest

from rhizome import safe_pickle
from rhizome.chat.retrieval import MEMORY_HEADER, ChatMemory, build_messages, memory_line, mmr
from rhizome.memory.embedder import text_key
from rhizome.memory.store import Hit, Memory

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPLIT = "To split a hive, move the old queen with a few frames of brood into a new box; the queenless half raises a new queen."
NEAR_COPIES = [SPLIT,
               SPLIT.replace("; the", ", and the"),
               "To split a hive, move the old queen and a few frames of brood into a new box; the queenless half raises a new queen!"]
OTHERS = [
    ("chatgpt", "Demaree swarm control",
     "A Demaree split keeps the queen below a queen excluder, away from the brood, so the colony does not swarm."),
    ("claude", "Spring inspections",
     "Check every hive for queen cells each week in spring; capped queen cells mean the colony is about to swarm."),
    ("chatgpt", "Bike repair", "A chain that skips under load usually means a worn chain or cassette."),
    ("claude", "Mushrooms", "Oyster mushrooms fruit best at 15 to 20 degrees with high humidity."),
]


def conversation_item(source, title, text, index, role="assistant"):
    return {"id": f"{source}:c{index}:1", "text": text, "text_hash": text_key(text), "source": source, "role": role,
            "timestamp": 1714608000.0 + index, "part": 0, "parts": 1, "conversation_id": f"c{index}",
            "conversation_title": title, "message_index": 1, "file": "/home/someone/exports/conversations.json"}


def pdf_item(text):
    return {"id": "pdf:bees#3", "text": text, "text_hash": text_key(text), "source": "pdf", "role": "document",
            "timestamp": None, "file": "/home/someone/PDFs/beekeeping_basics.pdf", "page_start": 4, "page_end": 5,
            "chunk_index": 3, "title": "Beekeeping basics", "author": None, "part": 0, "parts": 1}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    items = [conversation_item("chatgpt", "Splitting hives", text, i) for i, text in enumerate(NEAR_COPIES)]
    items += [conversation_item(s, title, text, 10 + i) for i, (s, title, text) in enumerate(OTHERS)]
    items.append(pdf_item("Nucleus colonies: a split made in late spring with a mated queen builds up fastest."))
    memory = Memory.empty()
    memory.add(items)
    memory.save(folder)
    return folder


@pytest.fixture
def memory_dir(built, tmp_path):
    folder = tmp_path / "memory"
    shutil.copytree(built, folder)
    return folder


@pytest.fixture(scope="module")
def count_tokens():
    from transformers import AutoTokenizer

    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def test_mmr_prefers_relevant_memories_unlike_those_already_chosen():
    vectors = np.array([[1, 0, 0], [0.999, 0.045, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = np.array([0.9, 0.89, 0.7, 0.1], dtype=np.float32)
    assert mmr(relevance, vectors, k=3, diversity=1.0, near_duplicate=1.01) == [0, 1, 2]  # relevance only
    assert mmr(relevance, vectors, k=3, diversity=0.7) == [0, 2, 3]  # the near-copy 1 is dropped
    assert mmr(relevance, vectors, k=10, diversity=0.7) == [0, 2, 3]


def test_build_messages_puts_labelled_memories_just_before_the_new_message():
    hits = [Hit(0.8, "Split in late spring.", pdf_item("Split in late spring.")),
            Hit(0.6, "Weekly checks.", conversation_item("claude", "Spring inspections", "Weekly checks.", 1))]
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
               {"role": "system", "content": "ignored"}]
    messages = build_messages("Be kind.", history, "When do I split?", hits)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "system", "user"]
    # The system prompt and the earlier turns stay the same whatever is retrieved: a prefix the engines reuse.
    assert messages[:3] == build_messages("Be kind.", history, "Another question", [])[:3]
    assert messages[0]["content"] == "Be kind." and messages[2]["content"] == "hello"
    memories = messages[3]["content"]
    assert memories.startswith(MEMORY_HEADER + "\n")
    assert "- [beekeeping_basics.pdf, pp. 4-5] Split in late spring." in memories
    assert "- [claude: Spring inspections (2024-05-02) [assistant]] Weekly checks." in memories
    assert "/home/someone" not in memories
    assert messages[-1] == {"role": "user", "content": "When do I split?"}
    assert build_messages("Be kind.", [], "q", []) == [{"role": "system", "content": "Be kind."},
                                                       {"role": "user", "content": "q"}]


@pytest.mark.slow
def test_retrieve_finds_the_relevant_items_and_drops_near_copies(memory_dir, count_tokens):
    memory = ChatMemory.open(memory_dir, k=3, min_score=0.2, context_tokens=2000, count_tokens=count_tokens)
    plain = memory.memory.search("how do I split a hive?", k=3)
    assert {hit.text for hit in plain} == set(NEAR_COPIES)  # plain ranking: three copies of one answer

    hits = memory.retrieve("how do I split a hive?")
    assert len(hits) == 3
    assert sum(hit.text in NEAR_COPIES for hit in hits) == 1
    assert hits[0].text in NEAR_COPIES  # the most relevant still comes first
    assert all(hit.score >= 0.2 for hit in hits)
    assert not any("Bike" in (hit.metadata.get("conversation_title") or "") for hit in hits)


@pytest.mark.slow
def test_retrieve_respects_min_score_and_the_token_budget(memory_dir, count_tokens):
    unlimited = ChatMemory.open(memory_dir, k=5, min_score=0.2, context_tokens=10_000, count_tokens=count_tokens)
    everything = unlimited.retrieve("how do I split a hive?")
    costs = [count_tokens(memory_line(hit) + "\n") for hit in everything]
    assert len(everything) >= 3

    budget = costs[0] + costs[1]  # room for the first two exactly
    limited = ChatMemory.open(memory_dir, k=5, min_score=0.2, context_tokens=budget, count_tokens=count_tokens)
    assert [h.text for h in limited.retrieve("how do I split a hive?")] == [h.text for h in everything[:2]]

    # A pick too long for the budget is passed over; the next ones take its place, in order.
    first = everything[0].text
    heavy = ChatMemory.open(memory_dir, k=2, min_score=0.2, context_tokens=1000,
                            count_tokens=lambda line: 5000 if first in line else count_tokens(line))
    assert [h.text for h in heavy.retrieve("how do I split a hive?")] == [h.text for h in everything[1:3]]

    strict = ChatMemory.open(memory_dir, k=5, min_score=0.99, count_tokens=count_tokens)
    assert strict.retrieve("how do I split a hive?") == []


@pytest.mark.slow
def test_a_remembered_turn_is_found_by_a_later_load(memory_dir):
    memory = ChatMemory.open(memory_dir)
    before = len(memory)
    added = memory.remember("My two hives are named Ada and Grace.", "Lovely names for two colonies!",
                            when=1764000000.0, conversation_id="s1", conversation_title="Hive names", turn=3)
    assert added == 2

    later = Memory.load(memory_dir)
    assert len(later) == before + 2 and later.index.ntotal == before + 2
    hit = later.search("what are my hives called?", k=1)[0]
    assert hit.text == "My two hives are named Ada and Grace."
    meta = hit.metadata
    assert meta["source"] == "chat" and meta["role"] == "user" and meta["conversation_title"] == "Hive names"
    assert meta["timestamp"] == 1764000000.0 and meta["id"] == "chat:s1:6" and meta["message_index"] == 6
    assert set(pdf_item("x")) - {"page_start", "page_end", "chunk_index", "title", "author"} <= set(meta)
    assert hit.source_label() == "chat: Hive names (2025-11-24) [user]"
    assert later.config["summary"]["items"] == before + 2
    assert type(safe_pickle.load(memory_dir / "memory_metadata.pkl")[-1]) is dict

    again = ChatMemory.open(memory_dir, min_score=0.2)
    assert any("Ada and Grace" in h.text for h in again.retrieve("what are my hives called?"))
    # The conversation being answered already has its turns in the prompt: not retrieved twice.
    assert not any("Ada" in h.text for h in again.retrieve("what are my hives called?", exclude_conversation="s1"))


@pytest.mark.slow
def test_without_memory_files_the_chat_starts_empty_and_remembering_creates_them(tmp_path):
    memory = ChatMemory.open(tmp_path)
    assert len(memory) == 0 and "batch_embedder.py" in memory.status
    assert memory.retrieve("anything") == []
    memory.remember("I keep bees in Leeds.", "Nice!", conversation_id="s2")
    assert Memory.load(tmp_path).search("where are my bees?", k=1)[0].text == "I keep bees in Leeds."
