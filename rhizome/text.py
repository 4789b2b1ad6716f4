"""Text normalisation shared by the stages that embed or train on text.

The memory (``batch_embedder.py``) and the formatter (``data_formatter.py``) both
pass every turn and PDF chunk through :func:`normalise_text`, so a text they share
has one form, one hash and one vector: the formatter finds the memory's vector
instead of embedding a copy that differs only in whitespace.
"""

from __future__ import annotations

import re
import unicodedata

# NFC, not NFKC: NFC only composes canonically equivalent sequences (e + U+0301 -> é), so text that looks the same
# compares the same and nothing visible changes. NFKC also folds "compatibility" characters, which rewrites
# meaning in code and maths: x² -> x2, ½ -> 1⁄2, 𝑓 -> f, ™ -> TM, full-width punctuation in CJK text -> ASCII.
NORMAL_FORM = "NFC"

# Invisible characters that only break tokenisation and exact matching. U+200D (zero-width joiner) also glues
# emoji sequences (👨‍👩‍👧 becomes three emoji) and U+200C shapes some Persian and Indic words; losing that is
# cosmetic, while stray ones pasted from web pages and PDFs are common.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
NON_BREAKING_SPACES = "\u00a0\u2007\u202f"
LINE_SEPARATORS = "\u2028\u2029\u0085"

_LINE_SEPARATOR = re.compile(f"[{LINE_SEPARATORS}]")
_NON_BREAKING_SPACE = re.compile(f"[{NON_BREAKING_SPACES}]")
_INVISIBLE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{ZERO_WIDTH}]")  # controls but \t and \n, zero-widths
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
# More than two blank lines in a row become two: two is what PEP 8 puts between functions, so code keeps its shape.
_BLANK_RUN = re.compile(r"\n{4,}")
_INDENTED_CODE = re.compile(r" {4}|\t")


def normalise_text(text: str) -> str:
    """``text`` in NFC, without invisible and control characters, with tidy line ends and blank lines.

    Zero-width characters and control characters (except newline and tab) are
    removed, ``\\r\\n``/``\\r`` and Unicode line separators become ``\\n``,
    non-breaking spaces become spaces, trailing spaces and tabs of each line go,
    runs of more than two blank lines become two, and leading blank lines and
    trailing whitespace are stripped. Indentation is kept, including that of the
    first line when it starts an indented code block (four spaces or a tab);
    otherwise leading spaces of the first line go too.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():
        text = _NON_BREAKING_SPACE.sub(" ", _LINE_SEPARATOR.sub("\n", text))
        if not unicodedata.is_normalized(NORMAL_FORM, text):
            text = unicodedata.normalize(NORMAL_FORM, text)
    text = _INVISIBLE.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUN.sub("\n\n\n", text).rstrip()
    text = text.lstrip("\n")
    if not _INDENTED_CODE.match(text):
        text = text.lstrip()
    return text
