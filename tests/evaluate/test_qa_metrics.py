"""Each QA metric on hand-made answers whose right score is known."""

import numpy as np
import pytest

from rhizome.evaluate.qa_metrics import (bootstrap_mean, exact_match, faithfulness, gold_retrieved,
                                         normalize_answer, resample_indices, token_f1)


def test_normalisation_ignores_case_punctuation_articles_and_unit_spacing():
    assert normalize_answer("The brood nest: 35°C!") == normalize_answer("brood nest 35 °C") == "brood nest 35 c"


@pytest.mark.parametrize("answer, gold, expected", [
    ("The bees keep it at about 35 °C.", "35 °C", True),
    ("about 35°C", "35 °C", True),
    ("A friend in Bavaria.", "Bavaria", True),
    ("She lives in Bavarian woods.", "Bavaria", False),  # whole words only
    ("about 135 °C", "35 °C", False),
    ("I do not know.", "35 °C", False),
    ("anything", "", False),
])
def test_exact_match(answer, gold, expected):
    assert exact_match(answer, gold) is expected


def test_token_f1():
    assert token_f1("three days", "three days") == 1.0
    assert token_f1("within three days", "three days") == pytest.approx(0.8)  # precision 2/3, recall 1
    assert token_f1("two weeks", "three days") == 0.0
    assert token_f1("", "three days") == 0.0


def test_faithfulness_counts_answer_words_found_in_the_memories_but_not_in_the_question():
    question = "What temperature do oyster mushrooms need?"
    memories = ["Oyster mushrooms fruit best between 15 and 21 °C with fresh air."]
    # content words of the answer less the question's: {fruit, 15, 21, c, humid}; in the memories: 4 of 5
    assert faithfulness("Oyster mushrooms fruit at 15 to 21 °C, humid.", question, memories) == pytest.approx(0.8)
    assert faithfulness("Around 9 inches per year.", question, memories) == 0.0
    assert faithfulness("Oyster mushrooms?", question, memories) is None  # nothing but the question's words
    assert faithfulness("They fruit at 15 °C.", question, []) == 0.0


def test_gold_retrieved_looks_for_the_source_sentence_across_whitespace():
    sentence = "Cut a small X, about 3 cm, right where they appear."
    assert gold_retrieved(sentence, ["other", "When pins form:\nCut a small X,  about 3 cm, right where they appear."])
    assert not gold_retrieved(sentence, ["Cut a small X right where they appear."])
    assert not gold_retrieved(sentence, [])


def test_bootstrap_intervals_are_paired_and_skip_missing_values():
    resamples = resample_indices(4, rounds=500, seed=1)
    constant = bootstrap_mean(np.array([1.0, 1.0, 1.0, 1.0]), resamples)
    assert constant == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 4}
    with_gap = bootstrap_mean(np.array([1.0, np.nan, 0.0, 1.0]), resamples)
    assert with_gap["n"] == 3 and with_gap["mean"] == pytest.approx(2 / 3)
    assert 0.0 <= with_gap["low"] <= with_gap["mean"] <= with_gap["high"] <= 1.0
    # The same questions are drawn for both conditions: a difference present on every question has no spread.
    a, b = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, -1.0, 0.0, -1.0])
    assert bootstrap_mean(a - b, resamples) == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 4}
    assert bootstrap_mean(np.array([np.nan, np.nan]), resample_indices(2))["mean"] is None
