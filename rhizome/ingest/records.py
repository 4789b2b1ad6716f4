"""The importers' common output: conversations of visible user/assistant turns."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Role = Literal["user", "assistant"]


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

    def error(self, file: str, reason: str) -> None:
        self.errors.append((file, reason))

    def summary(self) -> str:
        lines = [f"imported {self.conversations} conversations ({self.messages} turns) from {len(self.files)} files"]
        if self.skipped_conversations or self.skipped_messages:
            lines.append(f"skipped as malformed: {self.skipped_conversations} conversations, "
                         f"{self.skipped_messages} messages")
        if self.filtered:
            lines.append("left out: " + ", ".join(f"{reason} {n}" for reason, n in sorted(self.filtered.items())))
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


def unix_seconds(value: Any) -> float | None:
    """Unix seconds from epoch seconds or milliseconds (int, float, numeric string) or an ISO-8601 string.

    Values that cannot be a time give None: a bad timestamp never costs the message.
    Naive ISO strings are taken as UTC, as both exports write UTC.
    """
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
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    seconds = float(value)
    # Epoch milliseconds (JavaScript's Date.now()) are 1000x larger than any plausible epoch seconds.
    if abs(seconds) > 1e11:
        seconds /= 1000.0
    return seconds


def _iso_seconds(text: str) -> float | None:
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
