"""ChatGPT export (``conversations.json``): the turns a person saw on the active branch of each conversation.

Each conversation's ``mapping`` is a tree of nodes ``{id: {message, parent,
children}}``. Regenerating an answer or editing a question adds a sibling
branch; ``current_node`` names the leaf of the branch the user last looked at,
so the conversation is the path from that leaf up the ``parent`` links. Along
it, much is not conversation: the system prompt, custom instructions, tool
calls and their output, browsing results, and reasoning. Only user and
assistant ``text`` / ``multimodal_text`` content addressed to everyone is kept.
"""

from __future__ import annotations

import math
from typing import Any

from rhizome.ingest.preferences import alternatives
from rhizome.ingest.records import (
    Conversation, IngestReport, MalformedRecord, Message, join_texts, optional_str, unix_seconds,
)

VISIBLE_CONTENT_TYPES = frozenset({"text", "multimodal_text"})
REASONING_CONTENT_TYPES = frozenset({"thoughts", "reasoning_recap"})
# Context the app sends along unseen: the user's custom instructions and the model's saved memories.
CONTEXT_CONTENT_TYPES = {"user_editable_context": "custom_instructions", "model_editable_context": "memory_context"}
# Dict parts of multimodal_text point at images, audio and files; a voice-mode
# transcription is the only one holding words that were said in the conversation.
SPOKEN_PART_TYPE = "audio_transcription"


def conversation_from_record(record: dict, file: str, fallback_id: str, report: IngestReport) -> Conversation:
    mapping = record.get("mapping")
    if not isinstance(mapping, dict):
        raise MalformedRecord(f"'mapping' is {type(mapping).__name__}, not an object")
    branch = active_branch(mapping, record.get("current_node"))
    on_branch = {id(node) for node in branch}
    report.filtered["off_branch"] += sum(
        1 for node in mapping.values()
        if isinstance(node, dict) and node.get("message") is not None and id(node) not in on_branch
    )
    messages: list[Message] = []
    for node in branch:
        if node.get("message") is None:
            continue  # the tree's root (and some placeholder nodes) carry no message
        turn = _visible_turn(node["message"], report)
        if turn is None:
            continue
        if messages and turn.role == "assistant" and messages[-1].role == "assistant":
            # One visible answer can span several nodes (text, a tool call, more text): the UI shows one turn.
            previous = messages[-1]
            previous.text = f"{previous.text}\n\n{turn.text}"
            previous.model = previous.model or turn.model
        else:
            messages.append(turn)
    return Conversation(
        id=optional_str(record.get("id")) or optional_str(record.get("conversation_id")) or fallback_id,
        source="chatgpt",
        file=file,
        messages=messages,
        title=optional_str(record.get("title")),
        create_time=unix_seconds(record.get("create_time"), report),
        update_time=unix_seconds(record.get("update_time"), report),
        alternatives=_abandoned_branches(mapping, branch) if len(on_branch) < len(mapping) else [],
    )


def _abandoned_branches(mapping: dict, branch: list[dict]) -> list:
    """The regenerated and edited-away replies beside the active branch (rhizome.ingest.preferences)."""
    key_of = {id(node): key for key, node in mapping.items()}
    children: dict[str, list[str]] = {}
    for node_id, parent in _parent_links(mapping).items():
        if parent is not None:
            children.setdefault(parent, []).append(node_id)
    quiet = IngestReport()  # off-branch turns are already counted as off_branch, not again by reason
    turns: dict[str, Message | None] = {}

    def visible(node_id: str) -> Message | None:
        if node_id not in turns:
            node = mapping.get(node_id)
            message = node.get("message") if isinstance(node, dict) else None
            turns[node_id] = _visible_turn(message, quiet) if message is not None else None
        return turns[node_id]

    return alternatives([key_of[id(node)] for node in branch], children, visible)


def active_branch(mapping: dict, current_node: Any) -> list[dict]:
    """The nodes from the root to the active leaf: ``current_node``, or when it is missing the newest leaf."""
    parents = _parent_links(mapping)
    leaf = current_node if isinstance(current_node, str) and isinstance(mapping.get(current_node), dict) else None
    if leaf is None:
        leaf = _newest_leaf(mapping, parents)
    chain: list[dict] = []
    seen: set[str] = set()
    node_id = leaf
    while isinstance(node_id, str) and node_id not in seen and isinstance(mapping.get(node_id), dict):
        seen.add(node_id)
        chain.append(mapping[node_id])
        node_id = parents.get(node_id)
    chain.reverse()
    return chain


def _parent_links(mapping: dict) -> dict[str, str | None]:
    """Node id -> parent id, from ``parent`` where a node has it, else from the ``children`` lists."""
    from_children: dict[str, str] = {}
    for node_id, node in mapping.items():
        children = node.get("children") if isinstance(node, dict) else None
        for child in children if isinstance(children, list) else ():
            if isinstance(child, str):
                from_children.setdefault(child, node_id)
    links: dict[str, str | None] = {}
    for node_id, node in mapping.items():
        if isinstance(node, dict) and "parent" in node:
            parent = node["parent"]
            links[node_id] = parent if isinstance(parent, str) else None
        else:
            links[node_id] = from_children.get(node_id)
    return links


def _newest_leaf(mapping: dict, parents: dict[str, str | None]) -> str | None:
    """The leaf whose message is newest; among equals (or without times) the deepest, then the last listed."""
    has_child = {parent for parent in parents.values() if parent is not None}
    depths = _depths(parents)
    best_key, best_id = None, None
    for order, (node_id, node) in enumerate(mapping.items()):
        if node_id in has_child or not isinstance(node, dict) or not isinstance(node.get("message"), dict):
            continue
        created = unix_seconds(node["message"].get("create_time"))
        key = (created if created is not None else -math.inf, depths[node_id], order)
        if best_key is None or key > best_key:
            best_key, best_id = key, node_id
    return best_id


def _depths(parents: dict[str, str | None]) -> dict[str, int]:
    """Every node's number of ancestors, each parent link followed once (a tree of many long branches would
    cost the square of its size if each leaf walked to the root); a node in a parent cycle counts as a root."""
    depths: dict[str, int] = {}
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        node = start
        while node is not None and node not in depths and node not in on_path:
            on_path.add(node)
            path.append(node)
            node = parents.get(node)
        depth = depths.get(node, -1) if node is not None else -1
        for visited in reversed(path):
            depth += 1
            depths[visited] = depth
    return depths


def _visible_turn(message: Any, report: IngestReport) -> Message | None:
    if not isinstance(message, dict):
        report.skipped_messages += 1
        return None
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    if not isinstance(role, str):
        report.skipped_messages += 1
        return None
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    content = message.get("content")
    content_type = content.get("content_type") if isinstance(content, dict) else None
    if content_type is not None and not isinstance(content_type, str):
        report.skipped_messages += 1
        return None
    reason = _left_out_because(role, message, metadata, content_type)
    if reason is not None:
        report.filtered[reason] += 1
        return None
    try:
        text = _content_text(content)
    except MalformedRecord:
        report.skipped_messages += 1
        return None
    if not text:
        report.filtered["empty"] += 1
        return None
    model = metadata.get("model_slug") if role == "assistant" else None
    return Message(
        role=role,
        text=text,
        timestamp=unix_seconds(message.get("create_time"), report),
        id=optional_str(message.get("id")),
        model=model if isinstance(model, str) else None,
    )


def _left_out_because(role: str, message: dict, metadata: dict, content_type: str | None) -> str | None:
    """Why a message is not part of the visible conversation, or None when it is."""
    if content_type in CONTEXT_CONTENT_TYPES:
        return CONTEXT_CONTENT_TYPES[content_type]
    if metadata.get("is_user_system_message"):
        return "custom_instructions"
    if role == "system":
        return "system"
    if role == "tool":
        return "tool"
    if role not in ("user", "assistant"):
        return "other_role"
    if metadata.get("is_visually_hidden_from_conversation"):
        return "hidden"
    if content_type in REASONING_CONTENT_TYPES or message.get("channel") == "analysis":
        return "reasoning"
    if role == "assistant" and message.get("recipient", "all") not in ("all", None):
        return "tool_call"
    if content_type is not None and content_type not in VISIBLE_CONTENT_TYPES:
        return "non_text"  # code, execution_output, tether_browsing_display, tether_quote, system_error, ...
    return None


def _content_text(content: Any) -> str:
    if not isinstance(content, dict):
        raise MalformedRecord("message content is not an object")
    parts = content.get("parts")
    if not isinstance(parts, list):
        raise MalformedRecord("message content has no list of parts")
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, dict) and part.get("content_type") == SPOKEN_PART_TYPE:
            part = part.get("text")
        if isinstance(part, str):
            pieces.append(part)
    return join_texts(pieces)

