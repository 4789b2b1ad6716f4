"""Redaction of secrets (on by default) and personal data (opt-in), one set of patterns for every stage.

The memory (``batch_embedder.py``), the training set (``data_formatter.py``) and the turns the chat
page remembers all go through :class:`Redaction`, so a key pasted into a chat is replaced by
``[REDACTED:<kind>]`` before it is embedded, stored, shown as a memory or trained on.

Secrets are credentials with a well-known shape, modelled on the regex plugins of ``detect-secrets``
(AWS, GitHub, JWT, private keys, Slack, Stripe, basic auth, keywords) plus the prefixes its plugins
lack (Anthropic, OpenAI project keys, Google, Hugging Face, bearer tokens). ``detect-secrets`` itself
is not used: run per line over free text its regex plugins cost ~60 µs a line (≈2 minutes for 100k
chat turns of ~20 lines on one core), its entropy plugins flag ordinary words, commit SHAs and UUIDs,
and its OpenAI plugin knows only the legacy key shape. Each secret pattern runs only when a cheap
substring test finds its prefix, so a text without one costs a few substring searches. Measured on
one core, 100k chat turns of ~700 characters: secrets ≈2 s, personal data ≈5 s more.

Every pattern runs in time linear in the text (``tests/test_redact.py`` times each on 1 MB built to
make it backtrack): repetitions are bounded and where a match may start is pinned by a look-behind,
so no start position rescans an unbounded stretch of text.

Personal data (``--redact-pii``) is off by default: the chats are the user's own, and the names of
the people and places in them are what the memory is for. When on, it redacts e-mail addresses,
phone numbers (international ``+...`` numbers and the common national layouts), IBANs that pass the
mod-97 check and card numbers that pass the Luhn check.

What is deliberately *not* redacted: hex strings (commit SHAs, sha256 sums) and UUIDs, which are
public identifiers in the discussions they appear in, generic high-entropy strings, and absolute paths
(``PWD=/home/...``); a hex string does get redacted when it is the value of a secret-named assignment
(``secret = "3f9a..."``).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

REDACTED = "[REDACTED:{kind}]"
# The flags' help, shared by every stage that redacts.
REDACT_HELP = "redact API keys, tokens, private keys and passwords (--no-redact: keep them)"
REDACT_PII_HELP = ("also redact personal data: e-mail addresses, phone numbers, IBANs and card numbers "
                   "(off by default: the chats are your own)")


@dataclass(frozen=True)
class Pattern:
    kind: str
    regex: re.Pattern
    # Substrings one of which every match contains: the regex runs only when one is found (always when none).
    triggers: tuple[str, ...] = ()
    secret_groups: tuple[int | str, ...] = (0,)  # the secret: the first of these groups that matched; the rest stays
    accept: Callable[[str], bool] | None = None  # a last check on the secret


# Secrets.
def _assignment_value_ok(value: str) -> bool:
    """False for values that are names, references, paths or placeholders rather than secrets."""
    lowered = value.lower()
    # An absolute path says where something lives (PWD=/home/..., token: ~/.config/token), not what it is.
    if value.startswith(("[REDACTED", "$", "%", "<", "{", "os.", "env", "process.", "/", "~/")):
        return False
    return not any(marker in lowered for marker in _PLACEHOLDER_MARKERS) and lowered not in _PLACEHOLDER_VALUES


# "example" is a placeholder only as the whole value: AWS's own sample keys end in EXAMPLE, and a real password
# may contain the word.
_PLACEHOLDER_MARKERS = ("your", "xxx", "***", "...", "…", "placeholder", "changeme", "redacted", "<", "{{",
                        "${", "dummy", "fake", "secret_key", "api_key")  # the last two: a variable's name, not value
_PLACEHOLDER_VALUES = frozenset({"password", "passwd", "pass", "secret", "none", "null", "true", "false", "str",
                                 "string", "required", "optional", "undefined", "admin", "root", "user", "test",
                                 "example"})

# The end of a name that holds a secret: *password, *pwd, *secret, *api_key, *access_key, *private_key, *auth_key, and
# the tokens of auth schemes; "secret key", "api key" and "access key" also as words in prose and in the prompts of
# `aws configure`. The keyword must end the name: "tokenizer", "password_hash", "secret_santa" are not secrets, and
# neither are a tokenizer's "pad_token"/"eos_token". The regex starts at the keyword (the rest of the name does not
# matter), which keeps it fast: most positions fail on their first character. It is matched against the lower-cased
# text, ~4x faster than re.IGNORECASE.
_SECRET_NAME = (r"(?:password|passwd|pwd|passphrase|secret|(?:secret|api|access|private|auth)[ _-]?key"
                r"|(?:auth|access|api|refresh|bot|bearer|session|oauth|github|gh|hf|slack|personal)[_-]?token"
                r"|(?<![A-Za-z0-9_-])token)")
_UNQUOTED = r"[^\s\"'`,;(){}\[\]<>]"  # a character of an unquoted value
_ASSIGNMENT = re.compile(
    _SECRET_NAME + r"(?![A-Za-z0-9_])[\"']?"
    r"(?:[ \t]*\[[^\]\n]{0,40}\])?"  # `aws configure` shows the old value in brackets: "... Key [None]: "
    r"(?:[ \t]*(?::=|=>|=|:)[ \t]*|[ \t]+(?:is|was)[ \t]+)"
    # Quoted values may hold spaces ("correct horse battery staple"); unquoted ones need a digit, which tells
    # "password=hunter22" and "the secret key is wJalr...7..." from "password: required" or "the key is stored".
    r"(?:(?P<quote>[\"'`])(?P<quoted>(?:(?!(?P=quote))[^\n]){4,200})(?P=quote)"
    rf"|(?P<bare>(?={_UNQUOTED}{{0,200}}\d){_UNQUOTED}{{5,199}}[^\s\"'`,;(){{}}\[\]<>.!?:]))",
)
# A line of an env file (upper-case names by convention), where an unquoted value runs to the end of the line and
# may hold spaces: "DB_PASSWORD=correct horse battery staple".
_ENV_LINE = re.compile(
    r"^(?:export[ \t]+)?[A-Z0-9_]{0,100}?" + _SECRET_NAME.upper()
    + r"=(?P<value>[^\s\"'`=(){}\[\]<>|;$][^\n\"'`=(){}\[\]<>|;$]{2,198}[^\s\"'`=(){}\[\]<>|;$])$", re.MULTILINE)

_BASE64 = r"[A-Za-z0-9+/=]+"
# A PEM body line: base64 (pasted text sometimes turns the line ends into spaces) or an RFC 1421 header.
_PEM_LINE = rf"(?:{_BASE64}(?:[ \t]+{_BASE64})*|(?:Proc-Type|DEK-Info|Comment):[^\n\\\"']*)"
_NEWLINE = r"(?:\r?\n|(?:\\r)?\\n)"  # a line end, or one escaped inside a JSON string (a service-account file)

SECRET_PATTERNS: tuple[Pattern, ...] = (
    # From the BEGIN line as long as what follows looks like key data, to the END line when there is one. A lazy
    # ".*?-----END" would rescan the rest of the text for every BEGIN line without an END.
    Pattern("private_key", re.compile(
        r"-----BEGIN (?P<label>[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?)-----"
        rf"(?:[ \t]+{_BASE64}(?:[ \t]+{_BASE64})*)?"  # the body on the BEGIN line itself
        rf"(?:{_NEWLINE}(?:[ \t]*{_PEM_LINE})?(?={_NEWLINE}|[ \t]*-----END |\Z|[\"']))*"
        rf"(?:(?:\s|\\r|\\n)*-----END (?P=label)-----)?"), ("PRIVATE KEY",)),
    Pattern("anthropic_key", re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}"), ("sk-ant-",)),
    # Legacy (sk-<48>), project (sk-proj-...), service-account and admin keys. The digit rules out "sk-learn-...".
    Pattern("openai_key", re.compile(r"(?<![\w-])sk-(?=[A-Za-z0-9_-]{0,200}\d)[A-Za-z0-9_-]{20,}"), ("sk-",)),
    Pattern("stripe_key", re.compile(r"(?<![\w-])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"), ("k_live_", "k_test_")),
    Pattern("aws_access_key",
            re.compile(r"(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
            ("AKIA", "ASIA", "ABIA", "ACCA", "A3T")),
    Pattern("github_token",
            re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    Pattern("slack_token", re.compile(
        r"(?<![A-Za-z0-9])xox[abposre]-[A-Za-z0-9-]{10,}"
        r"|https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
        ("xox", "hooks.slack.com")),
    Pattern("google_api_key", re.compile(r"(?<![A-Za-z0-9_-])AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"), ("AIza",)),
    Pattern("huggingface_token", re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9_])"), ("hf_",)),
    Pattern("jwt", re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]+)?"),
            ("eyJ",)),
    Pattern("bearer_token", re.compile(
        r"(?<![A-Za-z])[Bb]earer[ \t]+(?P<token>(?=[A-Za-z0-9._~+/-]{0,200}\d)[A-Za-z0-9._~+/-]{16,}=*)"), ("earer",),
        secret_groups=("token",), accept=lambda token: not token.startswith("[REDACTED")),
    # scheme://user:password@host: the user name stays, the password goes. The scheme is bounded, else every
    # letter of a long "a-a-a-..." would start a scan to its end.
    Pattern("url_password", re.compile(
        r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s:/@]{1,256}:(?P<password>[^\s@/]{1,256})@"), ("://",),
        secret_groups=("password",), accept=_assignment_value_ok),
    Pattern("secret_assignment", _ENV_LINE, ("PASS", "SECRET", "KEY", "TOKEN", "PWD"), secret_groups=("value",),
            accept=lambda value: " " in value and _assignment_value_ok(value)),  # without spaces: the rule below
)
# Assignments run last, so a recognised key inside one is counted by its kind and not again here; they are matched
# against the lower-cased text.
ASSIGNMENT_PATTERN = Pattern("secret_assignment", _ASSIGNMENT, ("pass", "secret", "key", "token", "pwd"),
                             secret_groups=("quoted", "bare"), accept=_assignment_value_ok)
_ASSIGNMENT_ANY_CASE = dataclasses.replace(ASSIGNMENT_PATTERN, regex=re.compile(_ASSIGNMENT.pattern, re.IGNORECASE))


def redact_secrets(text: str, counts: Counter | None = None) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED:<kind>]``; ``counts[kind]`` += each one.

    Kinds: ``private_key`` (the whole BEGIN ... END block, or as far as key data goes without an END),
    ``anthropic_key``, ``openai_key``, ``stripe_key``, ``aws_access_key``, ``github_token``,
    ``slack_token``, ``google_api_key``, ``huggingface_token``, ``jwt``, ``bearer_token`` ("Bearer "
    kept), ``url_password`` (``scheme://user:`` and ``@host`` kept) and ``secret_assignment``: the value
    of ``password=...``, ``api_key: "..."``, ``"client_secret": "..."``, ``AWS Secret Access Key [None]: ...``,
    "my secret key is ..." and the like (quoted values of 4+ characters, spaces allowed; unquoted ones of
    6+ with a digit; in an env file the rest of the line), unless it is a reference, path or placeholder
    (``os.environ[...]``, ``$VAR``, ``/home/...``, ``"<your key>"``, ``"xxx"``).
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


# Personal data.
def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


_DATE = re.compile(r"\d{1,4}[-./ ]\d{1,2}[-./ ]\d{1,4}$")


def _phone_ok(number: str) -> bool:
    digits = sum(char.isdigit() for char in number)
    if number.startswith("+"):
        return 8 <= digits <= 15  # E.164 allows at most 15
    return 9 <= digits <= 13 and not _DATE.match(number)


# Where a number may start and end: not inside a longer run of digits, words, versions or dates.
_NUMBER_START = r"(?<![\w+.,/:-])"
_NUMBER_END = r"(?![\w]|[.,/:-]\d)"

PII_PATTERNS: tuple[Pattern, ...] = (
    # 13 to 19 digits, in groups or not, from an issuer's range (2-6: Mastercard, Visa, Amex, Discover, JCB, UnionPay);
    # 13-digit millisecond timestamps start with 1.
    Pattern("card_number", re.compile(rf"{_NUMBER_START}[2-6]\d{{3}}(?:[ -]?\d){{9,15}}(?![ -]?\d){_NUMBER_END}"),
            accept=_luhn_ok),
    Pattern("iban", re.compile(
        r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?![A-Za-z0-9])"),
        accept=_iban_ok),
    Pattern("email", re.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?!\d+x\.)"  # not "icon@2x.png"
        r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z0-9-]|\.[A-Za-z0-9])"), ("@",),
        accept=lambda address: not address.lower().startswith("git@")),  # git@github.com: a host, not a person
    # International (+ and a country code), North American 3-3-4, and national numbers with a trunk 0 in groups.
    # Separators are required between groups, so a run of digits splits one way only and a failed match gives
    # back at most one group's digits.
    Pattern("phone", re.compile(
        rf"{_NUMBER_START}(?:"
        r"\+\d{1,15}(?:[ .-]?\(\d{1,4}\)[ .-]?\d{1,15})?(?:[ .-]\d{1,15}){0,6}"
        r"|(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}"
        r"|(?:0\d{1,4}|\(0\d{1,4}\))(?:[ -]\d{2,8}){1,4}"
        rf"){_NUMBER_END}"), accept=_phone_ok),
)
PII_KINDS = frozenset(pattern.kind for pattern in PII_PATTERNS)
_DIGIT = re.compile(r"\d")


def redact_pii(text: str, counts: Counter | None = None) -> str:
    """``text`` with personal data replaced by ``[REDACTED:<kind>]``; ``counts[kind]`` += each one.

    Kinds: ``card_number`` (13-19 digits passing the Luhn check), ``iban`` (passing the mod-97 check),
    ``email`` and ``phone`` (``+`` and 8-15 digits; ``(555) 123-4567``, ``555-123-4567``; national numbers
    with a trunk 0 in groups, ``020 7946 0958``, ``06 12 34 56 78``). Dates, times, version numbers,
    IP addresses and plain runs of digits are left alone.
    """
    if "@" not in text and not _DIGIT.search(text):
        return text
    for pattern in PII_PATTERNS:
        if not pattern.triggers or any(trigger in text for trigger in pattern.triggers):
            text = _redact(pattern, text, counts)
    return text


def _redact(pattern: Pattern, text: str, counts: Counter | None, haystack: str | None = None) -> str:
    """``text`` with the matches that ``pattern`` finds in ``haystack`` (``text`` or a same-length lowered copy)."""
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


@dataclass(frozen=True)
class Redaction:
    """What a stage redacts: secrets (``--no-redact`` turns it off) and personal data (``--redact-pii``)."""

    secrets: bool = True
    pii: bool = False

    def __call__(self, text: str, counts: Counter | None = None) -> str:
        """``text`` redacted as set; ``counts[kind]`` += each redaction."""
        if self.secrets:
            text = redact_secrets(text, counts)
        if self.pii:
            text = redact_pii(text, counts)
        return text

    def __bool__(self) -> bool:
        return self.secrets or self.pii

    @classmethod
    def of(cls, settings: Mapping) -> Redaction:
        """The redaction a stage's saved settings (``redact``, ``redact_pii``) ask for; secrets when unsaved."""
        return cls(bool(settings.get("redact", True)), bool(settings.get("redact_pii", False)))
