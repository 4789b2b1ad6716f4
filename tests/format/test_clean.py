"""Cleaning: normalisation, junk turns, secret redaction, conversations and PDF chunks."""

from collections import Counter

import pytest

from rhizome.format.clean import (
    CleanStats,
    clean_chunk,
    clean_conversation,
    junk_reason,
    normalise_and_redact,
    normalise_text,
    redact_secrets,
)
from rhizome.ingest.records import Conversation, Message


# Normalisation.
@pytest.mark.parametrize(("raw", "expected"), [
    ("e\u0301te\u0301", "été"),  # NFC composes
    ("x² ½ ﬁ ™ ＡＢＣ", "x² ½ ﬁ ™ ＡＢＣ"),  # ... but does not fold compatibility characters (NFKC would)
    ("zero\u200bwidth\u200c\u200d\u2060\ufeff!", "zerowidth!"),
    ("non\u00a0breaking\u202fspaces", "non breaking spaces"),
    ("bell\x07 null\x00 esc\x1b[0m c1\x9f", "bell null esc[0m c1"),
    ("tabs\tstay\nand\nnewlines", "tabs\tstay\nand\nnewlines"),
    ("windows\r\nold mac\rline\u2028sep", "windows\nold mac\nline\nsep"),
    ("trailing   \nspaces\t\nend", "trailing\nspaces\nend"),
    ("a\n\n\n\n\n\nb", "a\n\n\nb"),  # more than two blank lines -> two
    ("a\n\n\nb", "a\n\n\nb"),  # two blank lines stay (PEP 8 between functions)
    ("  \n\n  hello world \n\n  ", "hello world"),
    ("", ""),
])
def test_normalise_text(raw, expected):
    assert normalise_text(raw) == expected


def test_normalise_keeps_code_indentation():
    code = "```python\ndef f(x):\n    if x:\n\treturn 1   \n        # deep\n```"
    assert normalise_text(code) == "```python\ndef f(x):\n    if x:\n\treturn 1\n        # deep\n```"
    assert normalise_text("\n\n    indented_code = 1\n    more = 2\n") == "    indented_code = 1\n    more = 2"


# Junk.
@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"), (".", "no_words"), ("?!…", "no_words"), ("👍🎉", "no_words"), ("```\n```", "no_words"),
    ("test", "junk"), ("Test.", "junk"), ("asdf", "junk"),
    ("yes", None), ("42", None), ("none", None), ("thanks!", None), ("Test the code with pytest", None),
])
def test_junk_reason(text, reason):
    assert junk_reason(text) == reason


# Redaction.
FAKE_JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
PRIVATE_KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234abcd\nZmFrZWtleWRhdGE=\n"
               "-----END RSA PRIVATE KEY-----")


@pytest.mark.parametrize(("text", "expected", "kind"), [
    ("key sk-proj-abcDEF123ghiJKL456mnoPQR789stu_vwx-YZ0 ok", "key [REDACTED:openai_key] ok", "openai_key"),
    ("sk-abcdefghij1234567890ABCDEFGHIJ1234567890abcdefgh", "[REDACTED:openai_key]", "openai_key"),
    ("ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789-AB",
     "ANTHROPIC_API_KEY=[REDACTED:anthropic_key]", "anthropic_key"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "aws [REDACTED:aws_access_key] here", "aws_access_key"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:github_token]", "github_token"),
    ("gho_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:github_token]", "github_token"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[REDACTED:github_token]", "github_token"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp", "[REDACTED:slack_token]", "slack_token"),
    ("key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe;", "key=[REDACTED:google_api_key];", "google_api_key"),
    ("sk_live_abcdefghijklmnopqrstuvwx", "[REDACTED:stripe_key]", "stripe_key"),
    ("HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "HF_TOKEN=[REDACTED:huggingface_token]", "huggingface_token"),
    (f"token {FAKE_JWT}", "token [REDACTED:jwt]", "jwt"),
    ("-H 'Authorization: Bearer abcDEF123456ghiJKL789'", "-H 'Authorization: Bearer [REDACTED:bearer_token]'",
     "bearer_token"),
    (f"my key:\n{PRIVATE_KEY}\nthanks", "my key:\n[REDACTED:private_key]\nthanks", "private_key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAA\n\nWhat is wrong with it?",
     "[REDACTED:private_key]\nWhat is wrong with it?", "private_key"),  # truncated: ends where the key data does
    ("postgres://alice:s3cr3tP4ss@db.example.com:5432/app", "postgres://alice:[REDACTED:url_password]@db.example.com:5432/app",
     "url_password"),
    ('password = "hunter2"', 'password = "[REDACTED:secret_assignment]"', "secret_assignment"),
    ("DB_PASSWORD=Tr0ub4dor&3", "DB_PASSWORD=[REDACTED:secret_assignment]", "secret_assignment"),
    ('{"client_secret": "Zx9-qq-77"}', '{"client_secret": "[REDACTED:secret_assignment]"}', "secret_assignment"),
    ("api_key: abc123def456", "api_key: [REDACTED:secret_assignment]", "secret_assignment"),
    ("x-api-key: 0123abcd4567efgh", "x-api-key: [REDACTED:secret_assignment]", "secret_assignment"),
    ("DB_PWD='Where2Go!'", "DB_PWD='[REDACTED:secret_assignment]'", "secret_assignment"),
])
def test_each_secret_kind_is_redacted_and_counted(text, expected, kind):
    counts = Counter()
    assert redact_secrets(text, counts) == expected
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize("text", [
    "The commit 3f9a2b1c4d5e6f708192a3b4c5d6e7f8091a2b3c fixed it; see also abc1234.",
    "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "Its id is 123e4567-e89b-12d3-a456-426614174000.",
    "The secret to good bread is time. My password manager is great. Keys: none. Tokens: 1024.",
    "pip install scikit-learn; see the sk-learn-compatible-estimators page",
    'api_key = os.environ["OPENAI_API_KEY"]\npassword = getpass.getpass()\nsecret = os.getenv("SECRET")',
    'tokenizer = "bert-base-uncased"; pad_token = "[PAD]"; eos_token="</s>"; max_tokens=100000',
    "def connect(password: str, api_key: str | None = None) -> None:",
    'api_key = "YOUR_API_KEY"; password = "<password>"; token = "${TOKEN}"; secret="xxxxxxxx"',
    "postgres://user:password@localhost/db and https://example.com:8080/path@v2",
    "Ghosts, hf_hub_download and AKIA are fine words; the Bearer of this letter.",
])
def test_prose_identifiers_and_placeholders_are_not_redacted(text):
    counts = Counter()
    assert redact_secrets(text, counts) == text
    assert not counts


def test_a_key_in_an_assignment_counts_once_by_its_kind():
    counts = Counter()
    assert redact_secrets('OPENAI_API_KEY="sk-proj-AAAAAAAAAAAAAAAAAAAAAAAA1"', counts) == \
        'OPENAI_API_KEY="[REDACTED:openai_key]"'
    assert counts == Counter({"openai_key": 1})


def test_uppercase_keywords_and_unicode_that_changes_length_when_lowered():
    counts = Counter()
    assert redact_secrets("İstanbul PASSWORD: Hunter22", counts) == "İstanbul PASSWORD: [REDACTED:secret_assignment]"
    assert counts["secret_assignment"] == 1


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
    turns = [("user", "password=hunter22 works?"), ("assistant", "Yes.")]
    kept = clean_conversation(conversation(*turns, title="sk-proj-abcDEF123ghiJKL456mnoPQR789"), CleanStats(),
                              redact=False)
    assert kept.messages[0].text == "password=hunter22 works?"
    redacted = clean_conversation(conversation(*turns, title="key sk-proj-abcDEF123ghiJKL456mnoPQR789"), CleanStats())
    assert redacted.title == "key [REDACTED:openai_key]"
    assert redacted.messages[0].text == "password=[REDACTED:secret_assignment] works?"


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
