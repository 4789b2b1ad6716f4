"""What the stages after the first read: conversation exports and ``pdf_texts.json``, told apart per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rhizome.config import option
from rhizome.ingest import DEFAULT_CONVERSATION_FILES, IngestReport, InputLimits, detect_format
from rhizome.pdf import PdfTextsError, load_pdf_texts

DEFAULT_PDF_TEXTS = "pdf_texts.json"
INPUTS_HELP = ("conversation exports (ChatGPT, Claude, custom JSON, chat JSONL; files, .zip or folders) and "
               f"pdf_texts.json files; default: whichever of {', '.join(DEFAULT_CONVERSATION_FILES)}, "
               f"{DEFAULT_PDF_TEXTS} exist here")


@dataclass
class InputOptions:
    """The caps on bad input, as flags of every stage that reads conversation exports (a stage's config
    dataclass inherits them). What is over a cap is reported by name, never silently cut."""

    max_message_chars: int = option(InputLimits.max_message_chars,
                                    "leave out (and report) messages longer than this many characters")
    max_member_mb: int = option(InputLimits.max_member_mb,
                                "skip (and report) a zip member that expands to more than this many MB")
    max_compression_ratio: int = option(InputLimits.max_compression_ratio,
                                        "skip (and report) a zip member over 1 MB that expands more than this "
                                        "many times (a zip bomb; exports expand 5-10 times)")

    def input_limits(self) -> InputLimits:
        return InputLimits(max_message_chars=self.max_message_chars, max_member_mb=self.max_member_mb,
                           max_compression_ratio=self.max_compression_ratio)


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
