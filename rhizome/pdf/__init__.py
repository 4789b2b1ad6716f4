"""PDFs -> text chunks with their file and pages (stage 1, ``pdf_to_json.py``).

``extract`` reads and cleans page text, ``chunking`` splits it, ``pipeline`` runs
files in parallel and incrementally and owns the ``pdf_texts.json`` format, which
later stages read with :func:`load_pdf_texts`.
"""

from rhizome.pdf.pipeline import FORMAT, PdfConfig, PdfTextsError, load_pdf_texts, run

__all__ = ["FORMAT", "PdfConfig", "PdfTextsError", "load_pdf_texts", "run"]
