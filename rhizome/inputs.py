"""What the stages after the first read: conversation exports and ``pdf_texts.json``, told apart per file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rhizome.ingest import DEFAULT_CONVERSATION_FILES, IngestReport, detect_format
from rhizome.pdf import PdfTextsError, load_pdf_texts

DEFAULT_PDF_TEXTS = "pdf_texts.json"
INPUTS_HELP = ("conversation exports (ChatGPT, Claude, custom JSON, chat JSONL; files, .zip or folders) and "
               f"pdf_texts.json files; default: whichever of {', '.join(DEFAULT_CONVERSATION_FILES)}, "
               f"{DEFAULT_PDF_TEXTS} exist here")


def default_inputs(folder: Path = Path(".")) -> list[str]:
    """The original's file names, those that exist in ``folder``."""
    names = (*DEFAULT_CONVERSATION_FILES, DEFAULT_PDF_TEXTS)
    return [str(folder / name) for name in names if (folder / name).exists()]


def split_inputs(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(conversation sources, pdf_texts files), by what each file holds rather than by its name."""
    pdf_files = [p for p in paths if Path(p).is_file() and detect_format(p) == "pdf_texts"]
    return [p for p in paths if p not in pdf_files], pdf_files


def load_pdf_chunks(pdf_files: Sequence[str], report: IngestReport) -> list[dict]:
    """Every chunk of every file; a file that cannot be read is reported and skipped."""
    chunks: list[dict] = []
    for path in pdf_files:
        try:
            chunks.extend(load_pdf_texts(path))
        except PdfTextsError as exc:
            report.error(path, str(exc))
    return chunks
