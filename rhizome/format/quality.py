"""Step "quality": a score in [0, 1] for each pair, from six components that each catch one flaw.

Every component is in [0, 1], 1 meaning "no sign of the flaw"; ``r`` and ``p``
are the reply's and prompt's lengths in characters (a CJK character counts
three: it carries about as much as a short word), ``clamp`` limits to [0, 1]
and ``ramp(x, lo, hi) = clamp(log(x/lo) / log(hi/lo))``.

==========  ======  ==============================================================================
component   weight  what it measures
==========  ======  ==============================================================================
length      0.20    ``ramp(r, 10, 200) * (0.8 + 0.2 * ramp(p, 2, 15))``, times ``1 - 0.3 * clamp((r -
                    12000) / 36000)`` for giant replies (≥ 0.7): very short replies are worth little
balance     0.10    ``clamp(sqrt(r / (0.1 * max(p, 300))))``: a reply of under a tenth of a long
                    prompt (a 5,000-character paste answered with "ok") answers little of it
diversity   0.20    the lowest of: type/token ratio of the reply's words in 50-word segments (MSTTR),
                    ``clamp((msttr - 0.3) / 0.3)``; repeated word 4-grams, ``clamp((0.6 - dup) /
                    0.4)``; repeated lines of 20+ characters, ``clamp((0.7 - dup) / 0.5)``. ``dup``
                    is the share of repeats. Catches generation loops
refusal     0.20    0.0 for a refusal ("I'm sorry, but I can't ...") in the first 200 characters of
                    a reply under 500 characters; 0.2 for AI boilerplate anywhere ("As an AI language
                    model", "I don't have personal opinions", "my knowledge cutoff"); 0.5 for a
                    refusal opening a longer reply; 0.9 for a stock sign-off ("I hope this helps",
                    "feel free to ask"); else 1.0
truncation  0.15    0.1 for an unclosed code fence; 0.15 for a reply ending in a comma, hyphen,
                    opening bracket or a word such as "the", "and", "to"; 0.6 for one ending in
                    another word without punctuation, 0.85 if that last line is a list item, heading
                    or indented code; else (ending in punctuation, a symbol, an emoji) 1.0
garbage     0.15    the lowest of: share of letters among the non-space characters outside code
                    fences, ``clamp((share - 0.15) / 0.25)``; mojibake ("Ã©", "â€™", U+FFFD),
                    ``1 - 0.35 * count``; share of characters in blobs (base64 runs of 100+
                    characters; outside code fences, ASCII tokens of 50+ characters other than URLs),
                    ``clamp(1 - share / 0.4)``. The prompt counts only for mojibake: ``min(reply's,
                    0.5 + 0.5 * prompt's mojibake)``
==========  ======  ==============================================================================

The score is the weighted mean, scaled down when the weakest component is
below 0.5, since one bad flaw (a refusal, a loop, garbage) spoils a pair whatever
else is right::

    score = sum(weight_i * c_i) * min(1, 2 * min_i c_i)

Calibration (tests/format/test_quality.py): ordinary good chat answers score
0.75-1.0; refusals, AI boilerplate, truncated replies, garbage and loops score
below 0.46, the default ``--qa-quality-score-threshold``.
"""

from __future__ import annotations

import math
import re

from rhizome.format.records import Pair

WEIGHTS = {"length": 0.20, "balance": 0.10, "diversity": 0.20, "refusal": 0.20, "truncation": 0.15,
           "garbage": 0.15}
DEFAULT_THRESHOLD = 0.46

_APOSTROPHE = "['’]"
# Phrases are matched in lower-cased text. The boilerplate patterns start without \b: a pattern that starts with
# literal text lets the regex engine skip ahead (3-4x faster); the word boundary is checked on each match instead.
_REFUSAL = re.compile(
    rf"\b(?:i{_APOSTROPHE}m sorry|i am sorry|sorry|i apologi[sz]e|unfortunately)\b[^.!?\n]{{0,30}}?"
    rf"\bi (?:can{_APOSTROPHE}?t|cannot|can not|won{_APOSTROPHE}t|will not|am unable to|{_APOSTROPHE}m unable to"
    rf"|am not able to|{_APOSTROPHE}m not able to)\b"
    rf"|\bi (?:can{_APOSTROPHE}?t|cannot|won{_APOSTROPHE}t|am unable to|{_APOSTROPHE}m unable to|am not able to"
    rf"|{_APOSTROPHE}m not able to) (?:help|assist|provide|comply|fulfil+|create|generate|write|do that|answer"
    rf"|engage|support|share|give)\b"
    r"|\bi must (?:decline|refuse)\b",
)
_AI_BOILERPLATE = re.compile(
    rf"as an? (?:ai|artificial intelligence)(?: language model| model| assistant| developed by| created by)?\b"
    rf"|as a (?:large )?language model\b"
    rf"|i{_APOSTROPHE}m (?:just |only )?an ai\b|i am (?:just |only )?an ai\b"
    rf"|i (?:don{_APOSTROPHE}t|do not) have (?:personal )?(?:opinions|feelings|beliefs|emotions|preferences"
    rf"|personal experiences)\b"
    rf"|my (?:knowledge cutoff|knowledge cut-off|training data (?:only )?(?:goes|extends) up to)\b"
    rf"|i (?:don{_APOSTROPHE}t|do not|cannot|can{_APOSTROPHE}t) (?:have (?:the ability to )?)?(?:browse|access) "
    rf"(?:the internet|the web|real-time)",
)
_SIGN_OFF = re.compile(
    r"i hope (?:this|that) helps|feel free to (?:ask|reach out)"
    r"|let me know if you have any (?:other|more|further) questions|happy to help\b",
)
_WORD = re.compile(r"\w+")
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)", re.MULTILINE)
_FENCED_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL)
_DANGLING_WORDS = frozenset({"the", "a", "an", "and", "or", "but", "to", "of", "in", "on", "for", "with", "by", "at",
                             "from", "as", "is", "are", "was", "that", "which", "because", "if", "than", "then",
                             "this", "these", "your", "my", "our", "their", "its"})
_CLOSED_ENDINGS = frozenset(".!?…:)]}\"'”’»*`>|")
_OPEN_ENDINGS = frozenset(",-–—([{/&+=\\")
_STRUCTURED_LINE = re.compile(r"^\s*(?:[-*+•]\s|\d+[.)]\s|\||#|>)")
_WIDE = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")  # kana, CJK ideographs, hangul
_LETTERS = re.compile(r"[^\W\d_]+")
_MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|â€|Â[\u00a0-\u00bf]|ï¿½|\ufffd")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{100,}={0,2}")
_LONG_TOKEN = re.compile(r"[!-~]{50,}")  # in prose: ASCII "words" of 50+ characters, URLs (and markdown links) excepted


def score_pair(pair: Pair) -> tuple[float, dict[str, float]]:
    """The pair's quality score and its components (see the module docstring), each rounded to 4 places."""
    prompt, reply = pair.prompt, pair.reply
    prompt_chars, reply_chars = text_length(prompt), text_length(reply)
    components = {
        "length": length_score(prompt_chars, reply_chars),
        "balance": balance_score(prompt_chars, reply_chars),
        "diversity": diversity_score(reply),
        "refusal": refusal_score(reply),
        "truncation": truncation_score(reply),
        "garbage": min(garbage_score(reply), 0.5 + 0.5 * mojibake_score(prompt)),
    }
    return combine(components), {name: round(value, 4) for name, value in components.items()}


def combine(components: dict[str, float]) -> float:
    """``sum(weight * c) * min(1, 2 * min(c))``, rounded to 4 places."""
    mean = sum(WEIGHTS[name] * value for name, value in components.items())
    return round(mean * min(1.0, 2.0 * min(components.values())), 4)


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else min(value, 1.0)


def _ramp(value: float, low: float, high: float) -> float:
    return _clamp(math.log(value / low) / math.log(high / low)) if value > 0 else 0.0


def text_length(text: str) -> int:
    """Characters, a CJK character counting three (it carries about as much as a short word)."""
    return len(text) if text.isascii() else len(text) + 2 * len(_WIDE.findall(text))


def length_score(prompt_chars: int, reply_chars: int) -> float:
    giant = 1.0 - 0.3 * _clamp((reply_chars - 12000) / 36000)
    return _ramp(reply_chars, 10, 200) * (0.8 + 0.2 * _ramp(prompt_chars, 2, 15)) * giant


def balance_score(prompt_chars: int, reply_chars: int) -> float:
    return _clamp(math.sqrt(reply_chars / (0.1 * max(prompt_chars, 300))))


def diversity_score(reply: str) -> float:
    """Word statistics on the prose (code repeats itself by nature); the repeated-lines test on everything."""
    words = _WORD.findall(_prose(reply).lower())
    score = 1.0
    if len(words) >= 50:
        segments = [words[i:i + 50] for i in range(0, len(words) - 49, 50)]  # a short tail is left out
        msttr = sum(len(set(segment)) for segment in segments) / (50 * len(segments))
        score = _clamp((msttr - 0.3) / 0.3)
    if len(words) >= 20:
        grams = list(zip(words, words[1:], words[2:], words[3:]))
        score = min(score, _clamp((0.6 - (1 - len(set(grams)) / len(grams))) / 0.4))
    lines = [line.strip() for line in reply.splitlines() if len(line.strip()) >= 20]
    if len(lines) >= 5:
        score = min(score, _clamp((0.7 - (1 - len(set(lines)) / len(lines))) / 0.5))
    return score


def _prose(reply: str) -> str:
    """``reply`` without its fenced code blocks."""
    return _FENCED_BLOCK.sub("", reply) if "```" in reply or "~~~" in reply else reply


def refusal_score(reply: str) -> float:
    lowered = reply.lower()
    if _REFUSAL.search(lowered[:200]):
        return 0.0 if len(reply) < 500 else 0.5
    if _has_phrase(_AI_BOILERPLATE, lowered):
        return 0.2
    if _has_phrase(_SIGN_OFF, lowered):
        return 0.9
    return 1.0


def _has_phrase(pattern: re.Pattern, lowered: str) -> bool:
    """Whether ``pattern`` matches at the start of a word of ``lowered``."""
    return any(match.start() == 0 or not lowered[match.start() - 1].isalnum() for match in pattern.finditer(lowered))


def truncation_score(reply: str) -> float:
    if len(_FENCE.findall(reply)) % 2:
        return 0.1
    text = reply.rstrip()
    if not text:
        return 0.0
    last_line = text.rsplit("\n", 1)[-1]
    last = text[-1]
    if last in _OPEN_ENDINGS:
        return 0.15
    if last in _CLOSED_ENDINGS or not last.isalnum():  # emoji and other symbols end a message too
        return 1.0
    last_word = last_line.rsplit(None, 1)[-1].lower()
    if last_word in _DANGLING_WORDS:
        return 0.15
    if _STRUCTURED_LINE.match(last_line) or last_line.startswith(("    ", "\t")):
        return 0.85
    return 0.6


def mojibake_score(text: str) -> float:
    return _clamp(1.0 - 0.35 * len(_MOJIBAKE.findall(text)))


def garbage_score(reply: str) -> float:
    if not reply:
        return 0.0
    prose = _prose(reply)
    visible = len(prose) - sum(prose.count(space) for space in " \n\t")
    letters_score = 1.0
    if visible >= 20:
        share = sum(map(len, _LETTERS.findall(prose))) / visible
        letters_score = _clamp((share - 0.15) / 0.25)
    blob_chars = sum(len(match.group(0)) for match in _BASE64.finditer(reply))
    blob_chars += sum(len(token) for token in _LONG_TOKEN.findall(prose) if "://" not in token and "www." not in token)
    blob_score = _clamp(1.0 - blob_chars / len(reply) / 0.4)
    return min(letters_score, mojibake_score(reply), blob_score)
