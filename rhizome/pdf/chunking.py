"""Split a document into chunks of about ``chunk_size`` characters along paragraphs and sentences.

Paragraphs are separated by a blank line. A chunk is a run of whole sentences:
sentences are packed greedily up to ``chunk_size`` characters, and when that would
cut a paragraph the chunk ends at the last paragraph end instead, provided the
chunk is still at least half full; nor does a chunk end with a heading (a
one-sentence paragraph without closing punctuation) when it can end before it.
Each chunk after the first starts with the last whole sentences of the one
before, at most ``overlap`` characters of them, so a thought cut by a chunk
border is read whole in one of the two chunks.

A sentence longer than ``chunk_size`` is the only thing split inside: at spaces,
or anywhere in a "word" longer than ``chunk_size``.

Chunks are returned as ``(start, end)`` spans of the input text, so the caller can
map them back to pages; the chunk text is ``text[start:end]``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_OVERLAP = 150
MIN_FILL = 0.5  # end a chunk early at a paragraph end only once it is at least this full

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+")
_NOT_SENTENCE_END = frozenset(
    ("e.g", "i.e", "etc", "vs", "cf", "al", "approx", "ca", "fig", "figs", "eq", "vol", "pp", "p", "ch", "sec",
     "dr", "mr", "mrs", "ms", "prof", "st", "jr", "sr", "inc", "ltd", "co")
)


class Unit(NamedTuple):
    start: int
    end: int
    paragraph: int


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence in ``text[start:end]``, without surrounding whitespace."""
    end = len(text) if end is None else end
    spans = []
    sentence_start = start
    for match in _SENTENCE_END.finditer(text, start, end):
        after = match.end()
        if after >= end or not _starts_sentence(text, after) or _is_abbreviation(text, sentence_start, match.start()):
            continue
        spans.append((sentence_start, match.start() + len(match.group().rstrip())))
        sentence_start = after
    tail = text[sentence_start:end].rstrip()
    if tail.strip():
        spans.append((sentence_start, sentence_start + len(tail)))
    return spans


def _starts_sentence(text: str, at: int) -> bool:
    first = text[at]
    if first in "\"'“‘«([" and at + 1 < len(text):
        first = text[at + 1]
    return first.isupper() or first.isdigit()


def _is_abbreviation(text: str, sentence_start: int, dot: int) -> bool:
    space = max(text.rfind(" ", sentence_start, dot), text.rfind("\n", sentence_start, dot))
    word_start = space + 1 if space >= 0 else sentence_start
    word = text[word_start:dot].lstrip("(\"'“‘").lower()
    return word in _NOT_SENTENCE_END or (len(word) == 1 and word.isalpha())


def units(text: str, max_chars: int) -> list[Unit]:
    """Sentences of ``text`` tagged with their paragraph; none longer than ``max_chars``."""
    result: list[Unit] = []
    paragraph_start = 0
    breaks = [(m.start(), m.end()) for m in _PARAGRAPH_BREAK.finditer(text)] + [(len(text), len(text))]
    for paragraph, (break_start, break_end) in enumerate(breaks):
        for start, end in sentence_spans(text, paragraph_start, break_start):
            start += len(text[start:end]) - len(text[start:end].lstrip())
            result.extend(Unit(s, e, paragraph) for s, e in _split_long(text, start, end, max_chars))
        paragraph_start = break_end
    return result


def _split_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    pieces = []
    while end - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars + 1)
        if cut <= start:
            cut = start + max_chars
            pieces.append((start, cut))
            start = cut
        else:
            pieces.append((start, cut))
            start = cut + 1
        while start < end and text[start].isspace():
            start += 1
    pieces.append((start, end))
    return pieces


def chunk_spans(text: str, chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_OVERLAP,
                ) -> list[tuple[int, int]]:
    """``(start, end)`` of each chunk of ``text``, in order (see the module docstring)."""
    if chunk_size < 1 or overlap < 0:
        raise ValueError(f"chunk_size must be >= 1 and overlap >= 0, got {chunk_size} and {overlap}")
    pieces = units(text, chunk_size)
    spans = []
    first = 0
    while first < len(pieces):
        last = first
        while last + 1 < len(pieces) and pieces[last + 1].end - pieces[first].start <= chunk_size:
            last += 1
        if not _ends_paragraph(pieces, last) or _is_heading(text, pieces, last):
            for candidate in range(last - 1, first - 1, -1):
                if pieces[candidate].end - pieces[first].start < MIN_FILL * chunk_size:
                    break
                if _ends_paragraph(pieces, candidate) and not _is_heading(text, pieces, candidate):
                    last = candidate
                    break
        spans.append((pieces[first].start, pieces[last].end))
        if last + 1 == len(pieces):
            break
        following = pieces[last + 1].end
        next_first = last + 1
        while (next_first - 1 > first and pieces[last].end - pieces[next_first - 1].start <= overlap
               and following - pieces[next_first - 1].start <= chunk_size):
            next_first -= 1
        first = next_first
    return spans


def _is_heading(text: str, pieces: list[Unit], index: int) -> bool:
    """A one-sentence paragraph without closing punctuation: it belongs with the text after it."""
    alone = _ends_paragraph(pieces, index) and (index == 0 or pieces[index - 1].paragraph != pieces[index].paragraph)
    return alone and text[pieces[index].end - 1] not in ".!?…:;\"'”’»)]"


def _ends_paragraph(pieces: list[Unit], index: int) -> bool:
    return index + 1 == len(pieces) or pieces[index + 1].paragraph != pieces[index].paragraph
