"""Pairs from conversations (context, merging, ids, refs) and from PDF chunks (templates)."""

import pytest

from rhizome.format.pairs import (
    TEMPLATES,
    PairStats,
    key_phrase,
    merge_turns,
    pair_from_chunk,
    pairs_from_conversation,
)
from rhizome.ingest.records import Conversation, Message


def conversation(*turns, source="chatgpt", conversation_id="c1"):
    messages = [Message(role=role, text=text, id=f"m{i}", timestamp=100.0 + i,
                        model="gpt-4o" if role == "assistant" else None)
                for i, (role, text) in enumerate(turns)]
    return Conversation(id=conversation_id, source=source, file="conversations.json", messages=messages,
                        title="Bees", create_time=99.0)


def msgs(*turns):
    return [{"role": role, "content": text} for role, text in turns]


CHAT = conversation(("user", "u0"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a3"),
                    ("user", "u4"), ("assistant", "a5"))


def test_each_answered_user_turn_is_a_pair_with_two_turns_of_context():
    pairs = pairs_from_conversation(CHAT)
    assert [p.id for p in pairs] == ["chatgpt:c1:0", "chatgpt:c1:2", "chatgpt:c1:4"]
    assert [p.messages for p in pairs] == [
        msgs(("user", "u0"), ("assistant", "a1")),
        msgs(("user", "u0"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a3")),
        msgs(("user", "u2"), ("assistant", "a3"), ("user", "u4"), ("assistant", "a5")),
    ]
    assert all(p.source == "chatgpt" and p.conversation_id == "c1" for p in pairs)


@pytest.mark.parametrize(("context_turns", "expected"), [
    (0, msgs(("user", "u4"), ("assistant", "a5"))),
    (1, msgs(("user", "u4"), ("assistant", "a5"))),  # a context may not start with the assistant
    (3, msgs(("user", "u2"), ("assistant", "a3"), ("user", "u4"), ("assistant", "a5"))),
    (4, msgs(("user", "u0"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a3"), ("user", "u4"),
             ("assistant", "a5"))),
    (10, msgs(("user", "u0"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a3"), ("user", "u4"),
              ("assistant", "a5"))),
])
def test_context_length(context_turns, expected):
    assert pairs_from_conversation(CHAT, context_turns=context_turns)[-1].messages == expected


def test_negative_context_is_refused():
    with pytest.raises(ValueError, match="context_turns"):
        pairs_from_conversation(CHAT, context_turns=-1)


def test_consecutive_turns_of_one_role_are_merged_and_unanswered_turns_make_no_pair():
    chat = conversation(("assistant", "Hello!"), ("user", "first"), ("user", "second"), ("assistant", "r1"),
                        ("assistant", "r2"), ("user", "left hanging"))
    stats = PairStats()
    pairs = pairs_from_conversation(chat, system_prompt="You are kind.", stats=stats)
    assert len(pairs) == 1
    assert pairs[0].id == "chatgpt:c1:1"
    assert pairs[0].messages == msgs(("system", "You are kind."), ("user", "first\n\nsecond"), ("assistant", "r1\n\nr2"))
    assert pairs[0].refs == {
        "file": "conversations.json", "title": "Bees", "conversation_create_time": 99.0,
        "user_time": 101.0, "assistant_time": 103.0, "user_message_ids": ["m1", "m2"],
        "assistant_message_ids": ["m3", "m4"], "model": "gpt-4o", "message_index": 1,
    }
    assert (stats.conversations, stats.conversation_pairs, stats.unanswered, stats.merged_turns) == (1, 1, 1, 2)


def test_merge_turns():
    turns = merge_turns([Message("user", "a"), Message("user", "b"), Message("assistant", "c")])
    assert [(t.role, t.index, t.text) for t in turns] == [("user", 0, "a\n\nb"), ("assistant", 2, "c")]


def test_pairs_are_deterministic():
    assert [p.id for p in pairs_from_conversation(CHAT)] == [p.id for p in pairs_from_conversation(CHAT)]
    assert pairs_from_conversation(conversation()) == []


# PDF chunks.
PASSAGE = ("Varroa mites feed on the fat body of bees and spread viruses. A colony with many varroa mites "
           "dwindles in autumn. Count the varroa mites after a sugar roll, and treat when there are more than "
           "three mites per hundred bees. Oxalic acid works best when the colony has no brood.")


def chunk(index=0, text=PASSAGE, **extra):
    return {"id": f"notes/bees.pdf#{index}", "text": text, "source_file": "notes/bees.pdf", "page_start": 3,
            "page_end": 4, "chunk_index": index, "title": "Field Notes", "author": "R. M.", **extra}


def test_pdf_pair_is_a_question_answered_by_the_passage():
    stats = PairStats()
    pair = pair_from_chunk(chunk(), stats=stats)
    assert pair.id == "pdf:notes/bees.pdf:0"
    assert pair.source == "pdf" and pair.conversation_id == "notes/bees.pdf"
    assert pair.messages[-1] == {"role": "assistant", "content": PASSAGE}
    assert "“Field Notes” (pages 3–4)" in pair.prompt
    assert pair.refs == {"file": "notes/bees.pdf", "title": "Field Notes", "author": "R. M.", "page_start": 3,
                         "page_end": 4, "chunk_index": 0, "chunk_id": "notes/bees.pdf#0",
                         "template": pair.refs["template"]}
    assert stats.pdf_pairs == 1 and sum(stats.templates.values()) == 1


def test_pdf_templates_are_chosen_by_chunk_id_and_all_used():
    prompts = {}
    for index in range(40):
        pair = pair_from_chunk(chunk(index, "Swarming and harvest\n\n" + PASSAGE))
        assert pair.prompt == pair_from_chunk(chunk(index, "Swarming and harvest\n\n" + PASSAGE)).prompt
        prompts[pair.refs["template"]] = pair.prompt
    assert set(prompts) == set(TEMPLATES)
    assert prompts["section"] == "What does the section “Swarming and harvest” of “Field Notes” (pages 3–4) cover?"
    assert prompts["topic"] == "What does “Field Notes” (pages 3–4) say about “varroa mites”?"
    assert prompts["passage"] == ("From “Field Notes” (pages 3–4): what does the passage beginning “Varroa mites "
                                  "feed on the fat body…” explain?")


def test_pdf_pair_without_title_or_pages_and_short_chunks():
    stats = PairStats()
    pair = pair_from_chunk(chunk(title=None, page_start=None, page_end=None), stats=stats)
    assert "“bees”" in pair.prompt and "()" not in pair.prompt and "page" not in pair.prompt
    assert pair_from_chunk(chunk(text="Page 3"), stats=stats) is None
    assert (stats.chunks, stats.pdf_pairs, stats.short_chunks) == (2, 1, 1)
    one_page = pair_from_chunk(chunk(page_end=3), system_prompt="Be brief.")
    assert one_page.messages[0] == {"role": "system", "content": "Be brief."}
    assert "(page 3)" in one_page.prompt


def test_key_phrase():
    assert key_phrase(PASSAGE) == "varroa mites"
    assert key_phrase("One word only.") is None
