"""Per-question scores of the grounded QA evaluation, and paired bootstrap intervals over questions.

- ``exact_match``: the normalised gold span occurs, as whole words, in the normalised answer. Normalisation
  is SQuAD's (lower case, punctuation and the articles a / an / the removed, whitespace collapsed) after NFKC,
  with every character that is not a letter or digit counted as punctuation ("35 °C" and "35°C" both become
  "35 c"). A containment test rather than equality: a chat model answers in sentences.
- ``token_f1``: SQuAD's token F1 between the normalised answer and gold span.
- ``faithfulness``: of the answer's content words (normalised tokens, less English stop words and less the words
  of the question itself, which a model can echo without reading anything), the share that occur in the
  retrieved memories. Measured for every condition against the memories retrieval gives for the question, also
  when none were put in the prompt: the "without memories" value is what chance overlap looks like, so the
  difference is the part of the answer that came from the memories. None for an answer with no content words.
- ``gold_retrieved``: whether a retrieved memory contains the source sentence that states the fact
  (whitespace-normalised NFC text), i.e. the answer was in the prompt; recall@k is its mean over questions.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np

_NON_WORD = re.compile(r"[^\w\s]|_")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _NON_WORD.sub(" ", text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(answer: str, gold: str) -> bool:
    needle = normalize_answer(gold)
    return bool(needle) and f" {needle} " in f" {normalize_answer(answer)} "


def token_f1(answer: str, gold: str) -> float:
    predicted, expected = normalize_answer(answer).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected or common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def content_words(text: str) -> set[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # here: importing scikit-learn takes ~1 s

    return {w for w in normalize_answer(text).split() if w not in ENGLISH_STOP_WORDS}


def faithfulness(answer: str, question: str, retrieved: list[str]) -> float | None:
    words = content_words(answer) - content_words(question)
    if not words:
        return None
    support = content_words(" ".join(retrieved))
    return len(words & support) / len(words)


def gold_retrieved(sentence: str, retrieved: list[str]) -> bool:
    target = " ".join(unicodedata.normalize("NFC", sentence).split())
    return any(target in " ".join(unicodedata.normalize("NFC", text).split()) for text in retrieved)


def bootstrap_mean(values: np.ndarray, resamples: np.ndarray) -> dict:
    """Mean of ``values`` (NaN = not applicable, left out) and its 95% percentile interval over ``resamples``
    (rows of question indices drawn with replacement, shared by every condition: paired)."""
    values = np.asarray(values, dtype=float)
    valid = ~np.isnan(values)
    if not valid.any():
        return {"mean": None, "low": None, "high": None, "n": 0}
    filled = np.where(valid, values, 0.0)
    counts = valid[resamples].sum(axis=1)
    sums = filled[resamples].sum(axis=1)
    means = sums[counts > 0] / counts[counts > 0]
    low, high = np.percentile(means, [2.5, 97.5]) if len(means) else (np.nan, np.nan)
    return {"mean": float(filled.sum() / valid.sum()), "low": float(low), "high": float(high), "n": int(valid.sum())}


def resample_indices(n: int, rounds: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(rounds, n)) if n else np.zeros((rounds, 0), dtype=int)
