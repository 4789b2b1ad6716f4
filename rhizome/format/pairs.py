"""Step "build pairs": conversations and PDF chunks -> :class:`~rhizome.format.records.Pair` objects.

From a conversation, every user turn answered by an assistant turn is one pair:
``[system?, ...context..., user, assistant]``, the context being the
``context_turns`` messages before the user turn. Consecutive turns of one role
(a user who sent two messages in a row, a reply split in two) are merged into
one, joined by a blank line, before anything else: chat templates expect the
roles to alternate.

From a PDF chunk, one instruction pair: a question about the passage, naming the
document and pages, answered by the passage itself. The question comes from one
of a few templates, picked by a hash of the chunk id, so a rerun builds the same
pairs.

Pair ids are ``"{source}:{conversation_id}:{index}"``: the index is the position
of the pair's (first) user turn in the conversation as cleaned, or the chunk's
index in its file. They are stable for the same input and cleaning settings.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from rhizome.format.records import Pair
from rhizome.ingest.records import Conversation, Message

DEFAULT_CONTEXT_TURNS = 2
TURN_SEPARATOR = "\n\n"  # between consecutive turns of one role merged into one
MIN_CHUNK_CHARS = 200  # shorter chunks (a page footer, a lone heading) make no useful question


@dataclass
class PairStats:
    """What pair building made and passed over; one object accumulates over a whole run."""

    conversations: int = 0
    conversation_pairs: int = 0
    unanswered: int = 0  # user turns with no assistant turn after them
    merged_turns: int = 0  # turns merged into the turn before them (same role)
    chunks: int = 0
    pdf_pairs: int = 0
    short_chunks: int = 0  # chunks under MIN_CHUNK_CHARS, no pair made
    templates: Counter = field(default_factory=Counter)  # PDF question template -> pairs

    def as_dict(self) -> dict[str, Any]:
        """Plain counts for ``dataset_metadata.json``."""
        return {**vars(self), "templates": dict(sorted(self.templates.items()))}


# Conversations.
@dataclass
class _Turn:
    """One or more consecutive messages of one role, merged."""

    role: str
    index: int  # position of its first message in the conversation
    messages: list[Message]

    @property
    def text(self) -> str:
        return TURN_SEPARATOR.join(m.text for m in self.messages)


def merge_turns(messages: list[Message]) -> list[_Turn]:
    """``messages`` with each run of consecutive same-role messages merged into one turn."""
    turns: list[_Turn] = []
    for index, message in enumerate(messages):
        if turns and turns[-1].role == message.role:
            turns[-1].messages.append(message)
        else:
            turns.append(_Turn(message.role, index, [message]))
    return turns


def pairs_from_conversation(conversation: Conversation, context_turns: int = DEFAULT_CONTEXT_TURNS,
                            system_prompt: str | None = None, stats: PairStats | None = None) -> list[Pair]:
    """One pair per user turn that an assistant turn answers, in conversation order.

    ``messages`` is ``[system?] + context + [user, assistant]``: ``system_prompt``
    when given; then up to ``context_turns`` turns (after merging) before the user
    turn, less a leading assistant turn, so the context starts with a user turn as
    chat templates that check alternation (Gemma's, Mistral's) require; so an odd
    ``context_turns`` acts like the even number below it. ``refs`` records where the
    pair came from: file, title, conversation and message times, message ids and
    the replying model.
    """
    if context_turns < 0:
        raise ValueError(f"context_turns must be 0 or more, got {context_turns}")
    stats = stats if stats is not None else PairStats()
    stats.conversations += 1
    turns = merge_turns(conversation.messages)
    stats.merged_turns += len(conversation.messages) - len(turns)
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    pairs = []
    for position, turn in enumerate(turns):
        if turn.role != "user":
            continue
        reply = turns[position + 1] if position + 1 < len(turns) else None
        if reply is None:
            stats.unanswered += 1
            continue
        context = turns[max(0, position - context_turns):position]
        if context and context[0].role != "user":
            context = context[1:]
        messages = head + [{"role": t.role, "content": t.text} for t in (*context, turn, reply)]
        pairs.append(Pair(
            id=f"{conversation.source}:{conversation.id}:{turn.index}",
            messages=messages,
            source=conversation.source,
            conversation_id=conversation.id,
            refs=_conversation_refs(conversation, turn, reply),
        ))
    stats.conversation_pairs += len(pairs)
    return pairs


def _conversation_refs(conversation: Conversation, turn: _Turn, reply: _Turn) -> dict[str, Any]:
    return {
        "file": conversation.file,
        "title": conversation.title,
        "conversation_create_time": conversation.create_time,
        "user_time": _first(m.timestamp for m in turn.messages),
        "assistant_time": _first(m.timestamp for m in reply.messages),
        "user_message_ids": [m.id for m in turn.messages if m.id is not None],
        "assistant_message_ids": [m.id for m in reply.messages if m.id is not None],
        "model": _first(m.model for m in reversed(reply.messages)),
        "message_index": turn.index,
    }


def _first(values: Iterable[Any]) -> Any:
    return next((value for value in values if value is not None), None)


# PDF chunks.
TEMPLATES = {
    "passage": "From “{title}” ({pages}): what does the passage beginning “{lead}…” explain?",
    "topic": "What does “{title}” ({pages}) say about “{topic}”?",
    "section": "What does the section “{heading}” of “{title}” ({pages}) cover?",
}
LEAD_WORDS = 8
# A heading: a paragraph of 3-60 characters with a letter and without sentence punctuation, followed by text.
_HEADING = re.compile(r"(?:\A|\n\n)(?P<heading>(?=[^\n]*[^\W\d_])[^\n.!?:;,]{3,60})\n\n(?=\S)")
_WORD = re.compile(r"[^\W\d_](?:[\w'-]*[^\W\d_])?|[^\w\s]")  # words of letters, or one punctuation mark


def pair_from_chunk(chunk: dict[str, Any], system_prompt: str | None = None,
                    stats: PairStats | None = None) -> Pair | None:
    """An instruction pair about a PDF chunk, answered by its text; None for chunks too short to ask about.

    The question names the document (its title, else the file name) and pages.
    Templates (see ``TEMPLATES``): ``section`` asks what a section covers, when
    the chunk holds a heading (a short paragraph without sentence punctuation,
    other than the title); ``topic`` asks what the document says about the
    chunk's :func:`key_phrase`, when it has one; ``passage`` asks what the
    passage beginning with its first words explains, always possible. Among those that apply, the template is chosen by a hash of the
    chunk id: deterministic, and spread evenly over a document.
    """
    stats = stats if stats is not None else PairStats()
    stats.chunks += 1
    text = chunk["text"]
    if len(text) < MIN_CHUNK_CHARS:
        stats.short_chunks += 1
        return None
    source_file = chunk.get("source_file") or "document"
    title = chunk.get("title") or PurePosixPath(source_file).stem.replace("_", " ")
    # A heading that repeats the title (the first page's) names no section.
    heading = next((h for h in _HEADING.finditer(text)
                    if h.group("heading").strip().casefold() != title.strip().casefold()), None)
    first = _HEADING.match(text)
    body = text[first.end():] if first else text
    fields = {"title": title, "pages": _pages(chunk.get("page_start"), chunk.get("page_end")), "lead": _lead(body)}
    topic = key_phrase(text)
    choices = ["passage"]
    if heading:
        choices.append("section")
        fields["heading"] = heading.group("heading").strip()
    if topic:
        choices.append("topic")
        fields["topic"] = topic
    template = choices[int(hashlib.sha256(str(chunk.get("id")).encode()).hexdigest()[:8], 16) % len(choices)]
    stats.templates[template] += 1
    stats.pdf_pairs += 1
    question = TEMPLATES[template].format(**fields).replace(" ()", "")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}, {"role": "assistant", "content": text}]
    index = chunk.get("chunk_index", 0)
    return Pair(
        id=f"pdf:{source_file}:{index}",
        messages=messages,
        source="pdf",
        conversation_id=source_file,
        refs={"file": source_file, "title": chunk.get("title"), "author": chunk.get("author"),
              "page_start": chunk.get("page_start"), "page_end": chunk.get("page_end"), "chunk_index": index,
              "chunk_id": chunk.get("id"), "template": template},
    )


def _lead(text: str) -> str:
    """The first ``LEAD_WORDS`` words of ``text``, less trailing stop words ("... the fat body of" -> "... body")."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # here: importing scikit-learn takes ~1 s

    words = text.split()[:LEAD_WORDS]
    while len(words) > 3 and words[-1].lower().strip(".,;:!?") in ENGLISH_STOP_WORDS:
        words.pop()
    return " ".join(words).rstrip(".,;:")


def _pages(start: int | None, end: int | None) -> str:
    if start is None:
        return ""
    if end is None or end == start:
        return f"page {start}"
    return f"pages {start}–{end}"


def key_phrase(text: str, max_words: int = 3) -> str | None:
    """The run of 1-``max_words`` content words in ``text`` (lower-cased) with the highest count x words, or None.

    Runs are split at stop words (scikit-learn's English list) and punctuation;
    a phrase must occur at least twice ("varroa mites" three times beats "mites"
    four times); ties go to the earlier one. Cheap, deterministic, good enough
    to name what an English passage is about.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts: Counter = Counter()
    first_seen: dict[str, int] = {}
    run: list[str] = []
    for token in [*_WORD.findall(text), "."]:
        word = token.lower()
        if len(word) > 2 and word not in ENGLISH_STOP_WORDS and word[0].isalpha():
            run.append(word)
            continue
        for size in range(1, max_words + 1):
            for start in range(len(run) - size + 1):
                phrase = " ".join(run[start:start + size])
                counts[phrase] += 1
                first_seen.setdefault(phrase, len(first_seen))
        run = []
    repeated = [(count * (phrase.count(" ") + 1), -first_seen[phrase], phrase) for phrase, count in counts.items()
                if count >= 2 and (" " in phrase or len(phrase) >= 4)]
    return max(repeated)[2] if repeated else None
