"""Memory items: one per conversation turn or PDF chunk, split to the embedder's token limit.

An item is a plain dict (so ``memory_metadata.pkl`` stays loadable by the
restricted unpickler and by the original tool's readers):

    id                  stable id: "<conversation id>:<message index>[.<part>]" or "pdf:<file>#<chunk>[.<part>]"
    text                the text that was embedded
    text_hash           sha1 of ``text`` (the embedding cache key)
    source              "chatgpt", "claude", "custom", "hf_chat" or "pdf"
    role                "user" / "assistant" for turns, "document" for PDF chunks
    timestamp           Unix seconds or None
    part, parts         which piece of a text that was split to fit the token limit
    conversation_id, conversation_title, message_index, file     (turns)
    file, page_start, page_end, chunk_index, title, author       (PDF chunks)
"""

from __future__ import annotations

import bisect
import re
from typing import Iterable, Iterator

from rhizome.ingest.records import Conversation
from rhizome.memory.embedder import text_key

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n{2,}")


class TokenSplitter:
    """Splits a text into pieces of at most ``max_tokens`` tokens, at sentence ends where it can."""

    def __init__(self, tokenizer, max_tokens: int):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def split(self, text: str) -> list[str]:
        # Word-piece tokens cover at least one character, so short texts cannot overflow.
        if len(text) <= self.max_tokens or self._count(text) <= self.max_tokens:
            return [text]
        pieces: list[str] = []
        current: list[str] = []
        current_tokens = 0
        for sentence in (s for s in _SENTENCE_END.split(text) if s and s.strip()):
            tokens = self._count(sentence)
            if tokens > self.max_tokens:
                if current:
                    pieces.append(" ".join(current))
                    current, current_tokens = [], 0
                pieces.extend(self._split_by_tokens(sentence))
                continue
            if current_tokens + tokens > self.max_tokens and current:
                pieces.append(" ".join(current))
                current, current_tokens = [], 0
            current.append(sentence.strip())
            current_tokens += tokens
        if current:
            pieces.append(" ".join(current))
        return pieces

    def _split_by_tokens(self, text: str) -> list[str]:
        """Windows of at most ``max_tokens`` tokens, cut where a word starts so re-tokenising a piece
        gives back the same tokens (a cut inside a word would turn '##ium' into 'ium')."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        word_starts = [i for i in range(1, len(offsets)) if offsets[i][0] > offsets[i - 1][1]]
        pieces, start = [], 0
        while start < len(offsets):
            limit = start + self.max_tokens
            last_word = bisect.bisect_right(word_starts, limit) - 1
            if limit >= len(offsets):
                end = len(offsets)
            elif last_word >= 0 and word_starts[last_word] > start:
                end = word_starts[last_word]
            else:
                end = limit
            pieces.append(text[offsets[start][0]:offsets[end - 1][1]].strip())
            start = end
        return [p for p in pieces if p]


def with_parts(base: dict, pieces: list[str]) -> Iterator[dict]:
    for part, piece in enumerate(pieces):
        item = dict(base)
        item["id"] = base["id"] if len(pieces) == 1 else f"{base['id']}.{part}"
        item.update(text=piece, text_hash=text_key(piece), part=part, parts=len(pieces))
        yield item


def items_from_conversations(conversations: Iterable[Conversation], splitter: TokenSplitter) -> Iterator[dict]:
    for conv in conversations:
        for index, message in enumerate(conv.messages):
            if not message.text:  # nothing left after normalisation (only invisible characters); the index stays
                continue
            base = {
                "id": f"{conv.source}:{conv.id}:{index}",
                "source": conv.source,
                "role": message.role,
                "timestamp": message.timestamp if message.timestamp is not None else conv.create_time,
                "conversation_id": conv.id,
                "conversation_title": conv.title,
                "message_index": index,
                "file": conv.file,
            }
            yield from with_parts(base, splitter.split(message.text))


def items_from_pdf_chunks(chunks: Iterable[dict], splitter: TokenSplitter) -> Iterator[dict]:
    for chunk in chunks:
        base = {
            "id": f"pdf:{chunk['id']}",
            "source": "pdf",
            "role": "document",
            "timestamp": None,
            "file": chunk.get("source_file"),
            "page_start": chunk.get("page_start"),
            "page_end": chunk.get("page_end"),
            "chunk_index": chunk.get("chunk_index"),
            "title": chunk.get("title"),
            "author": chunk.get("author"),
        }
        yield from with_parts(base, splitter.split(chunk["text"]))
