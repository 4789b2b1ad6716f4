"""Claude export (``conversations.json`` from claude.ai; the original tool calls it ``conversations2.json``).

A conversation is ``{uuid, name, created_at, updated_at, chat_messages}``;
each message has ``sender`` ("human" / "assistant"), a flattened ``text`` and a
list of ``content`` blocks. Only ``text`` blocks are what was said: ``thinking``,
``tool_use``, ``tool_result`` (and whatever block types come next) are left
out. The flattened ``text`` is a poor substitute: it carries a placeholder for
every tool call and can carry thinking, so it is read only when a message has
no content blocks (older exports).

Newer exports keep edits and retries: every message names its
``parent_message_uuid`` and ``chat_messages`` holds all branches in creation
order. The conversation is then the chain of parents ending at
``current_leaf_message_uuid`` when the export names it, else at the last message.
"""

from __future__ import annotations

import re
from typing import Any

from rhizome.ingest.preferences import alternatives, message_rating
from rhizome.ingest.records import (
    Conversation, IngestReport, MalformedRecord, Message, clean_text, join_texts, optional_str, unix_seconds,
)

ROOT_PARENT_UUID = "00000000-0000-4000-8000-000000000000"  # the parent of a conversation's first message
SENDER_ROLES = {"human": "user", "user": "user", "assistant": "assistant"}
# What the flattened `text` shows where a tool call or artifact was.
_UNSUPPORTED_BLOCK = re.compile(r"```[^\n]*\n\s*This block is not supported on your current device yet\.?\s*\n```")


def conversation_from_record(record: dict, file: str, fallback_id: str, report: IngestReport) -> Conversation:
    chat_messages = record.get("chat_messages")
    if not isinstance(chat_messages, list):
        raise MalformedRecord(f"'chat_messages' is {type(chat_messages).__name__}, not a list")
    branch = active_branch(chat_messages, record.get("current_leaf_message_uuid"), report)
    model = record.get("model") if isinstance(record.get("model"), str) else None
    messages = [turn for message in branch if (turn := _visible_turn(message, model, report)) is not None]
    ratings = {m["uuid"]: rating for m in chat_messages if isinstance(m, dict) and isinstance(m.get("uuid"), str)
               and (rating := message_rating(m)) is not None}
    return Conversation(
        id=optional_str(record.get("uuid")) or fallback_id,
        source="claude",
        file=file,
        messages=messages,
        title=optional_str(record.get("name")),
        create_time=unix_seconds(record.get("created_at"), report),
        update_time=unix_seconds(record.get("updated_at"), report),
        alternatives=_abandoned_branches(chat_messages, branch, model) if len(branch) < len(chat_messages) else [],
        ratings=ratings,
    )


def _abandoned_branches(chat_messages: list, branch: list, model: str | None) -> list:
    """The retried and edited-away replies beside the active branch (rhizome.ingest.preferences)."""
    by_uuid = {m["uuid"]: m for m in chat_messages if isinstance(m, dict) and isinstance(m.get("uuid"), str)}
    if not by_uuid or not any("parent_message_uuid" in m for m in by_uuid.values()):
        return []
    children: dict[str, list[str]] = {}
    for uuid, message in by_uuid.items():
        parent = message.get("parent_message_uuid")
        children.setdefault(parent if isinstance(parent, str) and parent in by_uuid else ROOT_PARENT_UUID,
                            []).append(uuid)
    quiet = IngestReport()  # off-branch turns are already counted as off_branch
    turns: dict[str, Message | None] = {}

    def visible(uuid: str) -> Message | None:
        if uuid not in turns:
            turns[uuid] = _visible_turn(by_uuid[uuid], model, quiet) if uuid in by_uuid else None
        return turns[uuid]

    return alternatives([ROOT_PARENT_UUID] + [m["uuid"] for m in branch], children, visible)


def active_branch(chat_messages: list, leaf_uuid: Any, report: IngestReport) -> list:
    """The messages of the active branch, oldest first; all of them when the export has no parent links."""
    if not any(isinstance(m, dict) and "parent_message_uuid" in m for m in chat_messages):
        return chat_messages
    by_uuid = {m["uuid"]: m for m in chat_messages if isinstance(m, dict) and isinstance(m.get("uuid"), str)}
    report.skipped_messages += len(chat_messages) - len(by_uuid)
    leaf = by_uuid.get(leaf_uuid) if isinstance(leaf_uuid, str) else None
    if leaf is None:
        # by_uuid holds every message with a string uuid; a list or dict there is unhashable.
        leaf = next((m for m in reversed(chat_messages) if isinstance(m, dict) and isinstance(m.get("uuid"), str)),
                    None)
    chain: list[dict] = []
    seen: set[str] = set()
    while leaf is not None and leaf["uuid"] not in seen:
        seen.add(leaf["uuid"])
        chain.append(leaf)
        parent = leaf.get("parent_message_uuid")
        leaf = by_uuid.get(parent) if isinstance(parent, str) and parent != ROOT_PARENT_UUID else None
    report.filtered["off_branch"] += len(by_uuid) - len(chain)
    chain.reverse()
    return chain


def _visible_turn(message: Any, model: str | None, report: IngestReport) -> Message | None:
    if not isinstance(message, dict):
        report.skipped_messages += 1
        return None
    sender = message.get("sender")
    if not isinstance(sender, str):
        report.skipped_messages += 1
        return None
    role = SENDER_ROLES.get(sender.lower())
    if role is None:
        report.filtered["system" if sender.lower() == "system" else "other_role"] += 1
        return None
    try:
        text, reason = _message_text(message)
    except MalformedRecord:
        report.skipped_messages += 1
        return None
    if not text:
        report.filtered[reason] += 1
        return None
    return Message(
        role=role,
        text=text,
        timestamp=unix_seconds(message.get("created_at"), report),
        id=optional_str(message.get("uuid")),
        model=model if role == "assistant" else None,
    )


def _message_text(message: dict) -> tuple[str, str]:
    """The visible text, and why it is empty when it is ("non_text": only thinking / tool blocks)."""
    content = message.get("content")
    if isinstance(content, list) and content:
        texts, other_blocks = [], False
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                if isinstance(block.get("text"), str):
                    texts.append(block["text"])
            else:
                other_blocks = True
        text = join_texts(texts)
        return text, "non_text" if other_blocks and not text else "empty"
    if content is not None and not isinstance(content, list):
        raise MalformedRecord(f"'content' is {type(content).__name__}, not a list of blocks")
    flat = message.get("text")
    if not isinstance(flat, str):
        raise MalformedRecord("message has neither content blocks nor text")
    return clean_text(_UNSUPPORTED_BLOCK.sub("", flat)), "empty"

