"""The chat's memory: which memories a message gets, how they enter the prompt, and remembering new turns.

For each user message :meth:`ChatMemory.retrieve`
  1. takes the nearest ``candidates`` items scoring at least ``min_score`` (cosine similarity),
  2. re-ranks them by maximal marginal relevance (MMR): each pick maximises
     ``lambda * relevance - (1 - lambda) * similarity to the memories already picked``, and drops near-copies
     (similarity >= ``NEAR_DUPLICATE`` to a pick) outright, so five copies of one answer cannot fill the budget,
  3. keeps the first ``k`` picks, in that order, that fit the token budget (counted with the chat model's
     tokenizer); a pick too long for what is left is passed over for the next one.
:meth:`ChatMemory.remember` appends a finished turn (user and assistant items, source ``"chat"``) to the memory
files, embedding only the new texts, so a later session recalls it; the turn is redacted first, as the memory was
(secrets unless it was built with ``--no-redact``, personal data when built with ``--redact-pii``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rhizome.log import get_logger
from rhizome.memory.items import TokenSplitter, with_parts
from rhizome.memory.store import CONFIG_FILE, METADATA_FILE, VECTORS_FILE, Hit, Memory
from rhizome.redact import Redaction

log = get_logger(__name__)

NEAR_DUPLICATE = 0.95
CHAT_SOURCE = "chat"
MEMORY_HEADER = ("Memories (the user's own past conversations and documents, most relevant first; "
                 "each starts with where it comes from):")


def estimate_tokens(text: str) -> int:
    """~4 characters a token: the budget when no tokenizer is given (e.g. searching without the chat model)."""
    return max(1, (len(text) + 3) // 4)


def memory_line(hit: Hit) -> str:
    """How one memory appears in the prompt, source first so the model can say where it got something."""
    return f"- [{hit.source_label()}] {' '.join(hit.text.split())}"


def mmr(query_scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float,
        near_duplicate: float = NEAR_DUPLICATE) -> list[int]:
    """Positions of up to ``k`` candidates in MMR order (``diversity`` is lambda: 1 = relevance only)."""
    chosen: list[int] = []
    redundancy = None  # per candidate: highest similarity to any memory chosen so far
    alive = np.ones(len(query_scores), dtype=bool)
    while alive.any() and len(chosen) < k:
        value = diversity * query_scores - (0.0 if redundancy is None else (1.0 - diversity) * redundancy)
        pick = int(np.argmax(np.where(alive, value, -np.inf)))
        chosen.append(pick)
        alive[pick] = False
        similarity = vectors @ vectors[pick]
        redundancy = similarity if redundancy is None else np.maximum(redundancy, similarity)
        alive &= similarity < near_duplicate
    return chosen


class ChatMemory:
    """A :class:`Memory` (or an empty one when none was built yet) with the chat's retrieval settings."""

    def __init__(self, memory: Memory, folder: str | os.PathLike | None = None, *, k: int = 5,
                 min_score: float = 0.3, context_tokens: int = 768, diversity: float = 0.7,
                 count_tokens: Callable[[str], int] | None = None, candidates: int = 0, status: str = ""):
        self.memory = memory
        self.folder = None if folder is None else Path(folder)
        self.k = k
        self.min_score = min_score
        self.context_tokens = context_tokens
        self.diversity = diversity
        self.count_tokens = count_tokens or estimate_tokens
        self.candidates = candidates or max(4 * k, 20)
        where = self.folder / VECTORS_FILE if self.folder else "not saved"
        self.status = status or f"Memory: {len(memory):,} items ({where})."
        self._lock = threading.Lock()  # one page serves several tabs: searches and appends must not interleave

    @classmethod
    def open(cls, folder: str | os.PathLike = ".", **settings) -> ChatMemory:
        """Load the memory files in ``folder``; with none there, start empty (turns remembered create them)."""
        folder = Path(folder)
        if not any((folder / name).exists() for name in (VECTORS_FILE, METADATA_FILE, CONFIG_FILE)):
            status = (f"No memory in {folder.resolve().name or folder}/ yet (no {VECTORS_FILE}): replies use no "
                      "memories. Build one with python batch_embedder.py; chat turns are remembered meanwhile.")
            log.warning(status)
            return cls(Memory.empty(), folder, status=status, **settings)
        return cls(Memory.load(folder), folder, **settings)

    @staticmethod
    def settings(config) -> dict:
        """A ChatConfig's retrieval settings, as keyword arguments of :class:`ChatMemory`."""
        return {"k": config.k, "min_score": config.min_score, "context_tokens": config.context_tokens,
                "diversity": config.diversity}

    @classmethod
    def from_config(cls, config, count_tokens: Callable[[str], int] | None = None) -> ChatMemory:
        return cls.open(config.memory_dir, count_tokens=count_tokens, **cls.settings(config))

    def __len__(self) -> int:
        return len(self.memory)

    def candidates_for(self, query: str, exclude_conversation: str | None = None) -> tuple[list[Hit], np.ndarray]:
        """Nearest items over ``min_score`` with their vectors (items of ``exclude_conversation`` left out)."""
        memory = self.memory
        if not len(memory) or self.k <= 0:
            return [], np.zeros((0, 0), dtype=np.float32)
        query_vector = memory.embed([query])
        with self._lock:
            scores, ids = memory.index.search(query_vector, min(self.candidates, len(memory)))
            hits, rows = [], []
            for score, idx in zip(scores[0], ids[0]):
                if idx < 0 or score < self.min_score:
                    continue
                meta = memory.metadata[idx]
                if exclude_conversation is not None and meta.get("conversation_id") == exclude_conversation:
                    continue
                hits.append(Hit(float(score), meta["text"], meta))
                rows.append(int(idx))
            vectors = memory.vectors[rows]
        return hits, vectors

    def retrieve(self, query: str, exclude_conversation: str | None = None) -> list[Hit]:
        """The memories to put in the prompt for ``query``: relevant, diverse, within the token budget."""
        hits, vectors = self.candidates_for(query, exclude_conversation)
        if not hits:
            return []
        # Ranking every candidate (not just k) lets the next diverse memory take the place of one too long to fit.
        order = mmr(np.array([h.score for h in hits], dtype=np.float32), vectors, len(hits), self.diversity)
        used, budget = [], self.context_tokens
        for position in order:
            cost = self.count_tokens(memory_line(hits[position]) + "\n")
            if cost <= budget:
                used.append(hits[position])
                budget -= cost
                if len(used) == self.k:
                    break
        return used

    def remember(self, user_text: str, reply_text: str, when: float | None = None, *,
                 conversation_id: str = "chat", conversation_title: str | None = None, turn: int = 0) -> int:
        """Append one finished turn to the memory and its files; returns the number of items added."""
        when = time.time() if when is None else when
        items = self.turn_items(user_text, reply_text, when, conversation_id, conversation_title, turn)
        if not items:
            return 0
        vectors = self.memory.embed([item["text"] for item in items])  # the slow part, outside the lock
        with self._lock:
            self.memory.add(items, vectors)
            if self.folder is not None:
                self.memory.save(self.folder)
        return len(items)

    def turn_items(self, user_text: str, reply_text: str, when: float, conversation_id: str,
                   conversation_title: str | None, turn: int) -> list[dict]:
        """Items in batch_embedder's schema (see rhizome.memory.items), redacted with the memory's own settings
        and split to the embedder's token limit."""
        redaction = Redaction.of(self.memory.config)
        embedder = self.memory.model
        tokenizer = embedder.tokenizer
        splitter = TokenSplitter(tokenizer, embedder.max_seq_length - tokenizer.num_special_tokens_to_add(pair=False))
        items = []
        for offset, (role, text) in enumerate((("user", user_text), ("assistant", reply_text))):
            if not text or not text.strip():
                continue
            index = 2 * turn + offset
            base = {
                "id": f"{CHAT_SOURCE}:{conversation_id}:{index}",
                "source": CHAT_SOURCE,
                "role": role,
                "timestamp": float(when),
                "conversation_id": conversation_id,
                "conversation_title": redaction(conversation_title) if conversation_title else conversation_title,
                "message_index": index,
                "file": None,
            }
            items.extend(with_parts(base, splitter.split(redaction(text.strip()))))
        return items


def plain_text(content) -> str:
    """A history message's text, whether a string or a list of typed parts (as Gradio hands them over)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return "".join(plain_text(part) for part in content)
    return ""


def turn_messages(user_message: str, hits: list[Hit]) -> list[dict]:
    """A new turn as the model sees it: a system message with the memories retrieved for it (when any), then the
    user's message."""
    memories = [{"role": "system", "content": MEMORY_HEADER + "\n" + "\n".join(memory_line(hit) for hit in hits)}]
    return (memories if hits else []) + [{"role": "user", "content": user_message}]


def build_messages(system_prompt: str, history: list[dict], user_message: str, hits: list[Hit]) -> list[dict]:
    """Chat messages for the model: the system prompt, the earlier turns, the new message after its memories.

    The memories go with the new message, not into the first system message: then the system prompt and the earlier
    turns are the same tokens from one turn to the next, a prefix the engines reuse instead of prefilling it again
    (``ChatModel`` keeps its KV cache, ``CT2ChatModel`` stores the prefix's state). They stay in a system message of
    their own: as part of the user's message the model found the gold answers of the grounded-QA evaluation less
    likely (bench/qa.py, README). A chat template that allows one system message only gets them folded into the
    user's message (``ChatEngine.prompt_ids``)."""
    system = system_prompt.strip()
    messages = [{"role": "system", "content": system}] if system else []
    for message in history:
        role, text = message.get("role"), plain_text(message.get("content")).strip()
        if role in ("user", "assistant") and text:
            messages.append({"role": role, "content": text})
    return messages + turn_messages(user_message, hits)
