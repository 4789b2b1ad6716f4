"""Stage 3: conversations and PDF chunks -> ``data_finetune/`` training set.

Steps, each counting what came in and went out (``dataset_metadata.json`` keeps the counts):

    load     every conversation source, pdf_texts.json, and the memory's vectors when made with the same model
    clean    Unicode / whitespace normalisation, junk turns dropped, secrets redacted (rhizome.format.clean)
    pairs    user turn + reply with up to --context-turns earlier turns; PDF chunks as instruction pairs
    embed    a vector per prompt and reply: the memory's, the cache's, or computed (only texts neither holds)
    quality  a score in [0, 1] per pair (rhizome.format.quality); below --qa-quality-score-threshold dropped,
             and so are pairs whose prompt/reply similarity is outside [--min/--max-semantic-similarity]
    dedup    exact, then near duplicates at cosine >= --dedup-similarity-threshold (best of a group survives)
    themes   TF-IDF terms (+ KeyBERT keyphrases), theme weights by tfidf / ipf / hybrid, adaptive history
    split    train / validation / test, grouped by conversation and near-duplicate group, stratified by theme
    preferences  regenerated, edited and rated replies -> preference pairs, each in its conversation's split
             (rhizome.format.preferences)
    write    dataset_<split>.jsonl, dataset_<split>_detailed.jsonl, dataset_preferences_<split>.jsonl,
             dataset_metadata.json, format_config.json

Quality is scored before dedup (not after, as the original lists it) because dedup keeps the
best-scoring pair of each group, and low-quality pairs are dropped before themes so that theme
weights describe the pairs that are trained on.

Each step is a function of the run's state, and :data:`STEPS` is the order ``run()`` loops over
(datatrove's pipeline of steps): a step fills in the state and returns its counts.
"""

from __future__ import annotations

import functools
import platform
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rhizome import atomic
from rhizome.config import option, save_config, to_dict
from rhizome.device import detect_device
from rhizome.errors import UserError
from rhizome.format import clean as cleaning
from rhizome.format import dedup, pairs as pairing, preferences, quality, split, themes
from rhizome.format.embeddings import PairVectors, embed_pairs, memory_vectors
from rhizome.format.records import Pair
from rhizome.format.semantic_memory import SemanticMemory
from rhizome.format.steps import StepLog, StepResult
from rhizome.ingest import IngestReport, iter_conversations
from rhizome.ingest.preferences import load_feedback
from rhizome.inputs import INPUTS_HELP, InputOptions, default_inputs, load_pdf_chunks, split_inputs
from rhizome.log import get_logger, progress
from rhizome.memory.build import model_token_limit
from rhizome.memory.embedder import (
    DEFAULT_EMBEDDING_MODEL, EmbeddingCache, embedding_precision, load_embedder, load_tokenizer,
)
from rhizome.memory.items import TokenSplitter
from rhizome.redact import PII_KINDS, REDACT_HELP, REDACT_PII_HELP, Redaction

log = get_logger(__name__)

METADATA_FILE = "dataset_metadata.json"
CONFIG_FILE = "format_config.json"


class FormatError(UserError):
    """A run that cannot produce a training set; the message says which step and what to change."""


@dataclass
class FormatConfig(InputOptions):
    inputs: list[str] = option(default_factory=list, positional=True, metavar="FILE", help=INPUTS_HELP)
    output_dir: str = option("data_finetune", "folder for the dataset files")
    input_memory_texts: str = option("memory_texts.npy", "vectors from batch_embedder.py to reuse (with "
                                     "memory_metadata.pkl beside them) when made with the same model")
    embedding_model: str = option(DEFAULT_EMBEDDING_MODEL, "sentence-transformers model or local folder")
    cache_dir: str = option(".rhizome_cache/embeddings", "embedding cache shared with batch_embedder.py")
    enable_semantic_labeling: bool = option(False, "label themes (TF-IDF) and weight pairs by theme rarity")
    extract_keyphrases: bool = option(False, "add KeyBERT keyphrases to the themes (slower)")
    semantic_mode: str = option("adaptive", "adaptive: theme statistics carry over between runs in "
                                "--semantic-memory-path; normal: each run stands alone",
                                choices=("normal", "adaptive"))
    semantic_method: str = option("hybrid", "theme weights: tfidf (inverse frequency), ipf (IPF-calibrated "
                                  "theme x source table), hybrid (geometric mean of both)", choices=themes.METHODS)
    semantic_memory_path: str = option("semantic_memory.pkl", "theme history for --semantic-mode adaptive")
    theme_temperature: float = option(themes.DEFAULT_ALPHA, "alpha in u_t = min(cap, (mean f / f_t)^alpha)")
    theme_weight_cap: float = option(themes.DEFAULT_CAP, "cap on a theme's weight")
    themes_per_pair: int = option(themes.DEFAULT_TOP_K, "TF-IDF terms (and keyphrases) per pair")
    dedup_similarity_threshold: float = option(dedup.DEFAULT_THRESHOLD,
                                               "near duplicates: cosine >= this (above 1 turns near-dedup off)")
    qa_quality_score_threshold: float = option(quality.DEFAULT_THRESHOLD, "drop pairs scoring below this")
    min_semantic_similarity: float = option(0.0, "drop pairs whose reply is less similar than this to the "
                                            "prompt (cosine; off-topic replies)")
    max_semantic_similarity: float = option(0.99, "drop pairs whose reply is more similar than this to the "
                                            "prompt (cosine; replies that only echo the prompt)")
    context_turns: int = option(pairing.DEFAULT_CONTEXT_TURNS, "earlier turns kept as context in each pair")
    system_prompt: str | None = option(None, "system message put first in every pair")
    train_ratio: float = option(0.8, "share of pairs for training")
    validation_ratio: float = option(0.1, "share of pairs for validation")
    test_ratio: float = option(0.1, "share of pairs for testing")
    preferences: bool = option(True, "mine preference pairs from regenerated, edited and rated replies into "
                               "dataset_preferences_<split>.jsonl (written when any exist) for train_script.py "
                               "--method dpo")
    redact: bool = option(True, REDACT_HELP)
    redact_pii: bool = option(False, REDACT_PII_HELP)
    seed: int = option(split.DEFAULT_SEED, "seed of the split")
    workers: int = option(0, "CPU threads for embedding; 0 = one per physical core")
    batch_size: int = option(32, "texts per embedding batch")
    force_cpu: bool = option(False, "embed on the CPU even when a GPU is available")
    verbose: bool = option(False, "debug logging")


def _nonempty(items: Sequence, step: str, hint: str) -> None:
    if not items:
        raise FormatError(f"step '{step}' left no training pairs. {hint}")


@dataclass
class _Run:
    """What the steps hand one another, in the order they fill it in."""

    config: FormatConfig
    inputs: list[str]
    report: IngestReport = field(default_factory=IngestReport)
    conversations: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    known: dict = field(default_factory=dict)  # text hash -> the memory's vector
    clean_stats: cleaning.CleanStats = field(default_factory=cleaning.CleanStats)
    pair_stats: pairing.PairStats = field(default_factory=pairing.PairStats)
    pairs: list[Pair] = field(default_factory=list)
    device: Any = None
    cache: EmbeddingCache | None = None
    load_model: Any = None
    vectors: PairVectors | None = None
    pair_vectors: Any = None  # rows follow ``pairs`` after every step that drops pairs
    dedup_stats: Any = None
    theme_stats: Any = None
    semantic_memory: SemanticMemory | None = None
    splits: dict = field(default_factory=dict)
    preference_stats: preferences.PreferenceStats = field(default_factory=preferences.PreferenceStats)
    preference_splits: dict = field(default_factory=dict)


def load(run: _Run) -> StepResult:
    config = run.config
    conversation_files, pdf_files = split_inputs(run.inputs)
    run.conversations = list(progress(iter_conversations(conversation_files, run.report, config.input_limits()),
                                      desc="load conversations", unit="conv"))
    run.chunks = load_pdf_chunks(pdf_files, run.report)
    run.known = memory_vectors(config.input_memory_texts, config.embedding_model)
    for file, reason in run.report.errors:
        log.warning("%s: %s", file, reason)
    _nonempty(run.conversations + run.chunks, "load", "No conversation or PDF chunk could be read from "
              f"{', '.join(run.inputs)}; see the messages above.")
    return StepResult(len(run.inputs), len(run.conversations) + len(run.chunks), dict(
        conversations=len(run.conversations), pdf_chunks=len(run.chunks), memory_vectors=len(run.known),
        skipped_conversations=run.report.skipped_conversations, skipped_messages=run.report.skipped_messages))


def clean(run: _Run) -> StepResult:
    count_in = len(run.conversations) + len(run.chunks)
    redaction = Redaction(run.config.redact, run.config.redact_pii)
    run.conversations = [c for c in (cleaning.clean_conversation(c, run.clean_stats, redaction)
                                     for c in progress(run.conversations, desc="clean", unit="conv")) if c]
    run.chunks = [c for c in (cleaning.clean_chunk(c, run.clean_stats, redaction) for c in run.chunks) if c]
    _nonempty(run.conversations + run.chunks, "clean", "Every turn was empty or junk.")
    return StepResult(count_in, len(run.conversations) + len(run.chunks), dict(
        redacted=sum(run.clean_stats.redacted.values()), dropped=sum(run.clean_stats.dropped.values())))


def make_pairs(run: _Run) -> StepResult:
    config, stats = run.config, run.pair_stats
    for conversation in progress(run.conversations, desc="pairs", unit="conv"):
        run.pairs.extend(pairing.pairs_from_conversation(conversation, config.context_turns, config.system_prompt,
                                                         stats))
    run.pairs.extend(p for p in (pairing.pair_from_chunk(c, config.system_prompt, stats) for c in run.chunks) if p)
    _nonempty(run.pairs, "pairs", "No user turn has an assistant reply, and no PDF chunk is long enough; lower "
              "--context-turns does not help here: check the inputs.")
    return StepResult(len(run.conversations) + len(run.chunks), len(run.pairs), dict(
        conversation_pairs=stats.conversation_pairs, pdf_pairs=stats.pdf_pairs))


def embed(run: _Run) -> StepResult:
    config = run.config
    run.device = detect_device(config.force_cpu)
    if config.workers:
        import torch

        torch.set_num_threads(config.workers)

    @functools.cache
    def load_model():
        log.info("loading %s on %s", config.embedding_model, run.device.describe())
        return load_embedder(config.embedding_model, device=run.device.torch_device)

    run.load_model = load_model
    run.cache = EmbeddingCache(config.cache_dir, config.embedding_model, embedding_precision(run.device.torch_device))
    cached_before = len(run.cache)
    tokenizer = load_tokenizer(config.embedding_model)
    splitter = TokenSplitter(tokenizer, model_token_limit(config.embedding_model, tokenizer))
    run.vectors = embed_pairs(run.pairs, run.known, run.cache, load_model, config.batch_size, splitter.split)
    run.pair_vectors = run.vectors.pairs
    return StepResult(len(run.pairs), len(run.pairs), dict(
        texts_from_memory=run.vectors.from_memory, texts_embedded_or_cached=run.vectors.embedded),
        varying=dict(newly_embedded=len(run.cache) - cached_before))


def filter_quality(run: _Run) -> StepResult:
    config = run.config
    count_in = len(run.pairs)
    kept, kept_rows = [], []
    low_quality = off_topic = echo = 0
    for row, pair in enumerate(progress(run.pairs, desc="quality", unit="pair")):
        pair.quality, pair.quality_components = quality.score_pair(pair)
        similarity = float(run.vectors.prompt_reply_similarity[row])
        pair.quality_components["prompt_reply_similarity"] = round(similarity, 4)
        if pair.quality < config.qa_quality_score_threshold:
            low_quality += 1
        elif similarity < config.min_semantic_similarity:
            off_topic += 1
        elif similarity > config.max_semantic_similarity:
            echo += 1
        else:
            kept.append(pair)
            kept_rows.append(row)
    _nonempty(kept, "quality", "Lower --qa-quality-score-threshold (now "
              f"{config.qa_quality_score_threshold}) or widen --min/--max-semantic-similarity.")
    run.pairs, run.pair_vectors = kept, run.pair_vectors[kept_rows]
    return StepResult(count_in, len(kept), dict(
        below_quality_threshold=low_quality, below_min_similarity=off_topic, above_max_similarity=echo,
        threshold=config.qa_quality_score_threshold))


def deduplicate(run: _Run) -> StepResult:
    count_in = len(run.pairs)
    kept, run.dedup_stats = dedup.dedup_pairs(run.pairs, run.pair_vectors, run.config.dedup_similarity_threshold)
    row_of = {p.id: row for row, p in enumerate(run.pairs)}
    run.pair_vectors = run.pair_vectors[[row_of[p.id] for p in kept]]
    run.pairs = kept
    return StepResult(count_in, len(kept), dict(exact_duplicates=run.dedup_stats.exact_removed,
                                                near_duplicates=run.dedup_stats.near_removed))


def label_themes(run: _Run) -> StepResult:
    config, pairs = run.config, run.pairs
    if not config.enable_semantic_labeling:
        return StepResult(len(pairs), len(pairs), dict(skipped="--enable-semantic-labeling not set"))
    keyphrases = None
    if config.extract_keyphrases:
        keyphrases = themes.extract_keyphrases([p.text for p in pairs], run.pair_vectors, run.load_model(),
                                               top_n=config.themes_per_pair, cache=run.cache)
    themes.label_themes(pairs, config.themes_per_pair, keyphrases)
    counts = themes.theme_counts(pairs)
    frequencies = None
    if config.semantic_mode == "adaptive":
        run.semantic_memory = SemanticMemory.load(config.semantic_memory_path)
        frequencies = run.semantic_memory.effective_counts(counts)
    run.theme_stats = themes.assign_theme_weights(pairs, config.semantic_method, frequencies,
                                                  config.theme_temperature, config.theme_weight_cap)
    return StepResult(len(pairs), len(pairs), dict(unique_themes=len(counts), method=config.semantic_method,
                                                   mode=config.semantic_mode))


def split_pairs(run: _Run) -> StepResult:
    c = run.config
    run.splits = split.split_pairs(run.pairs, (c.train_ratio, c.validation_ratio, c.test_ratio), c.seed)
    return StepResult(len(run.pairs), sum(len(s) for s in run.splits.values()),
                      {name: len(s) for name, s in run.splits.items()})


def mine_preferences(run: _Run) -> StepResult:
    config, stats = run.config, run.preference_stats
    if not config.preferences:
        return StepResult(0, 0, dict(skipped="--no-preferences"))
    ratings = load_feedback(split_inputs(run.inputs)[0], run.report)
    for conversation in run.conversations:
        ratings.update(conversation.ratings)
    stats.ratings = len(ratings)
    redaction = Redaction(config.redact, config.redact_pii)
    found = []
    for conversation in run.conversations:
        found.extend(preferences.mine(conversation, ratings, stats, context_turns=config.context_turns,
                                      system_prompt=config.system_prompt, redaction=redaction,
                                      clean_stats=run.clean_stats, quality_threshold=config.qa_quality_score_threshold))
    preferences.take_themes(found, run.pairs)
    run.preference_splits = preferences.split_like(
        found, run.splits, (config.train_ratio, config.validation_ratio, config.test_ratio), config.seed)
    stats.splits = {name: dict(sorted(Counter(p.kind for p in members).items()))
                    for name, members in run.preference_splits.items()}
    return StepResult(sum(stats.alternatives.values()), len(found), dict(
        **{kind: stats.mined[kind] for kind in preferences.KINDS}, dropped=sum(stats.dropped.values()),
        ratings_without_alternative=stats.ratings_without_alternative))


def write(run: _Run) -> StepResult:
    out = Path(run.config.output_dir)
    preference_files = preferences.write(out, run.preference_splits)
    for name, members in run.splits.items():
        atomic.write_jsonl(out / f"dataset_{name}.jsonl", (p.training_record() for p in members))
        atomic.write_jsonl(out / f"dataset_{name}_detailed.jsonl", (p.detailed_record() for p in members))
    if run.semantic_memory is not None:
        run.semantic_memory.record_run(themes.theme_counts(run.pairs), themes.source_counts(run.pairs), len(run.pairs))
        run.semantic_memory.save(run.config.semantic_memory_path)
    return StepResult(len(run.pairs), len(run.pairs), dict(files=2 * len(run.splits) + 2 + preference_files))


STEPS = (("load", load), ("clean", clean), ("pairs", make_pairs), ("embed", embed), ("quality", filter_quality),
         ("dedup", deduplicate), ("themes", label_themes), ("split", split_pairs),
         ("preferences", mine_preferences), ("write", write))


def run(config: FormatConfig, steps: StepLog | None = None) -> dict[str, Any]:
    """Run every step and write the dataset; returns ``dataset_metadata.json``'s content.

    ``steps`` (a fresh one when not given) receives each step's record as it finishes: counts and
    wall time, for the console table (``StepLog.table``) and the bench.
    """
    ratios = (config.train_ratio, config.validation_ratio, config.test_ratio)
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise FormatError(f"split ratios {ratios} must add up to 1")
    inputs = config.inputs or default_inputs()
    if not inputs:
        raise FormatError(
            "nothing to format. Put conversations.json (ChatGPT) / conversations2.json (Claude) here, or run "
            "`python pdf_to_json.py PDFs/` first for pdf_texts.json, or name files: python data_formatter.py FILE ...")
    steps = steps if steps is not None else StepLog()
    state = _Run(config, inputs)
    steps.run(STEPS, state)
    metadata = _metadata(state, steps)
    atomic.write_json(Path(config.output_dir) / METADATA_FILE, metadata)
    save_config(config, Path(config.output_dir) / CONFIG_FILE)
    return metadata


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.pstdev(values), 4),
            "min": round(min(values), 4), "max": round(max(values), 4)}


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("rhizomeml", "numpy", "torch", "sentence-transformers", "transformers", "scikit-learn",
                    "faiss-cpu", "keybert", "pypdf", "ijson"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def _metadata(run: _Run, steps: StepLog) -> dict[str, Any]:
    config, splits, report, clean_stats = run.config, run.splits, run.report, run.clean_stats
    dedup_stats, theme_stats, semantic_memory = run.dedup_stats, run.theme_stats, run.semantic_memory
    vectors = run.vectors
    every = [p for members in splits.values() for p in members]
    theme_distribution = Counter(t for p in every for t in p.themes)
    dedup_summary = {k: v for k, v in dedup_stats.as_dict().items() if k != "seconds"}  # keep the file reproducible
    return {
        "format": "rhizome.dataset_metadata",
        "version": 1,
        "total_pairs": len(every),
        "splits": {name: len(members) for name, members in splits.items()},
        "theme_distribution": dict(sorted(theme_distribution.items(), key=lambda kv: (-kv[1], kv[0]))),
        "unique_themes": len(theme_distribution),
        "quality_stats": {name: _stats([p.quality for p in members]) for name, members in splits.items()},
        "theme_weight_stats": {name: _stats([p.theme_weight for p in members]) for name, members in splits.items()},
        "sources": {name: dict(sorted(Counter(p.source for p in members).items()))
                    for name, members in splits.items()},
        "steps": steps.metadata(),
        "import": {"conversations": report.conversations, "messages": report.messages,
                   "skipped_conversations": report.skipped_conversations,
                   "skipped_messages": report.skipped_messages, "left_out": dict(sorted(report.filtered.items())),
                   "errors": [{"file": f, "reason": r} for f, r in report.errors]},
        "clean": clean_stats.as_dict(),
        "secrets_redacted": {k: n for k, n in sorted(clean_stats.redacted.items()) if k not in PII_KINDS},
        "personal_data_redacted": {k: n for k, n in sorted(clean_stats.redacted.items()) if k in PII_KINDS},
        "pairs": run.pair_stats.as_dict(),
        "embeddings": {"model": config.embedding_model, "texts_from_memory": vectors.from_memory,
                       "texts_embedded_or_cached": vectors.embedded, "device": run.device.kind},
        "dedup": dedup_summary,
        "preferences": run.preference_stats.as_dict(),
        "themes": theme_stats.as_dict() if theme_stats else None,
        "semantic_memory": ({k: v for k, v in semantic_memory.as_dict().items() if k not in ("created", "updated")}
                            if semantic_memory else None),
        "config": to_dict(config),
        "seed": config.seed,
        "library_versions": _library_versions(),
    }
