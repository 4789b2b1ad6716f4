"""Reading large JSON and JSONL exports one record at a time, with damage located to the byte.

A ChatGPT export can be hundreds of megabytes on a single line. ``ijson``
builds one top-level record (one conversation) at a time, so memory follows
the largest conversation, not the file. When the JSON breaks, every record
before the damage has already been handed on; the damage is raised as
:class:`JsonDamage` with the byte offset where the parser noticed it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import ijson

from rhizome.log import progress

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
ZIP_MAGIC = b"PK\x03\x04"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SNIFF_LINE_BYTES = 8 << 20  # a JSONL line is one conversation; a longer first line means one-line JSON
_PROGRESS_MIN_BYTES = 32 << 20


@dataclass(frozen=True)
class Source:
    """One readable file: a path on disk or a member of a zip archive."""

    name: str  # what reports show: the path, or "export.zip/conversations.json"
    open: Callable[[], IO[bytes]]  # a fresh binary stream from the first byte
    size: int | None = None

    @classmethod
    def from_path(cls, path: Path) -> Source:
        return cls(str(path), lambda: open(path, "rb"), path.stat().st_size)

    @classmethod
    def from_zip_member(cls, archive: Path, info: zipfile.ZipInfo) -> Source:
        def open_member() -> IO[bytes]:
            # The member stream keeps the archive's file open until it is closed itself.
            with zipfile.ZipFile(archive) as zf:
                return zf.open(info)

        return cls(f"{archive}/{info.filename}", open_member, info.file_size)


@dataclass(frozen=True)
class Layout:
    """What the first bytes of a source say about how to read it."""

    kind: str  # "json", "jsonl", "zip", "empty", "utf16" or "not_json"
    first_char: str = ""  # the first character after any byte-order mark and whitespace


class JsonDamage(Exception):
    """Invalid or truncated JSON at ``offset`` (bytes from the start of the file or zip member)."""

    def __init__(self, offset: int, problem: str, truncated: bool):
        super().__init__(f"{problem} at byte {offset}")
        self.offset = offset
        self.problem = problem
        self.truncated = truncated


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that is not valid JSON; the lines around it are still read."""

    line: int
    offset: int
    problem: str


class _Reader:
    """Reads ``pending`` bytes, then ``raw``; counts bytes, stops at ``limit`` and drives a progress bar."""

    def __init__(self, raw: IO[bytes], pending: bytes = b"", limit: int | None = None, bar=None):
        self.raw = raw
        self.pending = pending
        self.limit = limit
        self.bar = bar
        self.offset = 0  # bytes handed to the parser so far, not counting a skipped BOM
        self.last = 0  # size of the latest read

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        if self.limit is not None:
            room = self.limit - self.offset
            if room <= 0:
                return b""
            size = room if size < 0 else min(size, room)
        if self.pending:
            data, self.pending = (self.pending, b"") if size < 0 else (self.pending[:size], self.pending[size:])
        else:
            data = self.raw.read(size)
        self.last = len(data)
        self.offset += len(data)
        if self.bar is not None:
            self.bar.update(len(data))
        return data


def open_reader(source: Source, limit: int | None = None, bar=None) -> tuple[IO[bytes], _Reader, int]:
    """The raw stream (to close), a reader positioned after any UTF-8 byte-order mark, and the mark's length."""
    raw = source.open()
    head = raw.read(len(UTF8_BOM))
    if head == UTF8_BOM:
        return raw, _Reader(raw, limit=limit, bar=bar), len(UTF8_BOM)
    return raw, _Reader(raw, pending=head, limit=limit, bar=bar), 0


def sniff_layout(source: Source) -> Layout:
    """Look at the first bytes (and, for a ``{``, the first line) to decide how to read a source."""
    with source.open() as raw:
        head = raw.read(4)
        if head.startswith(ZIP_MAGIC):
            return Layout("zip")
        if head.startswith(UTF16_BOMS):
            return Layout("utf16")
        data = head[len(UTF8_BOM):] if head.startswith(UTF8_BOM) else head
        while not data.strip():
            chunk = raw.read(1 << 16)
            if not chunk:
                return Layout("empty")
            data += chunk
            data = data.lstrip()
        first = chr(data.lstrip()[0])
        if first == "[":
            return Layout("json", first)
        if first != "{":
            return Layout("not_json", first)
        if source.name.lower().endswith(JSONL_SUFFIXES):
            return Layout("jsonl", first)
        return Layout("jsonl" if _first_line_is_a_record(source) else "json", first)


def _first_line_is_a_record(source: Source) -> bool:
    """True when the first line is a whole JSON value and another line follows: JSONL under a .json name."""
    raw, reader, _ = open_reader(source, limit=_SNIFF_LINE_BYTES)
    with raw:
        lines = _lines(reader)
        first = next(lines, b"")
        if not first.endswith(b"\n"):
            return False
        try:
            json.loads(first)
        except ValueError:
            return False
        for line in lines:
            if line.strip():
                return line.lstrip().startswith(b"{")
        return False


def iter_json_records(source: Source, layout: Layout) -> Iterator[Any]:
    """Yield the records of a JSON document, one at a time.

    A top-level array yields its items; a top-level object yields the items of
    its ``"conversations"`` array when it has one, else the object itself (a
    folder of per-conversation files holds one conversation per file).
    """
    prefix = "item" if layout.first_char == "[" else "conversations.item"
    yielded = 0
    for record in _stream_items(source, prefix):
        yielded += 1
        yield record
    if layout.first_char == "{" and not yielded:
        for whole in _stream_items(source, ""):
            if not isinstance(whole.get("conversations"), list):
                yield whole


def _stream_items(source: Source, prefix: str) -> Iterator[Any]:
    size = source.size or 0
    bar = None
    if size >= _PROGRESS_MIN_BYTES:
        bar = progress(desc=f"reading {Path(source.name).name}", total=size, unit="B")
        bar.unit_scale = True  # show MB, not a byte count
    raw, reader, bom = open_reader(source, bar=bar)
    try:
        with raw:
            try:
                yield from ijson.items(reader, prefix, use_float=True)
            except ijson.JSONError as exc:
                raise _damage(source, reader, bom, exc) from None
    finally:
        if bar is not None:
            bar.close()


def _problem(exc: Exception) -> str:
    message = exc.args[0] if exc.args else str(exc)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return str(message).splitlines()[0].strip() or type(exc).__name__


def _damage(source: Source, reader: _Reader, bom: int, exc: Exception) -> JsonDamage:
    problem = _problem(exc)
    if "premature EOF" in problem or "Incomplete JSON" in problem:
        return JsonDamage(bom + reader.offset, "the file ends in the middle of the JSON", truncated=True)
    failed_chunk_start = max(0, reader.offset - reader.last)
    return JsonDamage(bom + _locate_error(source, failed_chunk_start, reader.offset), problem, truncated=False)


def _locate_error(source: Source, chunk_start: int, chunk_end: int) -> int:
    """The exact offset (BOM excluded) where the parser rejects the input, searched inside the failing chunk.

    ijson parses in 64 KiB chunks and does not say where in a chunk it
    failed; feeding the bytes before the chunk in bulk and the chunk byte by
    byte to a fresh parser finds it. On any surprise, the chunk start is the answer.
    """

    def discard():
        while True:
            yield

    sink = discard()
    next(sink)
    parser = ijson.basic_parse_coro(sink)
    raw, reader, _ = open_reader(source, limit=chunk_end)
    with raw:
        try:
            fed = 0
            while fed < chunk_start:
                block = reader.read(min(1 << 20, chunk_start - fed))
                if not block:
                    return chunk_start
                parser.send(block)
                fed += len(block)
        except ijson.JSONError:
            return chunk_start
        while True:
            byte = reader.read(1)
            if not byte:
                return chunk_start
            try:
                parser.send(byte)
            except ijson.JSONError:
                return fed
            fed += 1


def iter_jsonl_records(source: Source) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, record)`` for each non-blank line; a line that is not JSON yields a :class:`BadLine`."""
    raw, reader, bom = open_reader(source)
    offset = bom
    with raw:
        for number, line in enumerate(_lines(reader), 1):
            start = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield number, BadLine(number, start + exc.start, "not UTF-8 text")
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, BadLine(number, start + len(text[: exc.pos].encode("utf-8")), exc.msg)


def _lines(reader: _Reader) -> Iterator[bytes]:
    """Lines with their newline; only the new chunk is searched, so a 100 MB line stays linear."""
    parts: list[bytes] = []
    while True:
        chunk = reader.read(1 << 16)
        if not chunk:
            if parts:
                yield b"".join(parts)
            return
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            parts.append(chunk[start:newline + 1])
            yield b"".join(parts)
            parts = []
            start = newline + 1
        if start < len(chunk):
            parts.append(chunk[start:])
