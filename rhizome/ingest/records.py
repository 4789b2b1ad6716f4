"""The importers' common output: conversations of visible user/assistant turns."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Role = Literal["user", "assistant"]
# Times outside 1970..2999 are no chat's: they come from damaged or hand-made files and break date formatting.
EARLIEST_TIME = 0.0
LATEST_TIME = 32503680000.0  # 3000-01-01 UTC


@dataclass(frozen=True)
class InputLimits:
    """Caps on what one input may cost; what is over is reported, never silently cut."""

    max_message_chars: int = 2_000_000  # ~500 pages; longer messages are left out and reported
    max_member_mb: int = 4096  # largest uncompressed .json / .jsonl member of a zip archive read
    max_compression_ratio: int = 100  # exports compress 5-10x; a zip bomb compresses ~1000x
    ratio_applies_above_mb: int = 1  # small, very compressible members cost nothing and are read


@dataclass
class Message:
    role: Role
    text: str
    timestamp: float | None = None  # Unix seconds (UTC)
    id: str | None = None
    model: str | None = None  # model slug of an assistant turn, when the export records it


@dataclass
class Conversation:
    id: str
    source: str  # "chatgpt", "claude", "custom" or "hf_chat"
    file: str  # the file (or zip member) it came from
    messages: list[Message] = field(default_factory=list)
    title: str | None = None
    create_time: float | None = None
    update_time: float | None = None
    # Replies the person regenerated or edited away (rhizome.ingest.preferences), never part of ``messages``.
    alternatives: list = field(default_factory=list)
    ratings: dict = field(default_factory=dict)  # message id -> +1 / -1, from a rating field of the export


@dataclass
class IngestReport:
    """What an import read, kept and skipped, per file, for the end-of-run summary."""

    conversations: int = 0
    messages: int = 0
    skipped_conversations: int = 0
    skipped_messages: int = 0
    files: dict[str, str] = field(default_factory=dict)  # file -> detected format
    errors: list[tuple[str, str]] = field(default_factory=list)  # (file, what went wrong and what to do)
    # Messages left out on purpose, by reason ("hidden", "tool", "reasoning", "off_branch", ...): not errors.
    filtered: Counter = field(default_factory=Counter)
    # Values read differently from what the file says, by kind ("number_out_of_range", "lone_surrogate",
    # "timestamp_out_of_range", ...): the record itself was kept.
    repaired: Counter = field(default_factory=Counter)

    def error(self, file: str, reason: str) -> None:
        self.errors.append((file, reason))

    def summary(self) -> str:
        lines = [f"imported {self.conversations} conversations ({self.messages} turns) from {len(self.files)} files"]
        if self.skipped_conversations or self.skipped_messages:
            lines.append(f"skipped as malformed: {self.skipped_conversations} conversations, "
                         f"{self.skipped_messages} messages")
        if self.filtered:
            lines.append("left out: " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.filtered.items())))
        if self.repaired:
            lines.append("repaired: " + ", ".join(f"{kind} {n}" for kind, n in sorted(self.repaired.items())))
        lines.extend(f"! {file}: {reason}" for file, reason in self.errors)
        return "\n".join(lines)


class MalformedRecord(ValueError):
    """A conversation or message whose structure an importer cannot read; counted and skipped, never fatal."""


def optional_str(value: Any) -> str | None:
    """``value`` when it is a non-empty string, else None (exports write "", null or numbers for absent names)."""
    return value if isinstance(value, str) and value else None


def clean_text(text: str) -> str:
    """Surrounding whitespace goes; everything inside (non-ASCII, markdown, code) stays as written."""
    return text.strip()


def join_texts(pieces: list[str]) -> str:
    """The text pieces of one message (parts, blocks), each cleaned, blank ones dropped, as paragraphs."""
    return "\n\n".join(cleaned for piece in pieces if (cleaned := clean_text(piece)))


def unix_seconds(value: Any, report: IngestReport | None = None) -> float | None:
    """Unix seconds from epoch seconds or milliseconds (int, float, numeric string) or an ISO-8601 string.

    Values that cannot be a time give None: a bad timestamp never costs the message.
    A time outside 1970..2999 gives None too, counted in ``report.repaired``.
    Naive ISO strings are taken as UTC, as both exports write UTC.
    """
    seconds = _seconds(value)
    if seconds is not None and not EARLIEST_TIME <= seconds < LATEST_TIME:
        if report is not None:
            report.repaired["timestamp_out_of_range"] += 1
        return None
    return seconds


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            return _iso_seconds(text)
    if not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int of hundreds of digits
        return math.inf
    # Epoch milliseconds (JavaScript's Date.now()) are 1000x larger than any plausible epoch seconds.
    if abs(seconds) > 1e11:
        seconds /= 1000.0
    return seconds if not math.isnan(seconds) else None


def _iso_seconds(text: str) -> float | None:
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError):  # year 1 or 9999 moved past the calendar by its UTC offset
        return -math.inf
