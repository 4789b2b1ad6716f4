"""Stage 1: turn a folder of PDFs into ``pdf_texts.json``, chunks of text with their file and pages.

    python pdf_to_json.py PDFs/ [-o pdf_texts.json] [--workers N] [--chunk-size 1000] [--overlap 150] [--strict]

The output format is documented in ``rhizome/pdf/pipeline.py``.
"""

from __future__ import annotations

import sys

from rhizome.config import parse_args
from rhizome.errors import run_main
from rhizome.log import setup_logging
from rhizome.pdf.pipeline import CONFIG_FILE_NAME, PdfConfig, format_summary, run

DESCRIPTION = """\
Extract the text of every PDF in PDF_DIR with pypdf, clean it (running headers and
footers dropped, hyphenated line ends joined, paragraphs rebuilt) and split it into
chunks of about --chunk-size characters that end at sentence ends and prefer
paragraph ends, consecutive chunks sharing up to --overlap characters of whole
sentences. Each chunk records its file, first and last page (1-based), index,
length, the file's sha256 and the PDF's title and author."""

EPILOG = f"""\
PDFs are read in parallel (--workers processes). A rerun reuses the chunks of PDFs
whose sha256 and chunk settings have not changed, reads new and changed ones and
drops removed ones. A PDF that cannot be read (empty, not a PDF, encrypted with a
password, truncated or damaged, no text layer as in a scan, a crash or --timeout) is
skipped and listed with the reason at the end; the others are written anyway, and
--strict then exits with status 1. The effective settings are saved beside the
output as {CONFIG_FILE_NAME}. Set RHIZOME_NO_PROGRESS=1 to hide the progress bar."""


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    config, _ = parse_args(PdfConfig, DESCRIPTION, argv, epilog=EPILOG)
    setup_logging(config.verbose)
    report = run(config)
    print(format_summary(report))
    if config.strict and report.skipped:
        print(f"error: --strict: {len(report.skipped)} PDF(s) skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
