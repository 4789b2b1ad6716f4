"""Ask the QA questions through the chat itself, under each condition, and score the answers.

Every answer comes from :meth:`rhizome.chat.session.ChatSession.respond` on a session made by
``ChatSession.from_config``, the code path of the chat page and the terminal chat: the chat's own model loading
(engine, adapter merge), retrieval (MMR, score floor, token budget), prompt assembly (system prompt, memory
block, chat template) and generation, with the chat's settings except that decoding is greedy
(``temperature`` 0), replies are capped at ``qa_max_new_tokens`` and nothing is remembered. "Without memories"
is the same session with retrieval switched off (``k`` = 0, as ``--k 0`` on the page). Both sessions run the
chat's engine through a :class:`~rhizome.evaluate.qa_likelihood.PromptRecorder`, so the gold answer's likelihood
is scored after the very prompt the session built for that question (``qa_likelihood.py``).

Conditions: each model (the base, each adapter, each ``--qa-extra-models`` model) without and with memories.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rhizome.chat.config import ChatConfig
from rhizome.chat.retrieval import ChatMemory
from rhizome.chat.session import ChatSession
from rhizome.evaluate.adapters import EvalInputError
from rhizome.evaluate.qa_likelihood import PromptRecorder, gold_likelihood
from rhizome.evaluate.qa_metrics import (bootstrap_mean, exact_match, faithfulness, gold_retrieved,
                                         resample_indices, token_f1)
from rhizome.evaluate.qa_questions import Question, build_questions
from rhizome.log import get_logger, progress
from rhizome.memory.store import VECTORS_FILE
from rhizome.pdf import PdfTextsError, load_pdf_texts
from rhizome.train.data import load_pairs

log = get_logger(__name__)

BOOTSTRAP_ROUNDS = 2000
METRICS = ("exact_match", "token_f1", "faithfulness", "gold_logprob", "gold_top1")
COMPARED = ("exact_match", "gold_logprob", "gold_top1")  # the metrics whose paired differences are reported


def chat_config(config, base_model: str, adapter: str | None = None) -> ChatConfig:
    """The chat's settings for the evaluation: its defaults, greedy, short replies, nothing remembered."""
    return ChatConfig(base_model=base_model, adapter=adapter or "none", memory_dir=config.memory_dir,
                      temperature=0.0, max_new_tokens=config.qa_max_new_tokens, remember=False,
                      force_cpu=config.force_cpu)


def chat_sessions(config, base_model: str, adapter: str | None) -> tuple[ChatSession, ChatSession]:
    """(without memories, with memories): the chat's session built as the page builds it, and the same model
    with retrieval off (``k`` = 0); both engines wrapped in one :class:`PromptRecorder`."""
    page = ChatSession.from_config(chat_config(config, base_model, adapter))
    memory = page.memory
    off = ChatMemory(memory.memory, None, count_tokens=memory.count_tokens,
                     **{**ChatMemory.settings(page.config), "k": 0}, status="no memories")
    recorder = PromptRecorder(page.model)
    return (ChatSession(page.config, recorder, off, notes=page.notes),
            ChatSession(page.config, recorder, memory, notes=page.notes))


def load_questions(config) -> tuple[list[Question], dict]:
    try:
        chunks = load_pdf_texts(config.pdf_texts) if Path(config.pdf_texts).is_file() else []
    except PdfTextsError as exc:
        raise EvalInputError(f"{config.pdf_texts}: {exc}") from exc
    held_out = {"test": load_pairs(config.test_file)}
    if config.qa_validation_file and Path(config.qa_validation_file).is_file():
        held_out["validation"] = load_pairs(config.qa_validation_file)
    return build_questions(chunks, held_out, load_pairs(config.train_file), max_questions=config.qa_max_questions)


def answer(session: ChatSession, question: str) -> tuple[str, list]:
    """The chat's finished reply to ``question`` in a new conversation, and the memories it was given."""
    reply, hits = "", []
    for reply, hits in session.respond(question, history=[]):
        pass
    return reply.strip(), hits


def ask_all(session: ChatSession, questions: list[Question], desc: str) -> list[dict]:
    """Each question's answer and memories, and the gold answer's likelihood after the prompt the session built
    for it (``session.model`` is a :class:`PromptRecorder`)."""
    rows = []
    for question in progress(questions, desc=desc, unit="q"):
        reply, hits = answer(session, question.question)
        likelihood = gold_likelihood(session.model.engine, session.model.last_messages, question.answer)
        rows.append({"answer": reply, "memories": [h.text for h in hits], **likelihood})
    return rows


def score(questions: list[Question], rows: list[dict], retrieved: list[list[str]]) -> dict[str, list]:
    """Per-question values (None where a metric does not apply) for one condition."""
    return {
        "exact_match": [float(exact_match(r["answer"], q.answer)) for q, r in zip(questions, rows)],
        "token_f1": [token_f1(r["answer"], q.answer) for q, r in zip(questions, rows)],
        "faithfulness": [faithfulness(r["answer"], q.question, texts) for q, r, texts in zip(questions, rows, retrieved)],
        "gold_logprob": [r["gold_logprob"] for r in rows],
        "gold_top1": [r["gold_top1"] for r in rows],
    }


def run_models(config, models: Iterable[tuple[str, str, str | None]],
               questions: list[Question]) -> tuple[dict, dict]:
    """(conditions, retrieval): answers and scores per condition, and what the chat retrieved per question.

    ``models``: (name, base model, adapter folder or None)."""
    if not Path(config.memory_dir, VECTORS_FILE).is_file():
        raise EvalInputError(f"no memory in {config.memory_dir}/ ({VECTORS_FILE} missing): build it with "
                             "`python batch_embedder.py` or pass --memory-dir")
    conditions: dict = {}
    retrieval: dict = {}
    for name, model_name, adapter in models:
        without, with_memories = chat_sessions(config, model_name, adapter)
        memory = with_memories.memory
        if not retrieval:
            retrieved = [[h.text for h in memory.retrieve(q.question)] for q in questions]
            searched = [[h.text for h in memory.memory.search(q.question, k=memory.k)] for q in questions]
            retrieval = {"k": memory.k, "retrieved": retrieved,
                         "gold_retrieved": [gold_retrieved(q.sentence, t) for q, t in zip(questions, retrieved)],
                         "gold_in_top_k": [gold_retrieved(q.sentence, t) for q, t in zip(questions, searched)]}
        for session in (without, with_memories):
            label = f"{name} {'with' if session is with_memories else 'without'} memories"
            clock = time.perf_counter()
            rows = ask_all(session, questions, label)
            conditions[label] = {"model": name, "memories": session is with_memories, "adapter": adapter,
                                 "base_model": model_name, "loaded": with_memories.notes[:-1],
                                 "seconds": time.perf_counter() - clock,
                                 "answers": [r["answer"] for r in rows],
                                 "per_question": score(questions, rows, retrieval["retrieved"])}
            per_question = conditions[label]["per_question"]
            log.info("%s: exact match %.1f%%, gold log-prob/token %.2f (%.1f s)", label,
                     100 * np.mean(per_question["exact_match"] or [0]),
                     np.nanmean(_values(per_question["gold_logprob"])) if questions else np.nan,
                     conditions[label]["seconds"])
        del without, with_memories
    return conditions, retrieval


def _values(per_question: list) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in per_question], dtype=float)


def summarize(questions: list[Question], conditions: dict, retrieval: dict, seed: int = 0) -> dict:
    """Means with 95% paired-bootstrap intervals per condition and question kind, and paired differences of each
    ``COMPARED`` metric."""
    kinds = {"all": np.arange(len(questions))}
    for kind in ("pdf", "conversation"):
        kinds[kind] = np.array([i for i, q in enumerate(questions) if q.kind == kind], dtype=int)
    summary: dict = {}
    for kind, index in kinds.items():
        resamples = resample_indices(len(index), BOOTSTRAP_ROUNDS, seed)
        per_kind = {"questions": int(len(index)),
                    "recall_at_k": bootstrap_mean(np.array(retrieval["gold_retrieved"], dtype=float)[index], resamples),
                    "top_k_search_recall": bootstrap_mean(
                        np.array(retrieval["gold_in_top_k"], dtype=float)[index], resamples),
                    "conditions": {}, "differences": {}}
        for label, condition in conditions.items():
            per_kind["conditions"][label] = {
                metric: bootstrap_mean(_values(condition["per_question"][metric])[index], resamples)
                for metric in METRICS}
        for first, second in differences(conditions):
            per_kind["differences"][f"{first} − {second}"] = {
                metric: bootstrap_mean((_values(conditions[first]["per_question"][metric])
                                        - _values(conditions[second]["per_question"][metric]))[index], resamples)
                for metric in COMPARED}
        summary[kind] = per_kind
    return summary


def differences(conditions: dict) -> list[tuple[str, str]]:
    """The comparisons the report shows: memories vs none for each model, each other model vs the base with
    memories."""
    pairs = []
    models = list(dict.fromkeys(c["model"] for c in conditions.values()))
    for model in models:
        pairs.append((f"{model} with memories", f"{model} without memories"))
    for model in models[1:]:
        pairs.append((f"{model} with memories", f"{models[0]} with memories"))
    return pairs


def run_qa(config, base_model: str, adapters) -> dict:
    """The ``qa`` part of eval_report.json (see ``qa_report.py``)."""
    started = time.perf_counter()
    questions, counts = load_questions(config)
    if not questions:
        raise EvalInputError(
            f"no QA questions: the test split {config.test_file} has no PDF chunk or reply stating a fact whose "
            f"answer is not also in {config.train_file} ({counts}). Evaluate without --qa, or format more data.")
    log.info("%d QA questions (%s)", len(questions), counts)
    models = [("base", base_model, None), *((a.name, base_model, str(a.path)) for a in adapters),
              *((extra, extra, None) for extra in config.qa_extra_models)]
    conditions, retrieval = run_models(config, models, questions)
    return {"questions": [q.as_dict() for q in questions], "counts": counts,
            "settings": {"max_new_tokens": config.qa_max_new_tokens, "k": retrieval["k"],
                         "memory_dir": config.memory_dir, "pdf_texts": config.pdf_texts,
                         "chat": {key: value for key, value in vars(chat_config(config, base_model)).items()
                                  if key in ("system_prompt", "repetition_penalty", "min_score", "context_tokens",
                                             "diversity", "temperature")}},
            "retrieval": retrieval, "conditions": conditions,
            "summary": summarize(questions, conditions, retrieval), "seconds": time.perf_counter() - started}
