"""ChatSession end to end with a tiny random model: streaming with memories, remembering, sources for people."""

import itertools
import os
import threading

import pytest

from rhizome.chat.config import ChatConfig
from rhizome.chat.llm import ChatModel
from rhizome.chat.retrieval import ChatMemory
from rhizome.chat.session import ChatSession, format_sources
from rhizome.memory.embedder import text_key
from rhizome.memory.store import Hit, Memory

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BEES = "Split a hive in late spring: move the old queen and two frames of brood into a new box."


@pytest.fixture(scope="module")
def tiny_model(make_tiny_model):
    return ChatModel.load(make_tiny_model(max_position_embeddings=256), None, device="cpu")


def greedy(**changes) -> ChatConfig:
    return ChatConfig(**{"temperature": 0.0, "max_new_tokens": 12, "repetition_penalty": 1.0, **changes})


def test_reply_streams_after_the_memories_are_known(tiny_model):
    session = ChatSession(greedy(remember=False), tiny_model, ChatMemory(Memory.empty()))
    steps = list(session.respond("hello there", []))
    assert steps[0] == ("", [])  # the sources panel can be filled before the first token
    replies = [reply for reply, _ in steps[1:]]
    assert len(replies) > 1 and all(b.startswith(a) for a, b in itertools.pairwise(replies))
    messages = [{"role": "system", "content": ChatConfig().system_prompt}, {"role": "user", "content": "hello there"}]
    assert replies[-1] == "".join(tiny_model.stream(messages, max_new_tokens=12, temperature=0))


def test_stopped_replies_end_early_and_are_not_remembered(tiny_model):
    session = ChatSession(greedy(max_new_tokens=100), tiny_model, ChatMemory(Memory.empty()))
    stop = threading.Event()
    for reply, _ in session.respond("hello", [], stop_event=stop):
        if reply:
            stop.set()
    assert tiny_model.last_stats.new_tokens < 100
    session.wait_for_memory()
    assert len(session.memory) == 0  # would have needed the embedder; a cut-off reply is not a finished turn


def test_long_history_is_cut_to_the_models_context_from_the_oldest_turn(tiny_model):
    session = ChatSession(greedy(system_prompt="Be brief."), tiny_model, ChatMemory(Memory.empty()))
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"question {i} " * 3}, {"role": "assistant", "content": f"answer {i}"}]
    kept = session.fit_history(history, fixed_tokens=20, max_new_tokens=12)
    assert kept and kept[0]["role"] == "user" and kept[-1] == history[-1]
    assert len(kept) < len(history)
    prompt = tiny_model.prompt_ids([{"role": "system", "content": "Be brief."}, *kept,
                                    {"role": "user", "content": "next"}])
    assert prompt.shape[1] + 12 <= tiny_model.context_length


def test_conversations_are_named_by_their_first_message(tiny_model):
    session = ChatSession(greedy(), tiny_model, ChatMemory(Memory.empty()))
    first_id, title, turn = session.conversation([], "How do I split a hive in spring?")
    later_id, same_title, later_turn = session.conversation(
        [{"role": "user", "content": "How do I split a hive in spring?"}, {"role": "assistant", "content": "..."}],
        "And in autumn?")
    assert later_id == first_id and same_title == title == "How do I split a hive in spring?"
    assert (turn, later_turn) == (0, 1)
    assert session.conversation([], "Another topic")[0] != first_id


def test_sources_show_titles_dates_pages_and_scores_but_no_folders():
    pdf = Hit(0.812, "Queen cells in May.", {"source": "pdf", "file": "/home/me/secret/PDFs/bees_basics.pdf",
                                             "page_start": 3, "page_end": 4, "role": "document"})
    chat = Hit(0.5, "Use a *queen excluder*.", {"source": "chatgpt", "conversation_title": "Swarm [control]",
                                                "timestamp": 1714608000, "role": "assistant"})
    text = format_sources([pdf, chat])
    lines = text.splitlines()
    assert lines[0] == "- **bees\\_basics.pdf**, pp. 3–4, score 0.81  "
    assert lines[2] == "- **Swarm \\[control\\]** (ChatGPT, 2024-05-02, assistant), score 0.50  "
    assert "\\*queen excluder\\*" in lines[3]
    assert "/home" not in text and "secret" not in text
    assert format_sources([]) == ""


@pytest.mark.slow
def test_session_uses_memories_and_a_later_session_recalls_the_turn(tiny_model, tmp_path):
    seed = Memory.empty()
    seed.add([{"id": "pdf:b#0", "text": BEES, "text_hash": text_key(BEES), "source": "pdf", "role": "document",
               "timestamp": None, "file": "bees.pdf", "page_start": 2, "page_end": 2, "part": 0, "parts": 1}])
    seed.save(tmp_path)
    # A repetition penalty keeps the random model off a reply of blank lines, which is not worth remembering.
    config = greedy(memory_dir=str(tmp_path), min_score=0.2, repetition_penalty=1.5)
    memory = ChatMemory.from_config(config, count_tokens=tiny_model.count_tokens)
    session = ChatSession(config, tiny_model, memory)

    *_, (reply, hits) = session.respond("When should I split my hive?", [])
    assert [hit.text for hit in hits] == [BEES] and reply
    session.wait_for_memory()

    later = ChatSession(config, tiny_model, ChatMemory.from_config(config, count_tokens=tiny_model.count_tokens))
    recalled = next(later.respond("my question about splitting a hive", []))[1]
    assert "When should I split my hive?" in [hit.text for hit in recalled]
    assert any(hit.metadata["source"] == "chat" and hit.metadata["role"] == "assistant" and hit.text == reply.strip()
               for hit in Memory.load(tmp_path).search(reply, k=3))
