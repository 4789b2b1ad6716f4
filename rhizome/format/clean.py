"""Step "clean": normalise text, drop junk turns and redact secrets, in conversations and PDF chunks.

Normalisation (:func:`normalise_text`) makes equal-looking text equal (for dedup)
without changing what it says; junk detection (:func:`junk_reason`) drops turns
that teach nothing; redaction (:func:`redact_secrets`) keeps credentials that
people paste into chats out of a training set, on by default.

Redaction uses compiled regular expressions for credentials with a well-known
shape, modelled on the regex plugins of ``detect-secrets`` (AWS, GitHub, JWT,
private keys, Slack, Stripe, basic auth, keywords) plus the prefixes its
plugins lack (Anthropic, OpenAI project keys, Google, Hugging Face, bearer
tokens). ``detect-secrets`` itself is not used: run per line over free text its
regex plugins cost ~60 µs a line (≈2 minutes for 100k chat turns of ~20 lines
on one core), its entropy plugins flag ordinary words, commit SHAs and UUIDs,
and its OpenAI plugin knows only the legacy key shape. Each pattern here runs
only when a cheap substring test finds its prefix, so a text without one costs
a few substring searches. Measured on one core: 100k chat turns of ~700
characters are normalised in ≈1.5 s and redacted in ≈2 s
(``tests/format/test_clean.py::test_redaction_is_fast`` keeps it so).

What is deliberately *not* redacted: hex strings (commit SHAs, sha256 sums) and
UUIDs, which are public identifiers in the discussions they appear in, and
generic high-entropy strings; a hex string does get redacted when it is the
value of a secret-named assignment (``secret = "3f9a..."``).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rhizome.ingest.records import Conversation, Message

# NFC, not NFKC: NFC only composes canonically equivalent sequences (e + U+0301 -> é), so text that looks the same
# compares the same and nothing visible changes. NFKC also folds "compatibility" characters, which rewrites
# meaning in code and maths: x² -> x2, ½ -> 1⁄2, 𝑓 -> f, ™ -> TM, full-width punctuation in CJK text -> ASCII.
NORMAL_FORM = "NFC"

# Invisible characters that only break tokenisation and exact matching. U+200D (zero-width joiner) also glues
# emoji sequences (👨‍👩‍👧 becomes three emoji) and U+200C shapes some Persian and Indic words; losing that is
# cosmetic, while stray ones pasted from web pages and PDFs are common.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
NON_BREAKING_SPACES = "\u00a0\u2007\u202f"
LINE_SEPARATORS = "\u2028\u2029\u0085"

_LINE_SEPARATOR = re.compile(f"[{LINE_SEPARATORS}]")
_NON_BREAKING_SPACE = re.compile(f"[{NON_BREAKING_SPACES}]")
_INVISIBLE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{ZERO_WIDTH}]")  # controls but \t and \n, zero-widths
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
# More than two blank lines in a row become two: two is what PEP 8 puts between functions, so code keeps its shape.
_BLANK_RUN = re.compile(r"\n{4,}")
_INDENTED_CODE = re.compile(r" {4}|\t")


def normalise_text(text: str) -> str:
    """``text`` in NFC, without invisible and control characters, with tidy line ends and blank lines.

    Zero-width characters and control characters (except newline and tab) are
    removed, ``\\r\\n``/``\\r`` and Unicode line separators become ``\\n``,
    non-breaking spaces become spaces, trailing spaces and tabs of each line go,
    runs of more than two blank lines become two, and leading blank lines and
    trailing whitespace are stripped. Indentation is kept, including that of the
    first line when it starts an indented code block (four spaces or a tab);
    otherwise leading spaces of the first line go too.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = _NON_BREAKING_SPACE.sub(" ", _LINE_SEPARATOR.sub("\n", text))
        if not unicodedata.is_normalized(NORMAL_FORM, text):
            text = unicodedata.normalize(NORMAL_FORM, text)
    text = _INVISIBLE.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUN.sub("\n\n\n", text).rstrip()
    text = text.lstrip("\n")
    if not _INDENTED_CODE.match(text):
        text = text.lstrip()
    return text


# Junk: turns that carry no content of their own.
PLACEHOLDERS = (
    "This block is not supported on your current device yet.",  # Claude export: a tool call or artifact
)
_PLACEHOLDER = re.compile(
    r"(?:```[^\n]*\n\s*)?(?:" + "|".join(re.escape(p.rstrip(".")) + r"\.?" for p in PLACEHOLDERS) + r")(?:\s*\n```)?"
)
# Fillers and artifacts of broken exports; never words a real answer could be ("none", "n/a" answer questions).
JUNK_TEXTS = frozenset({"test", "testing", "test test", "test 123", "test123", "asdf", "asdfasdf", "qwerty",
                        "lorem ipsum", "null", "undefined", "nan", "[object object]", "placeholder"})


def junk_reason(text: str) -> str | None:
    """Why a normalised turn is junk, or None when it is not.

    ``"empty"``: nothing left; ``"no_words"``: no letter or digit at all (only
    punctuation, symbols or emoji: ".", "?!", "👍"); ``"junk"``: a known
    filler ("test", "asdf", ...), compared case-insensitively without trailing
    punctuation. Short real replies ("yes", "42", "thanks") are kept: after the
    context they follow they mean something.
    """
    if not text:
        return "empty"
    if not any(char.isalnum() for char in text):
        return "no_words"
    if len(text) <= 20 and text.lower().rstrip(".!?") in JUNK_TEXTS:
        return "junk"
    return None


def remove_placeholders(text: str) -> tuple[str, int]:
    """``text`` without export placeholders (fenced or bare), and how many there were."""
    if "not supported on your current device" not in text:
        return text, 0
    return _PLACEHOLDER.subn("", text)


# Secrets.
REDACTED = "[REDACTED:{kind}]"


@dataclass(frozen=True)
class SecretPattern:
    kind: str
    triggers: tuple[str, ...]  # substrings one of which every match contains; the regex runs only when one is found
    regex: re.Pattern
    secret_groups: tuple[int | str, ...] = (0,)  # the secret: the first of these groups that matched; the rest stays
    accept: Callable[[str], bool] | None = None  # a last check on the secret


def _assignment_value_ok(value: str) -> bool:
    """False for values that are names, references or placeholders rather than secrets."""
    lowered = value.lower()
    if value.startswith(("[REDACTED", "$", "%", "<", "{", "os.", "env", "process.")):
        return False
    return not any(marker in lowered for marker in _PLACEHOLDER_MARKERS) and lowered not in _PLACEHOLDER_VALUES


_PLACEHOLDER_MARKERS = ("your", "xxx", "***", "...", "…", "example", "placeholder", "changeme", "redacted", "<", "{{",
                        "${", "dummy", "fake", "secret_key", "api_key")  # the last two: a variable's name, not value
_PLACEHOLDER_VALUES = frozenset({"password", "passwd", "pass", "secret", "none", "null", "true", "false", "str",
                                 "string", "required", "optional", "undefined", "admin", "root", "user", "test"})

# The end of a name that holds a secret: *password, *pwd, *secret, *api_key, *access_key, *private_key, *auth_key, and
# the tokens of auth schemes. The keyword must end the name: "tokenizer", "password_hash", "secret_santa" are not
# secrets, and neither are a tokenizer's "pad_token"/"eos_token". The regex starts at the keyword (the rest of the
# name does not matter), which keeps it fast: most positions fail on their first character. It is matched against
# the lower-cased text, ~4x faster than re.IGNORECASE.
_SECRET_NAME = (r"(?:password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key"
                r"|(?:auth|access|api|refresh|bot|bearer|session|oauth|github|gh|hf|slack|personal)[_-]?token"
                r"|(?<![A-Za-z0-9_-])token)")
_ASSIGNMENT = re.compile(
    _SECRET_NAME + r"(?![A-Za-z0-9_])[\"']?[ \t]*(?::=|=>|=|:)[ \t]*"
    r"(?:(?P<quote>[\"'`])(?P<quoted>[^\s\"'`]{4,200})(?P=quote)"
    r"|(?P<bare>(?=[^\s\"'`,;(){}\[\]<>]*\d)[^\s\"'`,;(){}\[\]<>]{6,200}))",
)

SECRET_PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern("private_key", ("PRIVATE KEY",), re.compile(
        r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
        # Without its END line (a truncated paste) the block runs while lines look like key data or PEM headers.
        r"(?:.*?-----END (?P=label)-----|(?:\n(?:[A-Za-z0-9+/=]+|(?:Proc-Type|DEK-Info|Comment):[^\n]*)?(?=\n|\Z))*)",
        re.DOTALL)),
    SecretPattern("anthropic_key", ("sk-ant-",), re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}")),
    # Legacy (sk-<48>), project (sk-proj-...), service-account and admin keys. The digit rules out "sk-learn-...".
    SecretPattern("openai_key", ("sk-",), re.compile(r"(?<![\w-])sk-(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}")),
    SecretPattern("stripe_key", ("k_live_", "k_test_"), re.compile(r"(?<![\w-])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    SecretPattern("aws_access_key", ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
                  re.compile(r"(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])")),
    SecretPattern("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    SecretPattern("slack_token", ("xox", "hooks.slack.com"), re.compile(
        r"(?<![A-Za-z0-9])xox[abposre]-[A-Za-z0-9-]{10,}"
        r"|https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+")),
    SecretPattern("google_api_key", ("AIza",), re.compile(r"(?<![A-Za-z0-9_-])AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")),
    SecretPattern("huggingface_token", ("hf_",), re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9_])")),
    SecretPattern("jwt", ("eyJ",), re.compile(
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]+)?")),
    SecretPattern("bearer_token", ("earer",), re.compile(
        r"(?<![A-Za-z])[Bb]earer[ \t]+(?P<token>(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{16,}=*)"),
        secret_groups=("token",), accept=lambda token: not token.startswith("[REDACTED")),
    # scheme://user:password@host: the user name stays, the password goes.
    SecretPattern("url_password", ("://",), re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:(?P<password>[^\s@/]+)@"),
                  secret_groups=("password",), accept=_assignment_value_ok),
)
# Assignments run last, so a recognised key inside one is counted by its kind and not again here.
ASSIGNMENT_PATTERN = SecretPattern(
    "secret_assignment", ("pass", "secret", "key", "token", "pwd"), _ASSIGNMENT, secret_groups=("quoted", "bare"),
    accept=_assignment_value_ok)

_ASSIGNMENT_ANY_CASE = dataclasses.replace(ASSIGNMENT_PATTERN, regex=re.compile(_ASSIGNMENT.pattern, re.IGNORECASE))


def redact_secrets(text: str, counts: Counter | None = None) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED:<kind>]``; ``counts[kind]`` += each one.

    Kinds: ``private_key`` (the whole BEGIN ... END block), ``anthropic_key``,
    ``openai_key``, ``stripe_key``, ``aws_access_key``, ``github_token``,
    ``slack_token``, ``google_api_key``, ``huggingface_token``, ``jwt``,
    ``bearer_token`` ("Bearer " kept), ``url_password`` (``scheme://user:`` and
    ``@host`` kept) and ``secret_assignment``: the value of ``password=...``,
    ``api_key: "..."``, ``"client_secret": "..."`` and the like (quoted values
    of 4+ characters without spaces, unquoted ones of 6+ with a digit), unless it
    is a reference or placeholder (``os.environ[...]``, ``$VAR``, ``"<your key>"``,
    ``"xxx"``).
    """
    for pattern in SECRET_PATTERNS:
        if any(trigger in text for trigger in pattern.triggers):
            text = _redact(pattern, text, counts)
    lowered = text.lower()
    if any(trigger in lowered for trigger in ASSIGNMENT_PATTERN.triggers):
        # A few characters change length when lower-cased ("İ"); spans of the lowered text then no longer fit.
        if len(lowered) == len(text):
            text = _redact(ASSIGNMENT_PATTERN, text, counts, lowered)
        else:
            text = _redact(_ASSIGNMENT_ANY_CASE, text, counts)
    return text


def _redact(pattern: SecretPattern, text: str, counts: Counter | None, haystack: str | None = None) -> str:
    """``text`` with the secrets that ``pattern`` finds in ``haystack`` (``text`` or a same-length lowered copy)."""
    pieces, done = [], 0
    for match in pattern.regex.finditer(text if haystack is None else haystack):
        group = next(g for g in pattern.secret_groups if match.group(g) is not None)
        start, end = match.span(group)
        if pattern.accept is not None and not pattern.accept(text[start:end]):
            continue
        if counts is not None:
            counts[pattern.kind] += 1
        pieces += [text[done:start], REDACTED.format(kind=pattern.kind)]
        done = end
    return "".join(pieces) + text[done:] if pieces else text


# Conversations and chunks.
@dataclass
class CleanStats:
    """What cleaning changed, kept and dropped; one object accumulates over a whole run."""

    conversations_in: int = 0
    conversations_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    chunks_in: int = 0
    chunks_out: int = 0
    texts_changed: int = 0  # texts that normalisation or placeholder removal altered
    placeholders_removed: int = 0
    dropped: Counter = field(default_factory=Counter)  # messages or chunks dropped, by reason
    redacted: Counter = field(default_factory=Counter)  # secrets redacted, by kind

    def as_dict(self) -> dict[str, Any]:
        """Plain counts for ``dataset_metadata.json``."""
        values = dataclasses.asdict(self)
        values["dropped"] = dict(sorted(self.dropped.items()))
        values["redacted"] = dict(sorted(self.redacted.items()))
        return values


def normalise_and_redact(text: str, stats: CleanStats | None = None, redact: bool = True) -> str:
    """One text normalised, stripped of placeholders and (when ``redact``) of secrets; counted in ``stats``."""
    stats = stats if stats is not None else CleanStats()
    cleaned, placeholders = remove_placeholders(normalise_text(text))
    if placeholders:
        cleaned = normalise_text(cleaned)
        stats.placeholders_removed += placeholders
    if redact:
        cleaned = redact_secrets(cleaned, stats.redacted)
    if cleaned != text:
        stats.texts_changed += 1
    return cleaned


def clean_conversation(conversation: Conversation, stats: CleanStats | None = None,
                       redact: bool = True) -> Conversation | None:
    """A cleaned copy of ``conversation`` (the input is not changed), or None when no turn is left.

    Every turn is cleaned with :func:`normalise_and_redact`; junk turns
    (:func:`junk_reason`) are dropped and counted by reason. Turns go as
    exchanges, a run of user turns and the run of assistant turns that answers
    it: when all user turns of an exchange are junk its replies go too, counted
    as ``"reply_to_junk"`` (a reply to "test" is no answer to anything), and when
    all replies are junk the user turns go too, counted as ``"unanswered"``.
    Otherwise the remaining turns would merge with their neighbours into turns
    nobody wrote. The title is normalised and redacted too.
    """
    stats = stats if stats is not None else CleanStats()
    stats.conversations_in += 1
    stats.messages_in += len(conversation.messages)
    kept: list[Message] = []
    for exchange in _exchanges(conversation.messages):
        cleaned = []
        for message in exchange:
            text = normalise_and_redact(message.text, stats, redact)
            reason = junk_reason(text)
            if reason is not None:
                stats.dropped[reason] += 1
            else:
                cleaned.append(dataclasses.replace(message, text=text))
        users = [m for m in cleaned if m.role == "user"]
        replies = [m for m in cleaned if m.role == "assistant"]
        if any(m.role == "user" for m in exchange) and not users and replies:
            stats.dropped["reply_to_junk"] += len(replies)
            continue
        if any(m.role == "assistant" for m in exchange) and not replies and users:
            stats.dropped["unanswered"] += len(users)
            continue
        kept.extend(cleaned)
    if not kept:
        return None
    stats.conversations_out += 1
    stats.messages_out += len(kept)
    title = conversation.title
    if title:
        title = normalise_text(title)
        if redact:
            title = redact_secrets(title, stats.redacted)
    return dataclasses.replace(conversation, messages=kept, title=title or None)


def _exchanges(messages: list[Message]) -> list[list[Message]]:
    """``messages`` cut before every user turn that follows an assistant turn."""
    exchanges: list[list[Message]] = []
    for message in messages:
        if not exchanges or (message.role == "user" and exchanges[-1][-1].role == "assistant"):
            exchanges.append([])
        exchanges[-1].append(message)
    return exchanges


def clean_chunk(chunk: dict[str, Any], stats: CleanStats | None = None, redact: bool = True) -> dict[str, Any] | None:
    """A cleaned copy of a PDF chunk (``text`` and ``char_count`` updated), or None when it is junk."""
    stats = stats if stats is not None else CleanStats()
    stats.chunks_in += 1
    text = normalise_and_redact(chunk["text"], stats, redact)
    reason = junk_reason(text)
    if reason is not None:
        stats.dropped[f"chunk_{reason}"] += 1
        return None
    stats.chunks_out += 1
    return {**chunk, "text": text, "char_count": len(text)}
