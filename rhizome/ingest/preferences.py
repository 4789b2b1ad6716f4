"""What a person chose between: replies they regenerated away, prompts they edited, thumbs up and down.

A chat export keeps the branches the person left: in ChatGPT's ``mapping`` tree
and in a Claude export with ``parent_message_uuid`` links, every node on the
active branch may have children that are not on it. Each such child is the start
of an abandoned branch; its first visible turn says what happened there:

- an assistant turn: the person asked for another answer to the same prompt
  (**regeneration**); the abandoned reply is an :class:`Alternative` of kind
  ``"regeneration"`` to the active reply of the latest user turn above it;
- a user turn: the person edited their message (**edit**); the abandoned prompt
  and the first reply below it make an :class:`Alternative` of kind ``"edit"``
  to the active user turn at that place and its reply.

Importers attach these to :attr:`Conversation.alternatives`, anchored by the
message id of the active user turn; the conversation's own messages stay the
active branch only, so no abandoned text ever reaches the supervised pairs. The
formatter (``rhizome.format.preferences``) turns them into preference pairs and
joins the ratings: ChatGPT's ``message_feedback.json`` (read here by
:func:`load_feedback`) and a rating field on Claude messages, both by message id.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from rhizome.ingest.records import IngestReport, Message, optional_str
from rhizome.log import get_logger

log = get_logger(__name__)

Kind = Literal["regeneration", "edit"]
FEEDBACK_FILE = "message_feedback.json"  # beside conversations.json in a ChatGPT export
# Rating values as ChatGPT ("thumbsUp"), Claude-style and hand-made files write them; compared case-insensitively.
RATING_VALUES = {"thumbsup": 1, "thumbs_up": 1, "up": 1, "good": 1, "positive": 1, "like": 1, "1": 1,
                 "thumbsdown": -1, "thumbs_down": -1, "down": -1, "bad": -1, "negative": -1, "dislike": -1,
                 "-1": -1}
RATING_FIELDS = ("rating", "feedback", "feedback_rating")  # where a Claude message (or a feedback record) keeps one


@dataclass
class Alternative:
    """A reply the person saw and left, beside the active reply to the user turn ``anchor_id``."""

    anchor_id: str  # id of the active user turn (the prompt of the active reply)
    kind: Kind
    reply: Message  # the abandoned reply
    prompt: str | None = None  # for edits: the abandoned prompt the reply answered
    prompt_id: str | None = None


def alternatives(branch_ids: list[str], children: dict[str, list[str]],
                 visible: Callable[[str], Message | None]) -> list[Alternative]:
    """The abandoned branches hanging off the active branch ``branch_ids`` (root first), as the module says.

    ``children`` maps a node id to its children's ids in creation order; ``visible``
    gives a node's visible turn (or None). A branch whose first visible turn
    comes before any user turn of the active branch answers nothing and is passed over.
    """
    on_branch = set(branch_ids)
    found: list[Alternative] = []
    last_user: Message | None = None
    for position, node_id in enumerate(branch_ids):
        turn = visible(node_id)
        if turn is not None and turn.role == "user":
            last_user = turn
        next_user = _next_user(branch_ids[position + 1:], visible)
        for child in children.get(node_id, ()):
            if child in on_branch:
                continue
            first = _first_visible(child, children, visible)
            if first is None:
                continue
            start, message = first
            if message.role == "assistant" and last_user is not None and last_user.id is not None:
                found.append(Alternative(last_user.id, "regeneration", _reply_from(start, children, visible)))
            elif message.role == "user" and next_user is not None and next_user.id is not None:
                reply = _first_reply_below(start, children, visible)
                if reply is not None:
                    found.append(Alternative(next_user.id, "edit", reply, prompt=message.text, prompt_id=message.id))
    return found


def _next_user(ids: Iterable[str], visible: Callable[[str], Message | None]) -> Message | None:
    for node_id in ids:
        turn = visible(node_id)
        if turn is not None and turn.role == "user":
            return turn
    return None


def _first_visible(node_id: str, children: dict[str, list[str]],
                   visible: Callable[[str], Message | None]) -> tuple[str, Message] | None:
    """The first node with a visible turn on the newest path down from ``node_id``."""
    seen: set[str] = set()
    while node_id is not None and node_id not in seen:
        seen.add(node_id)
        turn = visible(node_id)
        if turn is not None:
            return node_id, turn
        below = children.get(node_id) or []
        node_id = below[-1] if below else None
    return None


def _reply_from(node_id: str, children: dict[str, list[str]], visible: Callable[[str], Message | None]) -> Message:
    """The assistant turn starting at ``node_id``, with the assistant nodes after it merged in as the UI shows them."""
    first = visible(node_id)
    reply = Message(role="assistant", text=first.text, timestamp=first.timestamp, id=first.id, model=first.model)
    seen = {node_id}
    while True:
        below = children.get(node_id) or []
        if not below or below[-1] in seen:
            return reply
        node_id = below[-1]
        seen.add(node_id)
        turn = visible(node_id)
        if turn is None:
            continue
        if turn.role != "assistant":
            return reply
        reply.text = f"{reply.text}\n\n{turn.text}"


def _first_reply_below(node_id: str, children: dict[str, list[str]],
                       visible: Callable[[str], Message | None]) -> Message | None:
    below = children.get(node_id) or []
    if not below:
        return None
    first = _first_visible(below[-1], children, visible)
    if first is None or first[1].role != "assistant":
        return None
    return _reply_from(first[0], children, visible)


def rating_value(value: Any) -> int | None:
    """+1 for a thumbs up, -1 for a thumbs down, None for anything else (absent, neutral, unknown)."""
    if isinstance(value, bool):
        return 1 if value else -1
    if isinstance(value, (int, float)):
        return 1 if value > 0 else -1 if value < 0 else None
    if isinstance(value, str):
        return RATING_VALUES.get(value.strip().lower())
    if isinstance(value, dict):  # {"rating": "thumbs_up", "text": ...}
        return next((r for key in RATING_FIELDS if (r := rating_value(value.get(key))) is not None), None)
    return None


def message_rating(message: dict) -> int | None:
    """The rating a message record carries in one of ``RATING_FIELDS``, if any."""
    return next((r for key in RATING_FIELDS if key in message and (r := rating_value(message[key])) is not None),
                None)


def load_feedback(paths: Iterable[str | Path], report: IngestReport | None = None) -> dict[str, int]:
    """Message id -> +1 / -1 from every ``message_feedback.json`` that belongs to ``paths``.

    That is the file beside a named conversations file, inside a named folder, or a
    member of a named export zip (any folder level). Each record is
    ``{"message_id" (or "target_message_id", else "id"), "conversation_id", "rating": "thumbsUp" | "thumbsDown", ...}``;
    records without a message id or a thumbs up / down rating are passed over.
    A file that is not valid JSON is reported by name and the rest read.
    """
    ratings: dict[str, int] = {}
    for name, read in _feedback_files(paths):
        try:
            records = json.loads(read())
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            if report is not None:
                report.error(name, f"ratings not read ({exc}); the preference pairs are mined without them")
            continue
        for record in records if isinstance(records, list) else ():
            if not isinstance(record, dict):
                continue
            # A record with no message id field is taken to be keyed by its "id", as some exports write it. Ratings
            # join messages by id, so an "id" that names the feedback record itself joins nothing and counts nowhere.
            message_id = next((i for key in ("message_id", "target_message_id", "id")
                               if (i := optional_str(record.get(key))) is not None), None)
            rating = message_rating(record)
            if message_id is not None and rating is not None:
                ratings[message_id] = rating
    return ratings


def _feedback_files(paths: Iterable[str | Path]) -> Iterable[tuple[str, Callable[[], bytes]]]:
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.suffix.lower() == ".zip" and path.is_file():
            try:
                with zipfile.ZipFile(path) as archive:
                    members = [m for m in archive.namelist() if Path(m).name == FEEDBACK_FILE]
            except (OSError, zipfile.BadZipFile):
                continue  # the importer reports a broken archive
            for member in members:
                yield f"{path}:{member}", lambda path=path, member=member: _zip_member(path, member)
            continue
        candidate = (path if path.is_dir() else path.parent) / FEEDBACK_FILE
        if candidate.is_file() and candidate.resolve() not in seen:
            seen.add(candidate.resolve())
            yield str(candidate), candidate.read_bytes


def _zip_member(path: Path, member: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(member)
