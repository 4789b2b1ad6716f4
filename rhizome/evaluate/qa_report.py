"""The grounded QA part of the evaluation report: ``eval_report.json``'s ``qa`` key, its tables and its plot.

``qa``::

    {"questions": [{"id", "kind": "pdf"|"conversation", "question", "answer", "span_kind", "sentence",
                    "source_id", "source": {"split", "file", "chunk_index", ... | "pair_id"}}...],
     "counts": {"pdf" | "conversation": {"made", "asked"}},
     "settings": {"max_new_tokens", "k", "memory_dir", "pdf_texts", "chat": {the chat settings used}},
     "retrieval": {"k", "retrieved": [[memory text...] per question], "gold_retrieved": [bool...],
                   "gold_in_top_k": [bool...]},
     "conditions": {"<model> with|without memories": {"model", "memories", "adapter", "base_model", "seconds",
                    "answers": [str...], "per_question": {"exact_match" | "token_f1" | "faithfulness" |
                                                          "gold_logprob" | "gold_top1": [...]}}},
     "summary": {"all" | "pdf" | "conversation": {"questions", "recall_at_k", "top_k_search_recall",
                 "conditions": {label: {metric: {"mean", "low", "high", "n"}}},
                 "differences": {"A − B": {"exact_match" | "gold_logprob" | "gold_top1":
                                           {"mean", "low", "high", "n"}}}}},
     "seconds": float}

``gold_retrieved``: the chat's retrieval (MMR, score floor, token budget) put the fact's sentence in the prompt;
``gold_in_top_k``: it is among the plain top-k nearest memories (what retrieval had to choose from).
``gold_logprob`` / ``gold_top1``: the gold span teacher-forced as the reply to the session's own prompt
(``qa_likelihood.py``): mean log-probability per token (nats), and whether its first token is the model's top-1.
Intervals are 95% percentile intervals of a paired bootstrap over questions (2,000 resamples).
"""

from __future__ import annotations

KINDS = ("all", "pdf", "conversation")


# How each metric is shown: (scale, unit, decimals); log-probabilities are nats per token, the rest shares.
FORMATS = {"gold_logprob": (1, "", 2)}
DIFFERENCE_NAMES = {"exact_match": "exact match (percentage points)",
                    "gold_logprob": "gold log-prob per token (nats; > 0: the first condition finds the gold likelier)",
                    "gold_top1": "gold first token top-1 (percentage points)"}


def _interval(stat: dict, metric: str = "") -> str:
    if stat["mean"] is None:
        return "n/a"
    scale, unit, decimals = FORMATS.get(metric, (100, "%", 1))
    return (f"{scale * stat['mean']:.{decimals}f}{unit} "
            f"[{scale * stat['low']:.{decimals}f}, {scale * stat['high']:.{decimals}f}]")


def accuracy_of(qa: dict, label: str, kind: str = "all") -> dict:
    return qa["summary"][kind]["conditions"][label]["exact_match"]


def to_markdown(qa: dict) -> str:
    summary = qa["summary"]
    settings = qa["settings"]
    k = settings["k"]
    lines = [
        "## Grounded question answering", "",
        (f"{summary['all']['questions']} questions with known answers ({summary['pdf']['questions']} from PDF chunks, "
         f"{summary['conversation']['questions']} from conversation replies of the held-out splits; cloze "
         f"questions over a sentence's number, name or key term, none whose answer occurs in the training split), "
         f"asked through the chat's own retrieval and prompt; greedy, at most {settings['max_new_tokens']} new "
         f"tokens. Exact match: the gold span appears in the answer (normalised). Faithfulness: share of the "
         f"answer's content words (not in the question) found in the memories retrieved for the question; "
         f"without memories it measures chance overlap. Gold log-prob: the gold span teacher-forced as the reply "
         f"to the very prompt the chat built, by the chat's engine: mean log-probability per token (nats, higher "
         f"is better), and how often its first token is the model's top-1. 95% paired-bootstrap intervals in "
         f"brackets."), "",
        "| condition | questions | exact match | token F1 | faithfulness | gold log-prob/token | gold top-1 | "
        "PDF exact match | conversation exact match |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in qa["conditions"]:
        stats = summary["all"]["conditions"][label]
        lines.append(
            f"| {label} | {summary['all']['questions']} | {_interval(stats['exact_match'])} | "
            f"{_interval(stats['token_f1'])} | {_interval(stats['faithfulness'])} | "
            f"{_interval(stats['gold_logprob'], 'gold_logprob')} | {_interval(stats['gold_top1'])} | "
            f"{_interval(accuracy_of(qa, label, 'pdf'))} | {_interval(accuracy_of(qa, label, 'conversation'))} |")
    for metric, name in DIFFERENCE_NAMES.items():
        lines += ["", f"Paired differences in {name}:", "", "| comparison | all | PDF | conversation |",
                  "|---|---:|---:|---:|"]
        for pair in summary["all"]["differences"]:
            lines.append(f"| {pair} | " + " | ".join(_interval(summary[kind]["differences"][pair][metric], metric)
                                                     for kind in KINDS) + " |")
    lines += ["", f"Retrieval: the fact's sentence was among the memories the chat put in the prompt (recall@{k}) / "
                  f"among the {k} nearest memories:", "",
              "| questions | recall@k (chat) | in top k (search) |", "|---|---:|---:|"]
    for kind in KINDS:
        s = summary[kind]
        lines.append(f"| {kind} ({s['questions']}) | {_interval(s['recall_at_k'])} | "
                     f"{_interval(s['top_k_search_recall'])} |")
    return "\n".join(lines) + "\n"


def summary_lines(qa: dict) -> list[str]:
    k = qa["settings"]["k"]
    summary = qa["summary"]
    lines = [f"Grounded QA: {summary['all']['questions']} questions ({summary['pdf']['questions']} PDF); "
             f"retrieval recall@{k} {_interval(summary['all']['recall_at_k'])}, "
             f"PDF {_interval(summary['pdf']['recall_at_k'])}",
             f"{'condition':<40} {'exact match [95% CI]':>24} {'token F1':>10} {'faithful':>9} "
             f"{'gold log-prob/token [95% CI]':>30} {'gold top-1':>10}"]
    for label in qa["conditions"]:
        stats = summary["all"]["conditions"][label]
        f1, faith, top1 = (stats[metric]["mean"] for metric in ("token_f1", "faithfulness", "gold_top1"))
        lines.append(f"{label:<40} {_interval(stats['exact_match']):>24} "
                     f"{'n/a' if f1 is None else f'{f1:.3f}':>10} {'n/a' if faith is None else f'{faith:.3f}':>9} "
                     f"{_interval(stats['gold_logprob'], 'gold_logprob'):>30} "
                     f"{'n/a' if top1 is None else f'{100 * top1:.1f}%':>10}")
    for pair, stats in summary["all"]["differences"].items():
        lines.append(f"gold log-prob/token, {pair}: {_interval(stats['gold_logprob'], 'gold_logprob')}")
    return lines


def headline(qa: dict) -> str | None:
    """One line for the run summary: the last adapter with memories, next to the base with memories (exact match and
    gold log-prob per token)."""
    with_memories = [label for label, c in qa["conditions"].items() if c["memories"] and c["adapter"]]
    if not with_memories:
        return None
    label = with_memories[-1]
    base = next((lab for lab, c in qa["conditions"].items() if c["memories"] and c["model"] == "base"), None)
    stats = qa["summary"]["all"]["conditions"]
    line = (f"Grounded QA ({qa['summary']['all']['questions']} questions): {label} "
            f"{_interval(accuracy_of(qa, label))} exact match, gold log-prob/token "
            f"{_interval(stats[label]['gold_logprob'], 'gold_logprob')}")
    if base:
        line += (f" (base with memories {_interval(accuracy_of(qa, base))}, "
                 f"{_interval(stats[base]['gold_logprob'], 'gold_logprob')})")
    return line
