"""Stage 1: a folder of PDFs -> ``pdf_texts.json``, chunks of their text with the file and pages each came from.

Files are read in parallel worker processes (one PDF per task); a PDF that cannot
be read is skipped with a reason, and a worker that crashes or runs past
``--timeout`` costs only its own file. A rerun reuses the chunks of every PDF whose
sha256 and chunk settings are unchanged, so only new and changed files are read
(and those skipped last time, in case the cause was fixed).

``pdf_texts.json`` (written atomically; key order as below)::

    {
      "format": "rhizome.pdf_texts",
      "version": 1,
      "config": {"chunk_size": 1000, "overlap": 150,         # the settings the chunks were made with;
                 "cleanup_version": 1, "pypdf_version": "..."},  # a change re-extracts every file
      "files": [                                              # every PDF found, sorted by path
        {"file": "sub/a.pdf",          # path relative to the input folder, "/" separated
         "sha256": "...",              # of the file's bytes
         "pages": 12,                  # null when skipped
         "title": "...", "author": "...",   # from the PDF's metadata, null when absent
         "status": "new",              # this run: "new", "changed", "reused" or "skipped"
         "chunks": 31,                 # number of chunks
         "empty_pages": 0}             # pages without text (scanned pages?)
      ],
      "chunks": [                                             # file by file, in order
        {"id": "sub/a.pdf#0",          # source_file + "#" + chunk_index
         "text": "...",                # paragraphs separated by a blank line
         "source_file": "sub/a.pdf",
         "page_start": 1, "page_end": 2,    # 1-based physical pages the text came from
         "chunk_index": 0,             # position within the file, from 0
         "char_count": 987,            # len(text)
         "sha256": "...", "title": "...", "author": "...",
         "source": "pdf"}
      ],
      "skipped": [{"file": "scan.pdf", "reason": "no text layer ... run OCR first ..."}]
    }

:func:`load_pdf_texts` reads it back as the list of chunks (it also accepts a bare
JSON list of chunk objects with a ``"text"`` key, as older tools wrote).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pypdf

from rhizome import atomic
from rhizome.config import option, save_config
from rhizome.device import available_cpus
from rhizome.errors import UserError
from rhizome.log import get_logger, progress
from rhizome.pdf.chunking import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP, chunk_spans
from rhizome.pdf.extract import UnreadablePdf, clean_pages, page_range, read_pdf

FORMAT = "rhizome.pdf_texts"
VERSION = 1
CLEANUP_VERSION = 1  # bump when extraction or chunking changes its output, so old chunks are not reused
CONFIG_FILE_NAME = "pdf_to_json_config.json"
EXTRACTED = ("new", "changed", "reused")  # statuses of files whose chunks are in the output

log = get_logger(__name__)


@dataclass
class PdfConfig:
    pdf_dir: str = option("PDFs", "folder of PDFs, searched recursively (hidden files and folders are ignored), "
                          "or a single PDF", positional=True, metavar="PDF_DIR")
    output: str = option("pdf_texts.json", "JSON file to write; its settings are saved beside it in "
                         f"{CONFIG_FILE_NAME}", flag="-o", metavar="FILE")
    workers: int = option(0, "processes reading PDFs in parallel; 0 = one per CPU, at most one per file to read",
                          metavar="N")
    chunk_size: int = option(DEFAULT_CHUNK_SIZE, "target chunk length in characters; chunks end at sentence ends "
                             "and prefer paragraph ends", metavar="CHARS")
    overlap: int = option(DEFAULT_OVERLAP, "at most this many characters of whole sentences from the end of a "
                          "chunk are repeated at the start of the next (0 = none)", metavar="CHARS")
    timeout: float = option(300.0, "seconds one PDF may take before it is skipped (0 = no limit; POSIX only)",
                            metavar="SECONDS")
    reuse: bool = option(True, "reuse the chunks already in the output file for PDFs whose sha256 and chunk "
                         "settings are unchanged")
    strict: bool = option(False, "exit with status 1 when any PDF was skipped (the output is still written)")
    verbose: bool = option(False, "log debug messages, e.g. pypdf's warnings about damaged files")

    def check(self) -> None:
        """Raise :class:`PdfSettingsError` for settings that cannot work."""
        if self.chunk_size < 100:
            raise PdfSettingsError(f"--chunk-size must be at least 100 characters, got {self.chunk_size}")
        if not 0 <= self.overlap <= self.chunk_size // 2:
            raise PdfSettingsError(f"--overlap must be between 0 and half of --chunk-size ({self.chunk_size // 2}), "
                             f"got {self.overlap}")
        if self.workers < 0:
            raise PdfSettingsError(f"--workers must be 0 (automatic) or more, got {self.workers}")
        if self.timeout < 0:
            raise PdfSettingsError(f"--timeout must be 0 (no limit) or more, got {self.timeout}")


class PdfSettingsError(UserError, ValueError):
    """A setting, or the PDF folder, that cannot work; the message names it."""


class PdfTextsError(UserError, ValueError):
    """A ``pdf_texts.json`` that cannot be used; the message names the file and what to do."""


def chunk_settings(config: PdfConfig) -> dict[str, Any]:
    """Everything that decides the chunks of a file besides its bytes; recorded as the output's ``config``."""
    return {"chunk_size": config.chunk_size, "overlap": config.overlap, "cleanup_version": CLEANUP_VERSION,
            "pypdf_version": pypdf.__version__}


@dataclass(frozen=True)
class FileTask:
    path: str
    file: str  # relative to the input folder, "/" separated
    sha256: str
    chunk_size: int
    overlap: int
    timeout: float


@dataclass
class FileResult:
    file: str
    sha256: str
    pages: int | None = None
    title: str | None = None
    author: str | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    empty_pages: int = 0
    reason: str | None = None  # why the file was skipped; None when it was read
    warnings: list[str] = field(default_factory=list)
    reused: bool = False  # taken over from the previous output, not read


class _TimeLimit(BaseException):
    """Raised inside a worker when a file runs past its time limit (BaseException: no ``except Exception`` eats it)."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if seconds <= 0 or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _TimeLimit

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def extract_file(task: FileTask) -> FileResult:
    """Read, clean and chunk one PDF; never raises: a file that fails comes back with a ``reason``."""
    result = FileResult(file=task.file, sha256=task.sha256)
    try:
        with _time_limit(task.timeout):
            document = read_pdf(task.path)
            clean = clean_pages(document.pages)
            spans = chunk_spans(clean.text, task.chunk_size, task.overlap)
    except UnreadablePdf as exc:
        result.reason = str(exc)
    except OSError as exc:
        result.reason = f"cannot read the file ({exc.strerror or exc}); check its permissions"
    except _TimeLimit:
        result.reason = (f"took longer than {task.timeout:g} s, the --timeout (pathological PDF?); "
                         "raise --timeout or re-export the file")
    except Exception as exc:  # noqa: BLE001 - a bug or a pypdf surprise costs this file only
        result.reason = f"unexpected error while reading it ({type(exc).__name__}: {exc}); please report it"
        result.warnings.append(traceback.format_exc())
    else:
        result.pages = len(document.pages)
        result.title, result.author = document.title, document.author
        result.empty_pages = clean.empty_pages
        result.warnings = document.warnings
        for index, (start, end) in enumerate(spans):
            page_start, page_end = page_range(start, end, clean.page_offsets)
            text = clean.text[start:end]
            result.chunks.append({
                "id": f"{task.file}#{index}", "text": text, "source_file": task.file,
                "page_start": page_start, "page_end": page_end, "chunk_index": index, "char_count": len(text),
                "sha256": task.sha256, "title": document.title, "author": document.author, "source": "pdf",
            })
    return result


Extractor = Callable[[FileTask], FileResult]


def extract_in_processes(tasks: list[FileTask], workers: int, extract: Extractor = extract_file,
                         ) -> Iterator[FileResult]:
    """Results of ``extract`` over ``tasks`` as they finish, ``workers`` processes at a time.

    Only ``2 * workers`` tasks are handed out at once, so when a worker process dies
    (a crash in a C extension, the out-of-memory killer) few files are suspect: each
    is retried alone in a fresh process, and the one that kills it again is reported
    as skipped. The other files are unaffected.
    """
    queue = deque(tasks)
    suspects: list[FileTask] = []
    while queue:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            running: dict[Future, FileTask] = {}
            broken = False
            while running or (queue and not broken):
                try:
                    while queue and not broken and len(running) < 2 * workers:
                        task = queue[0]
                        running[pool.submit(extract, task)] = task
                        queue.popleft()
                except BrokenProcessPool:
                    broken = True
                # Once the pool is broken every unfinished task fails at once: collect them all.
                done, _ = wait(running, return_when=ALL_COMPLETED if broken else FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(task)
                    except Exception as exc:  # noqa: BLE001 - anything else from the pool costs this file only
                        yield _failed(task, f"internal error ({type(exc).__name__}: {exc}); please report it")
    for task in suspects:
        with ProcessPoolExecutor(max_workers=1) as pool:
            try:
                yield pool.submit(extract, task).result()
            except BrokenProcessPool:
                yield _failed(task, "the worker process died while reading it (crash or out of memory); "
                                    "re-export the file or leave it out")
            except Exception as exc:  # noqa: BLE001 - anything else from the pool costs this file only
                yield _failed(task, f"internal error ({type(exc).__name__}: {exc}); please report it")


def _failed(task: FileTask, reason: str) -> FileResult:
    return FileResult(file=task.file, sha256=task.sha256, reason=reason)


def default_workers(files: int) -> int:
    return max(1, min(available_cpus(), files))


@dataclass
class RunReport:
    """What a run found, read, reused and skipped, for the end-of-run summary."""

    output: Path
    found: int = 0
    new: int = 0
    changed: int = 0
    reused: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    pages: int = 0  # pages of the files in the output
    empty_pages: int = 0  # of those, pages without text (scanned pages?)
    pages_read: int = 0  # pages extracted by this run
    chunks: int = 0
    seconds: float = 0.0  # wall time spent reading PDFs
    workers: int = 0

    @property
    def pages_per_second(self) -> float:
        return self.pages_read / self.seconds if self.seconds > 0 else 0.0


def find_pdfs(root: Path) -> list[tuple[str, Path]]:
    """``(relative path, path)`` of every PDF under ``root``, sorted by relative path."""
    if root.is_file():
        return [(root.name, root)]
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.suffix.lower() == ".pdf" and path.is_file() and not any(p.startswith(".") for p in relative.parts):
            found.append((relative.as_posix(), path))
    return sorted(found)


def run(config: PdfConfig, extract: Extractor = extract_file) -> RunReport:
    """Read the PDFs of ``config.pdf_dir``, write ``config.output`` and its saved config; return what happened."""
    config.check()
    root, output = Path(config.pdf_dir), Path(config.output)
    if not root.exists():
        raise PdfSettingsError(f"{root} does not exist; pass the folder that holds your PDFs")
    settings = chunk_settings(config)
    previous = _previous_run(output, settings)
    if previous.files and not previous.same_settings and config.reuse:
        log.info("chunk settings differ from those in %s: every PDF is read again", output)
    found = find_pdfs(root)
    report = RunReport(output=output, found=len(found))
    report.removed = len(set(previous.files) - {relative for relative, _ in found})

    results, tasks = _reuse_unchanged(found, previous if config.reuse else _PreviousRun(), config)
    report.reused = len(results)
    report.workers = min(config.workers, len(tasks)) if config.workers else default_workers(len(tasks))
    started = time.perf_counter()
    with progress(total=len(found), desc="PDFs", unit="file") as bar:
        bar.update(report.reused)
        for result in extract_in_processes(tasks, report.workers, extract) if tasks else ():
            results[result.file] = result
            report.pages_read += result.pages or 0
            for warning in result.warnings:
                log.debug("%s: %s", result.file, warning)
            bar.update(1)
    report.seconds = time.perf_counter() - started if tasks else 0.0

    document = _assemble(found, results, previous, settings, report)
    atomic.write_json(output, document)
    save_config(config, output.parent / CONFIG_FILE_NAME, pypdf_version=pypdf.__version__)
    return report


@dataclass
class _PreviousRun:
    files: dict[str, dict] = field(default_factory=dict)  # file -> its "files" entry
    chunks: dict[str, list[dict]] = field(default_factory=dict)  # file -> its chunks
    same_settings: bool = False


def _reuse_unchanged(found: list[tuple[str, Path]], previous: _PreviousRun, config: PdfConfig,
                     ) -> tuple[dict[str, FileResult], list[FileTask]]:
    """Results taken over from the previous run for unchanged files, and tasks to read the others.

    A file that was skipped before is tried again: the cause may have been fixed.
    """
    reused: dict[str, FileResult] = {}
    tasks = []
    for relative, path in found:
        before = previous.files.get(relative, {})
        try:
            digest = atomic.file_sha256(path)
        except OSError:
            digest = ""  # the worker fails to read it too, and says why
        if previous.same_settings and before.get("sha256") == digest and before.get("status") in EXTRACTED:
            reused[relative] = FileResult(
                file=relative, sha256=digest, pages=before.get("pages"), title=before.get("title"),
                author=before.get("author"), chunks=previous.chunks.get(relative, []),
                empty_pages=before.get("empty_pages", 0), reused=True,
            )
        else:
            tasks.append(FileTask(str(path), relative, digest, config.chunk_size, config.overlap, config.timeout))
    return reused, tasks


def _assemble(found: list[tuple[str, Path]], results: dict[str, FileResult], previous: _PreviousRun,
              settings: dict[str, Any], report: RunReport) -> dict[str, Any]:
    """The ``pdf_texts.json`` document, files in path order; fills in the report's counts."""
    files, chunks, skipped = [], [], []
    for relative, _ in found:
        result = results[relative]
        if result.reason is not None:
            status = "skipped"
            skipped.append({"file": relative, "reason": result.reason})
            report.skipped.append((relative, result.reason))
        elif result.reused:
            status = "reused"
        elif relative in previous.files and previous.files[relative].get("sha256") != result.sha256:
            status = "changed"
            report.changed += 1
        else:
            status = "new"
            report.new += 1
        if status != "skipped":
            report.pages += result.pages or 0
            report.empty_pages += result.empty_pages
        files.append({"file": relative, "sha256": result.sha256, "pages": result.pages, "title": result.title,
                      "author": result.author, "status": status, "chunks": len(result.chunks),
                      "empty_pages": result.empty_pages})
        chunks.extend(result.chunks)
    report.chunks = len(chunks)
    return {"format": FORMAT, "version": VERSION, "config": settings, "files": files, "chunks": chunks,
            "skipped": skipped}


def _previous_run(output: Path, settings: dict[str, Any]) -> _PreviousRun:
    """Files and chunks of the last run's output by file, and whether it used ``settings``.

    Refuses to go on when ``output`` holds something other than PDF texts, so a
    mistyped ``-o`` cannot overwrite, say, a conversations export.
    """
    if not output.exists():
        return _PreviousRun()
    try:
        data = _parse(output)
    except PdfTextsError as exc:
        raise PdfTextsError(f"{output} {exc}: refusing to overwrite it; pass another -o, or move the file away"
                            ) from None
    if isinstance(data, list):
        log.info("%s holds chunks in the older bare-list format: it is replaced and every PDF is read", output)
        return _PreviousRun()
    files = {entry["file"]: entry for entry in data.get("files", []) if isinstance(entry, dict) and "file" in entry}
    chunks: dict[str, list[dict]] = {}
    for chunk in data["chunks"]:
        chunks.setdefault(chunk.get("source_file"), []).append(chunk)
    return _PreviousRun(files, chunks, data.get("config") == settings)


def _parse(path: Path) -> Any:
    """The JSON in ``path`` once checked to hold PDF texts; :class:`PdfTextsError` says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PdfTextsError("does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PdfTextsError(f"cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise PdfTextsError(f"is not valid JSON ({exc})") from None
    if isinstance(data, dict):
        if data.get("format") != FORMAT:
            raise PdfTextsError(f"is not a PDF texts file (its \"format\" is {data.get('format')!r}, "
                                f"not {FORMAT!r})")
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise PdfTextsError(f"has version {data.get('version')!r}, which this code (version {VERSION}) "
                                "cannot read; update RhizomeML")
        chunks = data.get("chunks")
        if not isinstance(chunks, list):
            raise PdfTextsError("has no \"chunks\" list")
    elif isinstance(data, list):
        chunks = data
    else:
        raise PdfTextsError(f"holds a JSON {type(data).__name__}, not PDF texts")
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise PdfTextsError(f"is not PDF texts: chunk {index} is not an object with a \"text\" string")
    return data


def load_pdf_texts(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The chunks of a ``pdf_texts.json`` (see the module docstring), in file and page order.

    A bare JSON list of chunk objects with a ``"text"`` key, as older tools wrote, is
    accepted too; its chunks get the standard keys (``source_file`` from ``file`` or
    ``filename``, ``page_start``/``page_end`` from ``page``), ``None`` where unknown.
    Raises :class:`PdfTextsError`, naming the file and what to do, for anything else.
    """
    path = Path(path)
    try:
        data = _parse(path)
    except PdfTextsError as exc:
        raise PdfTextsError(f"{path} {exc}; (re)create it with: python pdf_to_json.py PDFs/ -o {path}") from None
    if isinstance(data, dict):
        return data["chunks"]
    return [_from_bare_list(chunk, index) for index, chunk in enumerate(data)]


def _from_bare_list(chunk: dict[str, Any], index: int) -> dict[str, Any]:
    source_file = chunk.get("source_file") or chunk.get("file") or chunk.get("filename")
    page = chunk.get("page")
    return {
        **chunk,
        "id": chunk.get("id") or f"{source_file or 'chunk'}#{index}",
        "source_file": source_file,
        "page_start": chunk.get("page_start", page),
        "page_end": chunk.get("page_end", page),
        "chunk_index": chunk.get("chunk_index", index),
        "char_count": len(chunk["text"]),
        "sha256": chunk.get("sha256"),
        "title": chunk.get("title"),
        "author": chunk.get("author"),
        "source": "pdf",
    }


def format_summary(report: RunReport) -> str:
    """The end-of-run summary: counts, speed, and a table of skipped files with the reason."""
    kept = report.found - len(report.skipped)
    lines = [
        f"wrote {report.chunks} chunks from {kept} PDF(s), {report.pages} pages, to {report.output}",
        (f"files: {report.found} found: new {report.new}, changed {report.changed}, reused {report.reused}, "
         f"removed {report.removed}, skipped {len(report.skipped)}"),
    ]
    if report.empty_pages:
        lines.append(f"pages without text: {report.empty_pages} (scanned pages? see \"empty_pages\" in the output)")
    if report.pages_read:
        lines.append(f"read {report.pages_read} pages in {report.seconds:.1f} s: {report.pages_per_second:.1f} "
                     f"pages/s with {report.workers} worker(s)")
    if report.skipped:
        width = max(len("file"), *(len(file) for file, _ in report.skipped))
        lines += ["", f"skipped {len(report.skipped)} file(s):", f"  {'file':<{width}}  reason",
                  f"  {'-' * width}  {'-' * 6}"]
        lines += [f"  {file:<{width}}  {reason}" for file, reason in report.skipped]
    return "\n".join(lines)
