"""Text of a PDF, page by page, cleaned into paragraphs with the page each character came from.

:func:`read_pdf` opens a file with pypdf and returns the raw text of every page, or
raises :class:`UnreadablePdf` with a reason a user can act on (empty, not a PDF,
encrypted, truncated, damaged, no text layer).

:func:`clean_pages` turns those page texts into one document string:

* a header or footer line is dropped when, with digits normalised ("Page 3 of 10"
  reads as "page # of #"), it stands among the first or last two lines of at least
  half the pages; only for documents of three pages or more;
* a word hyphenated at a line end is joined: "inter-" + "national" gives
  "international" when the next line starts lowercase; before an uppercase letter
  or a digit the hyphen is kept ("Franco-" + "Prussian" gives "Franco-Prussian").
  There is no dictionary, so a compound broken at its own hyphen ("well-" +
  "known") loses the hyphen;
* whitespace is normalised and the lines of a paragraph are joined with a space.
  pypdf's plain text keeps no blank lines between paragraphs, so a paragraph ends
  at a blank line, before a bullet, after a short line (under 80% of the
  document's usual line length) that ends a sentence or is followed by a capital,
  and before a short capitalised line without a full stop (a heading) that follows
  the end of a sentence. A paragraph whose last line is nearly full stays joined
  to the next: that costs only a preferred chunk border. Paragraphs are separated
  by a blank line ("\\n\\n").

``page_offsets[i]`` is where page ``i + 1`` starts in the cleaned text, so any span
of it maps back to the pages it came from (:func:`page_range`).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pypdf
from pypdf.errors import EmptyFileError, FileNotDecryptedError

HEADER_FOOTER_LINES = 2  # lines at each end of a page that may be a running header or footer
HEADER_FOOTER_MIN_PAGES = 3
SHORT_LINE_FRACTION = 0.8
MIN_TEXT_CHARS = 20  # fewer non-blank characters in the whole document means no usable text layer

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_DIGITS = re.compile(r"\d+")
_SENTENCE_END = re.compile(r"[.!?…:][\"'”’»)\]]*$")
_BULLET = re.compile(r"^(?:[•▪◦·‣∙*]|[-–—]\s|\(?\d{1,2}[.)]\s|\(?[a-z][.)]\s)")
_HYPHEN_BREAK = re.compile(r"[^\W\d_][-\u00ad]$")


class UnreadablePdf(Exception):
    """A file that yields no text; ``str(exc)`` says why and what to do."""


@dataclass
class PdfPages:
    pages: list[str]  # raw text of each page, in order
    title: str | None = None
    author: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class CleanText:
    text: str
    page_offsets: list[int]  # page_offsets[i]: index in ``text`` where page i + 1 starts
    empty_pages: int = 0


def read_pdf(path: str | Path) -> PdfPages:
    """Raw page texts and title/author of the PDF at ``path``; :class:`UnreadablePdf` says why not."""
    data = Path(path).read_bytes()
    if not data:
        raise UnreadablePdf("empty file (0 bytes); re-download or re-export it")
    if data.find(b"%PDF-", 0, 1024) < 0:
        start = data[:24].decode("latin-1").encode("unicode_escape").decode("ascii")
        raise UnreadablePdf(f"not a PDF (no %PDF- header; starts with '{start}'); convert it to PDF or remove it")
    warnings: list[str] = []
    with collect_pypdf_warnings(warnings):
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not _decrypted(reader):
                raise FileNotDecryptedError("the empty password did not open it")
            pages = [_page_text(page, number, warnings) for number, page in enumerate(reader.pages, start=1)]
        except FileNotDecryptedError:
            raise UnreadablePdf("encrypted with a password (the empty password did not open it); decrypt a copy "
                                "first, e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf") from None
        except EmptyFileError:
            raise UnreadablePdf("empty file; re-download or re-export it") from None
        except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds of error on a damaged file
            if b"%%EOF" not in data[-2048:]:
                raise UnreadablePdf(f"truncated (no %%EOF marker at the end; pypdf: {exc}); "
                                    "re-download or re-export it") from None
            raise UnreadablePdf(f"damaged PDF ({type(exc).__name__}: {exc}); re-export it, "
                                "or repair a copy, e.g. qpdf in.pdf out.pdf") from None
        if not pages:
            raise UnreadablePdf("the PDF has no pages")
        if sum(len(text.strip()) for text in pages) < MIN_TEXT_CHARS:
            failed = [warning for warning in warnings if warning.startswith("page ")]
            if failed:
                raise UnreadablePdf(f"damaged PDF: pypdf failed on {len(failed)} of its {len(pages)} page(s) "
                                    f"({failed[0]}); re-export it, or repair a copy, e.g. qpdf in.pdf out.pdf")
            raise UnreadablePdf(f"no text layer on any of its {len(pages)} page(s) (scanned?); "
                                "run OCR first, e.g. ocrmypdf in.pdf out.pdf")
        title, author = _metadata(reader, warnings)
    return PdfPages(pages=pages, title=title, author=author, warnings=warnings)


def _page_text(page: pypdf.PageObject, number: int, warnings: list[str]) -> str:
    try:
        return page.extract_text() or ""
    except Exception as exc:  # noqa: BLE001 - one broken page should not cost the rest of the document
        warnings.append(f"page {number}: {type(exc).__name__}: {exc}")
        return ""


def _decrypted(reader: pypdf.PdfReader) -> bool:
    # pypdf already tried the empty password when it opened the file; this makes that explicit.
    try:
        return reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
    except Exception:  # noqa: BLE001 - a damaged /Encrypt dictionary: treat as locked
        return False


def _metadata(reader: pypdf.PdfReader, warnings: list[str]) -> tuple[str | None, str | None]:
    try:
        meta = reader.metadata
        if meta is None:
            return None, None
        return _plain(meta.title), _plain(meta.author)
    except Exception as exc:  # noqa: BLE001 - metadata is optional: a broken info dictionary must not cost the text
        warnings.append(f"metadata: {type(exc).__name__}: {exc}")
        return None, None


def _plain(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(_CONTROL.sub("", str(value)).split())
    return text or None


def normalise_line(line: str) -> str:
    """One line with ligatures spelled out, control characters and inner soft hyphens removed, whitespace collapsed.

    A soft hyphen at the end of the line is kept: it marks a word broken across lines.
    """
    line = " ".join(_CONTROL.sub("", line.translate(_LIGATURES)).split())
    return line[:-1].replace("\u00ad", "") + line[-1:] if "\u00ad" in line else line


def _signature(line: str) -> str:
    return _DIGITS.sub("#", line.lower())


def drop_repeated_edge_lines(pages: list[list[str]]) -> list[list[str]]:
    """Remove running headers and footers: edge lines that repeat, digits aside, on half the pages or more."""
    if len(pages) < HEADER_FOOTER_MIN_PAGES:
        return pages
    counts: dict[str, int] = {}
    for lines in pages:
        for signature in {_signature(line) for line in _edge_lines(lines)}:
            counts[signature] = counts.get(signature, 0) + 1
    needed = max(HEADER_FOOTER_MIN_PAGES, math.ceil(len(pages) / 2))
    repeated = {signature for signature, count in counts.items() if count >= needed}
    if not repeated:
        return pages
    cleaned = []
    for lines in pages:
        nonblank = [i for i, line in enumerate(lines) if line]
        edges = set(nonblank[:HEADER_FOOTER_LINES] + nonblank[-HEADER_FOOTER_LINES:])
        cleaned.append([line for i, line in enumerate(lines) if i not in edges or _signature(line) not in repeated])
    return cleaned


def _edge_lines(lines: list[str]) -> list[str]:
    nonblank = [line for line in lines if line]
    return nonblank[:HEADER_FOOTER_LINES] + nonblank[-HEADER_FOOTER_LINES:]


def clean_pages(raw_pages: list[str]) -> CleanText:
    """One cleaned document from raw page texts, with the offset where each page starts."""
    pages = [[normalise_line(line) for line in text.splitlines()] for text in raw_pages]
    pages = drop_repeated_edge_lines(pages)
    lengths = sorted(len(line) for lines in pages for line in lines if line)
    usual = lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0
    short = SHORT_LINE_FRACTION * usual

    parts: list[str] = []
    length = 0
    offsets: list[int] = []
    previous = ""  # the last line written
    blank_since = False
    for lines in pages:
        offsets.append(-1)
        for line in lines:
            if not line:
                blank_since = True
                continue
            if not parts:
                separator = ""
            elif blank_since or _BULLET.match(line):
                separator = "\n\n"
            elif previous.endswith("\u00ad") or _HYPHEN_BREAK.search(previous):
                if previous.endswith("\u00ad") or line[0].islower():
                    parts[-1] = parts[-1][:-1]
                    length -= 1
                separator = ""
            elif len(previous) < short and (_SENTENCE_END.search(previous) or line[0].isupper()
                                            or line[0].isdigit()):
                separator = "\n\n"
            elif (_SENTENCE_END.search(previous) and len(line) < short and line[0].isupper()
                  and not _SENTENCE_END.search(line)):
                separator = "\n\n"  # a heading after a full last line
            else:
                separator = " "
            if offsets[-1] < 0:
                offsets[-1] = length + len(separator)
            parts.append(separator)
            parts.append(line)
            length += len(separator) + len(line)
            previous = line
            blank_since = False
        if offsets[-1] < 0:
            offsets[-1] = length
    empty_pages = sum(1 for lines in pages if not any(lines))
    return CleanText(text="".join(parts), page_offsets=offsets, empty_pages=empty_pages)


def page_range(start: int, end: int, page_offsets: list[int]) -> tuple[int, int]:
    """1-based first and last page of the text span ``[start, end)``."""
    first = bisect.bisect_right(page_offsets, start)
    last = bisect.bisect_right(page_offsets, max(start, end - 1))
    return first, last


@contextlib.contextmanager
def collect_pypdf_warnings(into: list[str]) -> Iterator[None]:
    """Gather pypdf's warnings about one file in ``into`` instead of printing them over the progress bar."""

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(record.getMessage())

    logger = logging.getLogger("pypdf")
    handler = _Collect(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
