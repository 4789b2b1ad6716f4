"""Preference accuracy on the held-out preference pairs (``dataset_preferences_test.jsonl``).

For each model (base, each adapter): the summed log-probability of the chosen reply minus that of the rejected
reply, given the same prompt (reply tokens only, as in training: ``rhizome.train.dpo.pair_logprobs``). Accuracy is
the share of pairs whose margin is positive (the model prefers what the person preferred); the mean margin is in
nats. Reported overall and per signal kind (regeneration, edit, rating) in ``eval_report.json``
(``"preferences"``) and ``eval_report.md``.

The summed log-probability favours the shorter reply (every token costs), and an abandoned reply the model sampled
itself is likely under it by construction, so each model is also scored per token (``per_token_accuracy``,
``per_token_margin``: from the replies' mean log-probability per token, the length-normalised comparison of ORPO
and SimPO): when the two accuracies disagree, reply length decides the summed one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rhizome.train.dpo import PreferenceData, has_pairs, load_preferences, pair_logprobs, preference_file


def test_file(config) -> Path | None:
    """The preference test file: ``--preference-file``, else the one beside ``--test-file`` when it holds pairs."""
    if config.preference_file:
        return Path(config.preference_file)
    path = preference_file(config.test_file, "test")
    return path if has_pairs(path) else None


def load(path: Path, tokenizer, max_seq_length: int, max_samples: int) -> tuple[PreferenceData, list[str]]:
    """The tokenised pairs (the first ``max_samples``, 0 = all) and each pair's signal kind."""
    data = load_preferences(path, tokenizer, max_seq_length, cache_dir=None)[0].subset(max_samples)
    kinds = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                kinds[str(row.get("id"))] = str(row.get("kind", "unknown"))
    return data, [kinds.get(pair_id, "unknown") for pair_id in data.ids]


def score(model, data: PreferenceData, kinds: list[str], pad_id: int, device, batch_size: int,
          max_seq_length: int) -> dict:
    """Accuracy and mean margin, overall and per kind, and each pair's margin (nats); the same per token."""
    values = pair_logprobs(model, data, pad_id, pairs_per_batch=max(1, batch_size // 2), capacity=max_seq_length,
                           device=device)
    margins = values["chosen"] - values["rejected"]
    per_token = values["chosen"] / values["chosen_tokens"] - values["rejected"] / values["rejected_tokens"]
    result = _summary(margins, per_token)
    result["per_kind"] = {}
    for kind in sorted(set(kinds)):
        chosen = np.array([k == kind for k in kinds], dtype=bool)
        result["per_kind"][kind] = _summary(margins[chosen], per_token[chosen])
    result["margins"] = [round(float(m), 4) for m in margins]
    result["per_token_margins"] = [round(float(m), 5) for m in per_token]
    result["reply_tokens"] = {side: float(values[f"{side}_tokens"].mean()) for side in ("chosen", "rejected")}
    return result


def _summary(margins: np.ndarray, per_token: np.ndarray) -> dict:
    if not len(margins):
        return {"pairs": 0, "accuracy": None, "mean_margin": None, "per_token_accuracy": None,
                "per_token_margin": None}
    return {"pairs": int(len(margins)), "accuracy": float((margins > 0).mean()), "mean_margin": float(margins.mean()),
            "per_token_accuracy": float((per_token > 0).mean()), "per_token_margin": float(per_token.mean())}


def markdown(section: dict) -> str:
    lines = ["## Preference accuracy", "",
             (f"Held-out preference pairs `{section['file']}`: {section['pairs']:,}. Accuracy: share of pairs where "
              "the model gives the chosen reply a higher log-probability than the rejected one; margin: mean "
              "difference of the two summed log-probabilities (nats). Per token: the same with each reply's mean "
              "log-probability per token, which reply length does not sway."), "",
             "| model | kind | pairs | accuracy | mean margin | accuracy per token | margin per token |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, model in section["models"].items():
        for kind, m in {"all": model, **model["per_kind"]}.items():
            lines.append(f"| {name} | {kind} | {m['pairs']:,} | {_pct(m['accuracy'])} | {_num(m['mean_margin'])} "
                         f"| {_pct(m['per_token_accuracy'])} | {_num(m['per_token_margin'])} |")
    return "\n".join(lines) + "\n"


def summary_lines(section: dict) -> list[str]:
    lines = [f"{'model':<32} {'preference pairs':>16} {'accuracy':>9} {'mean margin':>12} {'per token':>10}"]
    for name, m in section["models"].items():
        lines.append(f"{name:<32} {m['pairs']:>16} {_pct(m['accuracy']):>9} {_num(m['mean_margin']):>12} "
                     f"{_pct(m['per_token_accuracy']):>10}")
    return lines


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
