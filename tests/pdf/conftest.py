"""Stage-1 test setup: no progress bars, and a maker of small readable PDFs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

from pdf_samples import marked_pages

from samples.make_pdfs import write_pdf


@pytest.fixture
def good_pdf(tmp_path: Path):
    """Write a small readable PDF: ``good_pdf("a.pdf", pages=3)``."""

    def make(name: str, pages: int = 3, title: str | None = "A title", author: str | None = "An Author",
             folder: Path = tmp_path / "pdfs", word: str = "") -> Path:
        content = marked_pages(pages)
        if word:
            content[0].append(f"This copy was edited and mentions {word}.")
        return write_pdf(folder / name, content, title=title, author=author, font=None)

    return make


