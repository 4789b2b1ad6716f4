"""Cleaning: junk turns, conversations and PDF chunks (redaction's patterns: tests/test_redact.py)."""

from collections import Counter

import pytest

from rhizome.format.clean import (
    CleanStats,
    clean_chunk,
    clean_conversation,
    junk_reason,
    normalise_and_redact,
)
from rhizome.ingest.records import Conversation, Message
from rhizome.redact import Redaction


# Junk.
@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"), (".", "no_words"), ("?!…", "no_words"), ("👍🎉", "no_words"), ("```\n```", "no_words"),
    ("test", "junk"), ("Test.", "junk"), ("asdf", "junk"),
    ("yes", None), ("42", None), ("none", None), ("thanks!", None), ("Test the code with pytest", None),
])
def test_junk_reason(text, reason):
    assert junk_reason(text) == reason


# Conversations and chunks.
def conversation(*turns, title="Chat"):
    messages = [Message(role=role, text=text, id=f"m{i}", timestamp=1000.0 + i) for i, (role, text) in enumerate(turns)]
    return Conversation(id="c1", source="chatgpt", file="conversations.json", messages=messages, title=title)


def test_clean_conversation_cleans_drops_and_counts():
    original = conversation(
        ("user", "test"), ("assistant", "It looks like you are testing. How can I help?"),
        ("user", "  My key is sk-proj-abcDEF123ghiJKL456mnoPQR789 \u200b"), ("assistant", "Revoke it now."),
        ("user", "Make me a picture"), ("assistant", "This block is not supported on your current device yet."),
        ("user", "Thanks"), ("assistant", "You're welcome!"),
        ("user", "👍"),
    )
    stats = CleanStats()
    cleaned = clean_conversation(original, stats)
    assert [(m.role, m.text) for m in cleaned.messages] == [
        ("user", "My key is [REDACTED:openai_key]"), ("assistant", "Revoke it now."),
        ("user", "Thanks"), ("assistant", "You're welcome!"),
    ]
    assert [m.id for m in cleaned.messages] == ["m2", "m3", "m6", "m7"]
    assert original.messages[2].text.startswith("  My key")  # the input is not changed
    assert stats.dropped == Counter({"junk": 1, "reply_to_junk": 1, "empty": 1, "unanswered": 1, "no_words": 1})
    assert stats.redacted == Counter({"openai_key": 1})
    assert stats.placeholders_removed == 1
    assert (stats.conversations_in, stats.conversations_out, stats.messages_in, stats.messages_out) == (1, 1, 9, 4)
    assert stats.as_dict()["dropped"]["junk"] == 1


def test_clean_conversation_keeps_a_reply_when_one_of_two_user_turns_is_junk():
    cleaned = clean_conversation(conversation(("user", "."), ("user", "What is varroa?"), ("assistant", "A mite.")),
                                 CleanStats())
    assert [m.text for m in cleaned.messages] == ["What is varroa?", "A mite."]


def test_clean_conversation_with_nothing_left_is_none():
    stats = CleanStats()
    assert clean_conversation(conversation(("user", "test"), ("assistant", "")), stats) is None
    assert stats.conversations_out == 0 and stats.messages_out == 0


def test_redaction_can_be_turned_off_and_titles_are_redacted():
    turns = [("user", "Mail me: ann@example.org\npassword=hunter22 works?"), ("assistant", "Yes.")]
    kept = clean_conversation(conversation(*turns, title="sk-proj-abcDEF123ghiJKL456mnoPQR789"), CleanStats(),
                              Redaction(secrets=False))
    assert kept.messages[0].text == "Mail me: ann@example.org\npassword=hunter22 works?"
    redacted = clean_conversation(conversation(*turns, title="key sk-proj-abcDEF123ghiJKL456mnoPQR789"), CleanStats())
    assert redacted.title == "key [REDACTED:openai_key]"
    assert redacted.messages[0].text == "Mail me: ann@example.org\npassword=[REDACTED:secret_assignment] works?"


def test_personal_data_is_redacted_on_request_and_counted_with_the_secrets():
    stats = CleanStats()
    turns = [("user", "I'm ann@example.org, +44 20 7946 0958; key sk-proj-abcDEF123ghiJKL456mnoPQR789"),
             ("assistant", "Noted.")]
    cleaned = clean_conversation(conversation(*turns, title="ann@example.org"), stats, Redaction(pii=True))
    assert cleaned.messages[0].text == "I'm [REDACTED:email], [REDACTED:phone]; key [REDACTED:openai_key]"
    assert cleaned.title == "[REDACTED:email]"
    assert stats.redacted == Counter({"email": 2, "phone": 1, "openai_key": 1})
    assert stats.as_dict()["redacted"] == {"email": 2, "openai_key": 1, "phone": 1}


def test_clean_chunk():
    stats = CleanStats()
    chunk = {"id": "a.pdf#0", "text": "Varroa\u00a0mites   \n\n\n\n\nspread.\x0c", "source_file": "a.pdf", "char_count": 33}
    assert clean_chunk(chunk, stats) == {"id": "a.pdf#0", "text": "Varroa mites\n\n\nspread.", "source_file": "a.pdf",
                                         "char_count": 22}
    assert clean_chunk({**chunk, "text": " \n ... \n"}, stats) is None
    assert (stats.chunks_in, stats.chunks_out, stats.dropped) == (2, 1, Counter({"chunk_no_words": 1}))


def test_normalise_and_redact_counts_changed_texts():
    stats = CleanStats()
    assert normalise_and_redact("plain text", stats) == "plain text"
    assert normalise_and_redact("plain  \ntext", stats) == "plain\ntext"
    assert stats.texts_changed == 1
