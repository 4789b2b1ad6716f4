"""Hand-made conversation files: the original tool's custom JSON, and the Hugging Face chat format.

Custom JSON (from the original README)::

    {"conversations": [{"id": "conv_1", "messages": [{"author": "user", "content": "...", "timestamp": 1234567890}]}]}

Hugging Face chat (one conversation per JSONL line, as TRL and most data sets write it)::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}, ...]}

Both come from many hands, so both are read leniently: ``author`` or
``role``, common names for the two sides, string or list-of-parts content,
timestamps as epoch seconds, milliseconds or ISO-8601. System prompts and
tool turns are not conversation and are left out.
"""

from __future__ import annotations

from typing import Any

from rhizome.ingest.records import (
    Conversation, IngestReport, MalformedRecord, Message, clean_text, join_texts, optional_str, unix_seconds,
)

USER_NAMES = frozenset({"user", "human", "me", "you", "person"})
ASSISTANT_NAMES = frozenset({"assistant", "ai", "bot", "chatbot", "model", "gpt", "chatgpt", "claude", "llm"})
SYSTEM_NAMES = frozenset({"system", "developer"})
TOOL_NAMES = frozenset({"tool", "function", "ipython"})
TIMESTAMP_KEYS = ("timestamp", "create_time", "created_at", "time")


def conversation_from_record(record: dict, file: str, fallback_id: str, report: IngestReport,
                             source: str = "custom") -> Conversation:
    raw_messages = record.get("messages")
    if not isinstance(raw_messages, list):
        raise MalformedRecord(f"'messages' is {type(raw_messages).__name__}, not a list")
    messages = [turn for raw in raw_messages if (turn := _visible_turn(raw, report)) is not None]
    return Conversation(
        id=_first_string(record, ("id", "conversation_id", "uuid")) or fallback_id,
        source=source,
        file=file,
        messages=messages,
        title=_first_string(record, ("title", "name")),
        create_time=_first_time(record, ("create_time", "created_at", "timestamp"), report),
        update_time=_first_time(record, ("update_time", "updated_at"), report),
    )


def hf_conversation_from_record(record: dict, file: str, fallback_id: str, report: IngestReport) -> Conversation:
    return conversation_from_record(record, file, fallback_id, report, source="hf_chat")


def _visible_turn(message: Any, report: IngestReport) -> Message | None:
    if not isinstance(message, dict):
        report.skipped_messages += 1
        return None
    name = _speaker(message)
    if name in SYSTEM_NAMES:
        report.filtered["system"] += 1
        return None
    if name in TOOL_NAMES:
        report.filtered["tool"] += 1
        return None
    role = "user" if name in USER_NAMES else "assistant" if name in ASSISTANT_NAMES else None
    if role is None:
        report.skipped_messages += 1
        return None
    content = message.get("content")
    if content is None and message.get("tool_calls"):
        report.filtered["tool_call"] += 1
        return None
    try:
        text = _content_text(content)
    except MalformedRecord:
        report.skipped_messages += 1
        return None
    if not text:
        report.filtered["empty"] += 1
        return None
    return Message(
        role=role,
        text=text,
        timestamp=_first_time(message, TIMESTAMP_KEYS, report),
        id=_first_string(message, ("id", "uuid")),
        model=optional_str(message.get("model")) if role == "assistant" else None,
    )


def _speaker(message: dict) -> str | None:
    """The lower-cased speaker name from ``role`` or ``author`` (a string, or ChatGPT-style ``{"role": ...}``)."""
    value = message.get("role", message.get("author"))
    if isinstance(value, dict):
        value = value.get("role", value.get("name"))
    return value.strip().lower() if isinstance(value, str) else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return clean_text(content)
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return clean_text(content["text"])
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                pieces.append(part["text"])
        return join_texts(pieces)
    raise MalformedRecord(f"content is {type(content).__name__}")


def _first_string(record: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if optional_str(value):
            return value
    return None


def _first_time(record: dict, keys: tuple[str, ...], report: IngestReport) -> float | None:
    for key in keys:
        if (seconds := unix_seconds(record.get(key), report)) is not None:
            return seconds
    return None
