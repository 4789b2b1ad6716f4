"""The chunker: whole sentences, bounded size, sentence overlap, paragraph ends preferred."""

from __future__ import annotations

import itertools
import random

import pytest

from rhizome.pdf.chunking import chunk_spans, sentence_spans

WORDS = ["the", "bees", "keep", "a", "warm", "nest", "while", "cold", "winds", "blow", "over", "quiet", "frames",
         "of", "wax", "and", "honey"]


def document(paragraphs: int = 12, seed: int = 0) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(1, 7)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 25))]
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def sentences_of(text: str) -> set[tuple[int, int]]:
    return set(sentence_spans(text))


@pytest.mark.parametrize("chunk_size,overlap", [(200, 0), (300, 60), (1000, 150)])
def test_chunks_are_runs_of_whole_sentences_within_the_size(chunk_size, overlap):
    text = document()
    sentences = sorted(sentences_of(text))
    starts, ends = {s for s, _ in sentences}, {e for _, e in sentences}
    spans = chunk_spans(text, chunk_size, overlap)
    assert spans
    for start, end in spans:
        assert end - start <= chunk_size
        assert start in starts and end in ends, text[start:end]
    covered = set()
    for start, end in spans:
        covered.update(s for s in sentences if start <= s[0] and s[1] <= end)
    assert covered == set(sentences), "every sentence is in some chunk"


def test_consecutive_chunks_overlap_by_whole_sentences_up_to_the_limit():
    text = document(paragraphs=20, seed=1)
    spans = chunk_spans(text, 400, 120)
    overlaps = 0
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start > spans[0][0]
        if next_start < end:
            overlaps += 1
            assert end - next_start <= 120
            assert next_start in {s for s, _ in sentence_spans(text)}
    assert overlaps >= len(spans) // 2, "short sentences should mostly give an overlap"
    assert all(b[0] > a[0] and b[1] > a[1] for a, b in itertools.pairwise(spans)), "chunks move forward"


def test_no_overlap_when_zero():
    text = document(seed=2)
    spans = chunk_spans(text, 300, 0)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))


def test_a_chunk_ends_at_a_paragraph_end_when_half_full():
    first = "First paragraph sentence one. " * 12  # ~360 chars
    second = "Second paragraph goes on and on. " * 12  # ~400 chars
    text = first.strip() + "\n\n" + second.strip()
    (start, end), *_ = chunk_spans(text, 600, 0)
    assert text[start:end] == first.strip()


def test_a_chunk_does_not_end_with_a_heading():
    text = ("Body sentence number one here. " * 15).strip() + "\n\nNext Section\n\n" + ("More text. " * 30).strip()
    spans = chunk_spans(text, 600, 0)
    assert not text[spans[0][0]:spans[0][1]].endswith("Next Section")
    assert text[spans[1][0]:spans[1][1]].startswith("Next Section")


def test_a_sentence_longer_than_the_size_is_split_at_spaces():
    text = "Word " * 500 + "end."
    spans = chunk_spans(text, 200, 50)
    assert all(end - start <= 200 for start, end in spans)
    assert all(text[start:end].strip() == text[start:end] for start, end in spans)
    assert " ".join(text[s:e] for s, e in spans).split() == text.split()


def test_sentence_splitting_keeps_abbreviations_and_decimals():
    text = "Dr. Smith measured 35.5 °C, e.g. in May. Then it rained! Did it stop? Yes."
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "Dr. Smith measured 35.5 °C, e.g. in May.", "Then it rained!", "Did it stop?", "Yes."]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        chunk_spans("Text.", 0, 0)
