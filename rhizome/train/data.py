"""Training pairs: the formatter's chat JSONL -> token ids with assistant-only loss targets.

Each line of ``dataset_<split>.jsonl`` is ``{"id", "messages": [{"role": "system"|"user"|"assistant",
"content"}...], "themes": [...], "theme_weight", "quality", "source", "conversation_id"}``.

The conversation is rendered with the model's own chat template. The loss covers the assistant reply
(its text and the template's end-of-turn token) and nothing else: SmolLM2's template has no
``{% generation %}`` markers, so each reply's character span is found by rendering the conversation up
to the reply with ``add_generation_prompt=True`` (where the reply starts) and up to and including it
(where it ends), and the tokens whose text starts inside a span are the targets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rhizome.errors import UserError
from rhizome.log import get_logger

log = get_logger(__name__)

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100


class DatasetFileError(UserError, ValueError):
    pass


def checked_rows(path: str | Path, check: Callable[[object], str | None],
                 missing: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a JSONL file, each row passed by ``check`` (None or the problem); errors name the
    file and line. ``missing`` says where the file comes from, for a path that does not exist."""
    path = Path(path)
    if not path.exists():
        raise DatasetFileError(f"{path} not found. {missing}")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFileError(f"{path}:{number}: not JSON ({exc})") from exc
            problem = check(row)
            if problem:
                raise DatasetFileError(f"{path}:{number}: {problem}")
            yield number, row


def load_pairs(path: str | Path) -> list[dict]:
    """Read and check a chat JSONL file; errors name the file and line."""
    path = Path(path)
    pairs = [{"id": str(row.get("id", f"{path.stem}-{number}")), "messages": row["messages"],
              "themes": [str(t) for t in row.get("themes") or []],
              "theme_weight": float(row.get("theme_weight", 1.0))}
             for number, row in checked_rows(path, _check_row, "Create the training data with `python "
                                             "data_formatter.py` or pass --train-file / --validation-file.")]
    if not pairs:
        raise DatasetFileError(f"{path} holds no training pairs")
    return pairs


def _check_row(row) -> str | None:
    if not isinstance(row, dict):
        return "each line must be a JSON object"
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'missing "messages": a list of {"role", "content"}'
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            return f'each message needs "role" in {ROLES} and a string "content", got {message!r:.120}'
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message to learn from"
    if not isinstance(row.get("themes", []), list):
        return '"themes" must be a list'
    weight = row.get("theme_weight", 1.0)
    if not isinstance(weight, (int, float)) or weight < 0:
        return '"theme_weight" must be a non-negative number'
    return None


def assistant_spans(tokenizer, messages: list[dict], loss_on: str = "last") -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant replies that carry loss."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]
    if loss_on == "last":
        replies = replies[-1:]
    spans = []
    for i in replies:
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (upto.startswith(prompt) and text.startswith(upto)):
            raise DatasetFileError(
                "the chat template does not render conversations prefix by prefix, so the assistant "
                "replies cannot be located; use a model with a standard chat template"
            )
        end = len(prompt) + len(upto[len(prompt):].rstrip())
        spans.append((len(prompt), end))
    return text, spans


@dataclass
class TokenizedData:
    """Samples as flat arrays: sample i is ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: np.ndarray  # int32
    targets: np.ndarray  # bool, True where the token is an assistant token the model must predict
    offsets: np.ndarray  # int64, n + 1
    ids: list[str]
    themes: list[list[str]]
    weights: np.ndarray  # float64 theme_weight per sample
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, next-token labels with IGNORE_INDEX where no loss) of sample ``i``."""
        start, end = self.offsets[i], self.offsets[i + 1]
        ids = self.tokens[start:end].astype(np.int64)
        labels = np.full(end - start, IGNORE_INDEX, dtype=np.int64)
        follows = self.targets[start + 1:end]
        labels[:-1][follows] = ids[1:][follows]
        return ids, labels

    def label_count(self, i: int) -> int:
        return int(self.targets[self.offsets[i] + 1:self.offsets[i + 1]].sum())

    def subset(self, n: int) -> TokenizedData:
        if n <= 0 or n >= len(self):
            return self
        end = self.offsets[n]
        return TokenizedData(self.tokens[:end], self.targets[:end], self.offsets[: n + 1], self.ids[:n],
                             self.themes[:n], self.weights[:n], dict(self.stats, subset=n))


def _target_mask(spans: list[tuple[int, int]], char_offsets) -> np.ndarray:
    starts = np.fromiter((s for s, _ in char_offsets), dtype=np.int64, count=len(char_offsets))
    mask = np.zeros(len(char_offsets), dtype=bool)
    for lo, hi in spans:
        mask |= (starts >= lo) & (starts < hi)
    return mask


def _without_oldest_context(tokenizer, messages: list[dict], max_seq_length: int):
    """(input ids, target mask) of the conversation with its oldest context turns dropped, a user turn at a time
    and the system message kept, until it fits; None when it has no context to drop.

    Truncation keeps the start of a row, so a long context would push the reply (the only part that carries
    loss) out of it entirely: on real ShareGPT conversations a quarter of the pairs were lost that way."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    result = None
    while True:
        later_users = [i for i, m in enumerate(turns) if i > 0 and m["role"] == "user"]
        if not later_users:
            return result
        turns = turns[later_users[0]:]
        text, spans = assistant_spans(tokenizer, system + turns, "last")
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        result = encoded["input_ids"], _target_mask(spans, encoded["offset_mapping"])
        if len(result[0]) <= max_seq_length:
            return result


def tokenize_pairs(pairs: list[dict], tokenizer, max_seq_length: int, loss_on: str = "last",
                   batch: int = 256) -> TokenizedData:
    """Render, tokenise and mask every pair. A pair longer than ``max_seq_length`` first loses its oldest context
    turns (loss on the last reply only), then its end; pairs left with no target token are dropped."""
    tokens, targets, offsets = [], [], [0]
    ids, themes, weights = [], [], []
    truncated = dropped = trimmed = 0
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        rendered = [assistant_spans(tokenizer, pair["messages"], loss_on) for pair in chunk]
        encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        for pair, (_, spans), input_ids, char_offsets in zip(chunk, rendered, encoded["input_ids"],
                                                              encoded["offset_mapping"]):
            mask = _target_mask(spans, char_offsets)
            if len(input_ids) > max_seq_length and loss_on == "last":
                shorter = _without_oldest_context(tokenizer, pair["messages"], max_seq_length)
                if shorter is not None:
                    trimmed += 1
                    input_ids, mask = shorter
            if len(input_ids) > max_seq_length:
                truncated += 1
                input_ids, mask = input_ids[:max_seq_length], mask[:max_seq_length]
            if not mask[1:].any():
                dropped += 1
                continue
            tokens.append(np.asarray(input_ids, dtype=np.int32))
            targets.append(mask)
            offsets.append(offsets[-1] + len(input_ids))
            ids.append(pair["id"])
            themes.append(pair["themes"])
            weights.append(pair["theme_weight"])
    if not ids:
        raise DatasetFileError(f"no pair keeps an assistant token within max_seq_length={max_seq_length}")
    stats = {"pairs": len(pairs), "samples": len(ids), "context_trimmed": trimmed, "truncated": truncated,
             "dropped_no_target": dropped}
    return TokenizedData(
        np.concatenate(tokens), np.concatenate(targets), np.asarray(offsets, dtype=np.int64), ids, themes,
        np.asarray(weights, dtype=np.float64), stats,
    )
