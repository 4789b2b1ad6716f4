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

import itertools
import json
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rhizome.device import available_cpus
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


def iter_pairs(path: str | Path) -> Iterator[dict]:
    """The chat pairs of a JSONL file, read and checked one line at a time; errors name the file and line, and a
    file with none is an error."""
    path = Path(path)
    number = None
    for number, row in checked_rows(path, _check_row, "Create the training data with `python data_formatter.py` "
                                    "or pass --train-file / --validation-file."):
        yield {"id": str(row.get("id", f"{path.stem}-{number}")), "messages": row["messages"],
               "themes": [str(t) for t in row.get("themes") or []],
               "theme_weight": float(row.get("theme_weight", 1.0))}
    if number is None:
        raise DatasetFileError(f"{path} holds no training pairs")


def load_pairs(path: str | Path) -> list[dict]:
    """Every chat pair of a JSONL file (:func:`iter_pairs`)."""
    return list(iter_pairs(path))


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


CHUNK_PAIRS = 512  # pairs per unit of work: one tokenizer batch, one message to a worker, one write to the cache


def default_workers() -> int:
    """Tokenising processes when none are asked for: all CPUs but one (left to the parent, which reads the
    file and writes the cache), at least one; so one, in-process, on a 2-core machine."""
    return max(1, available_cpus() - 1)


def _tokenize_chunk(pairs: list[dict], tokenizer, max_seq_length: int, loss_on: str) -> TokenizedData:
    """Render, tokenise and mask ``pairs``; samples as flat arrays, counts in ``stats``."""
    tokens, targets, lengths = [], [], []
    ids, themes, weights = [], [], []
    truncated = dropped = trimmed = 0
    rendered = [assistant_spans(tokenizer, pair["messages"], loss_on) for pair in pairs]
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    for pair, (_, spans), input_ids, char_offsets in zip(pairs, rendered, encoded["input_ids"],
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
        lengths.append(len(input_ids))
        ids.append(pair["id"])
        themes.append(pair["themes"])
        weights.append(pair["theme_weight"])
    stats = {"pairs": len(pairs), "samples": len(ids), "context_trimmed": trimmed, "truncated": truncated,
             "dropped_no_target": dropped}
    return TokenizedData(
        np.concatenate(tokens) if tokens else np.zeros(0, np.int32),
        np.concatenate(targets) if targets else np.zeros(0, bool),
        np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]), ids, themes, np.asarray(weights, np.float64), stats)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


_worker_setup: tuple = ()


def _start_worker(tokenizer, max_seq_length: int, loss_on: str) -> None:
    global _worker_setup
    _worker_setup = (tokenizer, max_seq_length, loss_on)


def _tokenize_in_worker(pairs: list[dict]) -> TokenizedData:
    return _tokenize_chunk(pairs, *_worker_setup)


def tokenized_chunks(pairs: Iterable[dict], tokenizer, max_seq_length: int, loss_on: str = "last",
                     workers: int = 1) -> Iterator[TokenizedData]:
    """The samples of :func:`tokenize_pairs`, a chunk of :data:`CHUNK_PAIRS` pairs at a time and in order, so
    neither the pairs nor their tokens need to be in memory at once. With ``workers`` > 1 the chunks are tokenised by that many
    processes, at most two chunks each read ahead; the chunks come out the same as with one."""
    chunks = _batches(pairs, CHUNK_PAIRS)
    first = next(chunks, None)
    second = next(chunks, None) if first is not None else None
    if workers <= 1 or second is None:  # one chunk does not repay starting processes (a second or two each)
        for chunk in itertools.chain(filter(None, (first, second)), chunks):
            yield _tokenize_chunk(chunk, tokenizer, max_seq_length, loss_on)
        return
    # spawn, not fork: the parent may hold OpenMP and tokenizer thread pools, which a forked child inherits broken.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=(tokenizer, max_seq_length, loss_on)) as pool:
        pending: deque = deque()
        for chunk in itertools.chain((first, second), chunks):
            pending.append(pool.submit(_tokenize_in_worker, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def no_samples_error(max_seq_length: int) -> DatasetFileError:
    return DatasetFileError(f"no pair keeps an assistant token within max_seq_length={max_seq_length}")


def add_stats(total: dict, part: dict) -> dict:
    """Counts of two runs of chunks added up."""
    return {key: total.get(key, 0) + value for key, value in part.items()}


def tokenize_pairs(pairs: Iterable[dict], tokenizer, max_seq_length: int, loss_on: str = "last",
                   workers: int = 1) -> TokenizedData:
    """Render, tokenise and mask every pair, in memory. A pair longer than ``max_seq_length`` first loses its
    oldest context turns (loss on the last reply only), then its end; pairs left with no target token are dropped.
    (``rhizome.train.cache`` writes the same samples to disk chunk by chunk instead.)"""
    parts = list(tokenized_chunks(pairs, tokenizer, max_seq_length, loss_on, workers))
    stats: dict = {}
    for part in parts:
        stats = add_stats(stats, part.stats)
    if not stats.get("samples"):
        raise no_samples_error(max_seq_length)
    lengths = np.concatenate([part.lengths for part in parts])
    return TokenizedData(
        np.concatenate([part.tokens for part in parts]), np.concatenate([part.targets for part in parts]),
        np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]), [i for part in parts for i in part.ids],
        [t for part in parts for t in part.themes], np.concatenate([part.weights for part in parts]), stats,
    )
