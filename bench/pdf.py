"""Stage-1 speed: ``pdf_to_json``'s pipeline with N workers against a plain single-process pypdf loop.

    python bench/pdf.py [--pdfs 24] [--pages 20] [--workers 2] [--repeat 3] [--input DIR]

Both sides read the same PDFs (generated into bench/out/pdfs unless --input names a
folder). The baseline is ``PdfReader(path).pages[i].extract_text()`` for every page,
nothing more; the pipeline also hashes, cleans, chunks and writes pdf_texts.json,
with reuse off so every file is read. Each side runs --repeat times, interleaved,
and the best time counts. Prints pages/s of each and the ratio.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

import pypdf

from rhizome.config import option, parse_args
from rhizome.pdf.pipeline import PdfConfig, find_pdfs, run
from samples.make_pdfs import SAMPLES, write_pdf


@dataclass
class BenchConfig:
    pdfs: int = option(24, "PDFs to generate")
    pages: int = option(20, "pages per generated PDF")
    workers: int = option(2, "pipeline worker processes")
    repeat: int = option(3, "timed runs of each side; the best counts")
    input: str = option("", "benchmark these PDFs instead of generating them", metavar="DIR")


def generate(folder: Path, pdfs: int, pages: int) -> Path:
    """``pdfs`` PDFs of ``pages`` full pages each, made of the sample paragraphs in a shuffled order."""
    paragraphs = [p for _, _, _, sample in SAMPLES.values() for page in sample for p in page if len(p) > 80]
    rng = random.Random(0)
    for index in range(pdfs):
        path = folder / f"doc{index:02d}.pdf"
        if path.exists():
            continue
        content = [[rng.choice(paragraphs) for _ in range(5)] for _ in range(pages)]
        write_pdf(path, content, title=f"Benchmark document {index}", author="bench/pdf.py",
                  header="Field Notes — benchmark", footer="Field Notes — page {page}")
    return folder


def plain_pypdf(folder: Path) -> int:
    pages = 0
    for _, path in find_pdfs(folder):
        reader = pypdf.PdfReader(path)
        for index in range(len(reader.pages)):
            reader.pages[index].extract_text()
            pages += 1
    return pages


def pipeline(folder: Path, workers: int, output: Path) -> int:
    report = run(PdfConfig(pdf_dir=str(folder), output=str(output), workers=workers, reuse=False))
    if report.skipped:
        raise SystemExit(f"benchmark input has unreadable PDFs: {report.skipped}")
    return report.pages_read


def timed(work) -> tuple[float, int]:
    started = time.perf_counter()
    pages = work()
    return time.perf_counter() - started, pages


def main() -> None:
    config, _ = parse_args(BenchConfig, __doc__.split("\n\n")[0])
    if config.input:
        folder = Path(config.input)
    else:
        folder = generate(ROOT / "bench" / "out" / f"pdfs_{config.pdfs}x{config.pages}", config.pdfs, config.pages)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(find_pdfs(folder))} PDFs in {folder}, {cores} CPU(s), pypdf {pypdf.__version__}")
    best_plain = best_ours = float("inf")
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "pdf_texts.json"
        for _ in range(config.repeat):
            seconds, plain_pages = timed(lambda: plain_pypdf(folder))
            best_plain = min(best_plain, seconds)
            seconds, our_pages = timed(lambda: pipeline(folder, config.workers, output))
            best_ours = min(best_ours, seconds)
    assert plain_pages == our_pages, (plain_pages, our_pages)
    plain_rate, our_rate = plain_pages / best_plain, our_pages / best_ours
    print(f"plain pypdf, 1 process : {plain_pages} pages in {best_plain:6.2f} s = {plain_rate:7.1f} pages/s")
    print(f"pipeline, {config.workers} worker(s)  : {our_pages} pages in {best_ours:6.2f} s = "
          f"{our_rate:7.1f} pages/s (extract + clean + chunk + write)")
    print(f"ratio pipeline / plain : {our_rate / plain_rate:.2f}x")


if __name__ == "__main__":
    main()
