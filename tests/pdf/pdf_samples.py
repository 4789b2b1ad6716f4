"""PDFs for the stage-1 tests: pages with page-marker words, scans, encrypted files."""

from __future__ import annotations

import io
import re
from pathlib import Path

TOPICS = ["hives", "smoke", "frames", "queens", "comb", "nectar", "pollen", "drones", "wax", "swarms"]


MARKER = re.compile(r"\bkw([a-j]{2})\b")


def marker(page: int) -> str:
    """A word naming a page in letters, so digit-blind header detection still sees lines differ: 3 -> "kwad"."""
    return "kw" + "".join(chr(ord("a") + int(digit)) for digit in f"{page:02d}")


def marked_page_numbers(text: str) -> list[int]:
    """The pages named by the markers in ``text``, in order."""
    return [int("".join(str(ord(c) - ord("a")) for c in m)) for m in MARKER.findall(text)]


def marked_pages(count: int, sentences_per_page: int = 6) -> list[list[str]]:
    """Pages of two paragraphs whose every sentence names its page with :func:`marker`."""
    pages = []
    for page in range(1, count + 1):
        sentences = [
            f"{TOPICS[(page + i) % len(TOPICS)].capitalize()} were noted {i + 1} times beside {marker(page)} "
            f"during the {['spring', 'summer', 'autumn'][(page + i) % 3]} visit of {marker(page)}."
            for i in range(sentences_per_page)
        ]
        pages.append([" ".join(sentences[:3]), " ".join(sentences[3:])])
    return pages


def scanned_pdf(path: Path) -> Path:
    """Two pages that hold only an image, like a scan without OCR, and no text."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    pdf = FPDF()
    for _ in range(2):
        image = Image.new("L", (200, 120), 255)
        ImageDraw.Draw(image).text((10, 50), "scanned words", fill=0)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pdf.add_page()
        pdf.image(buffer, x=10, y=10, w=180)
    pdf.output(str(path))
    return path


def encrypted_pdf(path: Path, user_password: str) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_encryption(owner_password="owner-secret", user_password=user_password)
    pdf.set_font("helvetica", size=11)
    for page in range(2):
        pdf.add_page()
        pdf.multi_cell(0, 6, f"Encrypted page {page + 1} talks about locked boxes and hidden keys. " * 3)
    pdf.output(str(path))
    return path
