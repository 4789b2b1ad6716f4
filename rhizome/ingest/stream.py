"""Reading large JSON and JSONL exports one record at a time, with damage located to the byte.

A ChatGPT export can be hundreds of megabytes on a single line. ``ijson``
builds one top-level record (one conversation) at a time, so memory follows
the largest conversation, not the file. When the JSON breaks, every record
before the damage has already been handed on; the damage is raised as
:class:`JsonDamage` with the byte offset where the parser noticed it.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import ijson
import numpy as np

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
    def from_zip_member(cls, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Source:
        # One open archive serves every member: reopening it would re-read the whole directory each time.
        return cls(f"{archive.filename}/{info.filename}", lambda: archive.open(info), info.file_size)


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


MAX_JSON_DEPTH = 256  # ordinary exports nest fewer than 20 levels; the parser's memory grows with depth squared
_MAX_HELD_BYTES = 1 << 20  # a number literal longer than this is damage, not data

_QUOTE = ord('"')
_OPENERS, _CLOSERS = frozenset(b"[{"), frozenset(b"]}")
_ESCAPE_PAIR = re.compile(rb'\\.', re.S)
_STRING_BODY = re.compile(rb'[^"\\]*')
_OUTSIDE = re.compile(rb'[^"\[\]{}0-9\-]*')
_NUMBER = re.compile(rb'-?[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?')
_UNICODE_ESCAPE = re.compile(rb'\\u([0-9a-fA-F]{4})')
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE_ESCAPE = re.compile(rb'\\u[dD][89a-fA-F]')
# Numbers that may be beyond int64 / double range show as 19 digits in a row or a 3-digit exponent; searched
# for in a translated copy (digits -> 0, e/E -> e, signs -> +) because bytes.find is ten times faster than re.
_NUMBER_SHAPES = bytes(ord("0") if c in b"0123456789" else ord("e") if c in b"eE" else ord("+") if c in b"+-"
                       else ord(" ") for c in range(256))
_LONG_NUMBER_SHAPES = (b"0" * 19, b"e000", b"e+000")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NUMBER_CHARS = b"-+.eE0123456789"
_INT64 = range(1 - (1 << 63), 1 << 63)  # yajl parses magnitude then sign: -2**63 overflows too


@dataclass
class Repairs:
    """What the guard changed on the way to the parser, for the report."""

    numbers: int = 0  # number literals beyond int64 / double range, read as null
    surrogates: int = 0  # lone UTF-16 surrogate escapes ("\\udc00"), read as U+FFFD
    bad_bytes: int = 0  # bytes that are not UTF-8 (a stray byte, an encoded surrogate), read as "?"
    first_number_at: int | None = None


class JsonGuard:
    """Checks and repairs JSON bytes on their way to the parser, in one linear pass.

    The yajl parser under ijson has three failure modes no parser option
    avoids: memory that grows with the square of the nesting depth (200 KB of
    ``[`` takes over 24 GB), "integer overflow" for integers beyond int64 or
    doubles beyond 1.8e308 (ending the file there), and a UnicodeDecodeError
    for a lone surrogate escape or for bytes that are not UTF-8 (yajl stops
    the file at some, lets others through to Python's decoder). The guard stops the stream where nesting passes ``max_depth``
    (:attr:`too_deep_at`), writes ``null`` padded with spaces over an
    out-of-range number, ``\\ufffd`` over a lone surrogate escape and ``?``
    over each byte that is not UTF-8: every replacement has the original's
    length, so byte offsets in error messages stay true. Most chunks take the
    fast path (bytes methods, one regex and numpy); only chunks holding a
    surrogate escape or a long number, or passing the depth limit, are
    walked token by token in Python.
    """

    def __init__(self, repairs: Repairs | None = None, max_depth: int = MAX_JSON_DEPTH, start: int = 0):
        self.repairs = repairs if repairs is not None else Repairs()
        self.max_depth = max_depth
        self.depth = 0
        self.in_string = False
        self.passed = start  # offset of the next byte handed on
        self.too_deep_at: int | None = None
        self.number_too_long_at: int | None = None
        self._held = b""

    @property
    def stopped_at(self) -> int | None:
        return self.too_deep_at if self.too_deep_at is not None else self.number_too_long_at

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """The next bytes for the parser; a token cut by the chunk's end is held back for the next call."""
        if self.stopped_at is not None:
            return b""
        data = self._held + chunk if self._held else chunk
        unfinished = b""  # a multi-byte character cut by the chunk's end
        if not data.isascii():
            if not final:
                complete = _complete_utf8(data)
                data, unfinished = data[:complete], data[complete:]
            data = self._utf8(data)
        cut = self._fast(data, final)
        if cut is None:
            data, cut = self._careful(data, final)
        self._held = data[cut:] + unfinished if self.stopped_at is None else b""
        if len(self._held) > _MAX_HELD_BYTES:
            self.number_too_long_at = self.passed + cut
            self._held = b""
        self.passed += cut
        return data[:cut] if cut < len(data) else data

    def _utf8(self, data: bytes) -> bytes:
        try:
            data.decode("utf-8")
            return data
        except UnicodeDecodeError:
            pass
        # surrogateescape turns each bad byte into one stand-in character, so "?" keeps the length in bytes.
        text, bad = _ESCAPED_BYTE.subn("?", data.decode("utf-8", "surrogateescape"))
        self.repairs.bad_bytes += bad
        return text.encode("utf-8")

    def _fast(self, data: bytes, final: bool) -> int | None:
        """Where to cut ``data`` (state updated to that point), or None when it needs the careful scan."""
        if _SURROGATE_ESCAPE.search(data):
            return None
        # Escape pairs hold no delimiter; without them every quote opens or closes a string.
        plain = _ESCAPE_PAIR.sub(b"", data) if b"\\" in data else data
        pieces = plain.split(b'"')
        outside = b"".join(pieces[1 if self.in_string else 0::2])
        if _may_hold_a_long_number(outside):
            return None
        in_string = self.in_string ^ (len(pieces) % 2 == 0)
        steps = np.frombuffer(outside.translate(_BRACKET_STEPS, _NOT_BRACKETS), dtype=np.int8)
        if steps.size:
            levels = np.cumsum(steps, dtype=np.int64)
            if self.depth + int(levels.max()) > self.max_depth:
                return None
            self.depth += int(levels[-1])
        self.in_string = in_string
        if final:
            return len(data)
        if in_string:
            return _string_cut(data, data.rfind(b'"') + 1)
        tail = len(data) - len(data.rstrip(_NUMBER_CHARS))
        return len(data) - tail if tail <= 64 else len(data)

    def _careful(self, data: bytes, final: bool) -> tuple[bytes, int]:
        """Token by token: the repaired bytes and where to cut them."""
        out = bytearray(data)
        pos, size = 0, len(data)
        while pos < size:
            if self.in_string:
                pos = _STRING_BODY.match(data, pos).end()
                if pos >= size:
                    break
                if data[pos] == _QUOTE:
                    self.in_string = False
                    pos += 1
                    continue
                escape = _UNICODE_ESCAPE.match(data, pos)
                if escape is None:
                    if pos + 6 > size and not final:
                        return bytes(out), pos
                    pos += 2
                    continue
                code = int(escape.group(1), 16)
                if 0xD800 <= code <= 0xDBFF:
                    low = _UNICODE_ESCAPE.match(data, pos + 6)
                    if low is None and pos + 12 > size and not final:
                        return bytes(out), pos
                    if low is not None and 0xDC00 <= int(low.group(1), 16) <= 0xDFFF:
                        pos += 12
                        continue
                if 0xD800 <= code <= 0xDFFF:
                    out[pos:pos + 6] = b"\\ufffd"
                    self.repairs.surrogates += 1
                pos += 6
                continue
            pos = _OUTSIDE.match(data, pos).end()
            if pos >= size:
                break
            char = data[pos]
            if char == _QUOTE:
                self.in_string = True
                pos += 1
            elif char in _OPENERS:
                if self.depth >= self.max_depth:
                    self.too_deep_at = self.passed + pos
                    return bytes(out), pos
                self.depth += 1
                pos += 1
            elif char in _CLOSERS:
                self.depth -= 1
                pos += 1
            else:
                end = max(_NUMBER.match(data, pos).end(), pos + 1)
                if end >= size and not final:
                    return bytes(out), pos
                if _out_of_range(data[pos:end]):
                    out[pos:end] = b"null".ljust(end - pos)
                    if self.repairs.first_number_at is None:
                        self.repairs.first_number_at = self.passed + pos
                    self.repairs.numbers += 1
                pos = end
        return bytes(out), size


def _complete_utf8(data: bytes) -> int:
    """The length of ``data`` without a multi-byte character its end cuts short."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # the lead byte says how long its character is
            length = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if length > back else len(data)
    return len(data)


def _string_cut(data: bytes, body_start: int) -> int:
    """Where to cut inside a string body so that no escape is split: before a backslash run near the end.

    A run of backslashes starts on an escape boundary, and so does every even
    position inside it; cutting there keeps the next chunk's scan aligned.
    """
    last = data.rfind(b"\\", max(body_start, len(data) - 12))
    if last < 0:
        return len(data)
    before = data[body_start:last + 1]
    run_start = last + 1 - (len(before) - len(before.rstrip(b"\\")))
    skip = max(0, len(data) - 12 - run_start)
    return run_start + skip + (skip & 1)


def _may_hold_a_long_number(data: bytes) -> bool:
    shapes = data.translate(_NUMBER_SHAPES)
    return any(shape in shapes for shape in _LONG_NUMBER_SHAPES)


def _out_of_range(token: bytes) -> bool:
    """True for a number yajl cannot hold: an integer beyond int64, or a float beyond the double range."""
    if any(char in token for char in b".eE"):
        try:
            return math.isinf(float(token))
        except ValueError:
            return False  # not a number at all: the parser names it
    digits = token.lstrip(b"-")
    return digits.isdigit() and (len(digits) > 19 or int(token) not in _INT64)


class _Reader:
    """Reads ``pending`` bytes, then ``raw``, through an optional :class:`JsonGuard`; stops at ``limit`` raw
    bytes, counts the bytes handed on (``offset``, ``last``) and drives a progress bar."""

    def __init__(self, raw: IO[bytes], pending: bytes = b"", limit: int | None = None, bar=None,
                 guard: JsonGuard | None = None):
        self.raw = raw
        self.pending = pending
        self.limit = limit
        self.bar = bar
        self.guard = guard
        self.raw_offset = 0
        self.offset = 0  # bytes handed to the parser so far, not counting a skipped BOM
        self.last = 0  # size of the latest read
        self._ready = b""
        self._eof = False

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        if self.guard is None:
            data = self._read_raw(size)
        else:
            while (size < 0 or len(self._ready) < size) and not self._eof:
                chunk = self._read_raw(max(size, 1 << 16))
                self._eof = not chunk
                self._ready += self.guard.feed(chunk, final=self._eof)
            cut = len(self._ready) if size < 0 else size
            data, self._ready = self._ready[:cut], self._ready[cut:]
        self.last = len(data)
        self.offset += len(data)
        return data

    def _read_raw(self, size: int) -> bytes:
        if self.limit is not None:
            room = self.limit - self.raw_offset
            if room <= 0:
                return b""
            size = room if size < 0 else min(size, room)
        if self.pending:
            data, self.pending = (self.pending, b"") if size < 0 else (self.pending[:size], self.pending[size:])
        else:
            data = self.raw.read(size)
        self.raw_offset += len(data)
        if self.bar is not None:
            self.bar.update(len(data))
        return data


def open_reader(source: Source, limit: int | None = None, bar=None,
                guard: JsonGuard | None = None) -> tuple[IO[bytes], _Reader, int]:
    """The raw stream (to close), a reader positioned after any UTF-8 byte-order mark, and the mark's length."""
    raw = source.open()
    head = raw.read(len(UTF8_BOM))
    if head == UTF8_BOM:
        return raw, _Reader(raw, limit=limit, bar=bar, guard=guard), len(UTF8_BOM)
    return raw, _Reader(raw, pending=head, limit=limit, bar=bar, guard=guard), 0


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
        guard = JsonGuard()
        checked = guard.feed(first, final=True)
        if guard.stopped_at is not None:
            return False
        try:
            json.loads(checked)
        except ValueError:
            return False
        for line in lines:
            if line.strip():
                return line.lstrip().startswith(b"{")
        return False


def iter_json_records(source: Source, layout: Layout, repairs: Repairs | None = None) -> Iterator[Any]:
    """Yield the records of a JSON document, one at a time.

    A top-level array yields its items; a top-level object yields the items of
    its ``"conversations"`` array when it has one, else the object itself (a
    folder of per-conversation files holds one conversation per file).
    ``repairs`` counts what the :class:`JsonGuard` changed.
    """
    repairs = repairs if repairs is not None else Repairs()
    prefix = "item" if layout.first_char == "[" else "conversations.item"
    first_pass = Repairs()
    yielded = 0
    for record in _stream_items(source, prefix, first_pass):
        yielded += 1
        yield record
    if layout.first_char == "{" and not yielded:
        for whole in _stream_items(source, "", repairs):
            if not isinstance(whole.get("conversations"), list):
                yield whole
    else:
        repairs.numbers += first_pass.numbers
        repairs.surrogates += first_pass.surrogates
        repairs.bad_bytes += first_pass.bad_bytes
        repairs.first_number_at = first_pass.first_number_at


def _stream_items(source: Source, prefix: str, repairs: Repairs) -> Iterator[Any]:
    size = source.size or 0
    bar = None
    if size >= _PROGRESS_MIN_BYTES:
        bar = progress(desc=f"reading {Path(source.name).name}", total=size, unit="B")
        bar.unit_scale = True  # show MB, not a byte count
    raw, reader, bom = open_reader(source, bar=bar, guard=JsonGuard(repairs))
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
    guard = reader.guard
    if guard.too_deep_at is not None:
        return JsonDamage(bom + guard.too_deep_at, f"nested deeper than {guard.max_depth} levels (exports nest "
                          "fewer than 20; this is not an export, or a damaged one)", truncated=False)
    if guard.number_too_long_at is not None:
        return JsonDamage(bom + guard.number_too_long_at, "a number more than 1 MiB long", truncated=False)
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
    raw, reader, _ = open_reader(source, limit=chunk_end, guard=JsonGuard())
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


def iter_jsonl_records(source: Source, repairs: Repairs | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, record)`` for each non-blank line; a line that is not JSON yields a :class:`BadLine`.

    Each line passes a :class:`JsonGuard` of its own (``repairs`` counts what they changed): Python's
    parser recurses, so a deeply nested line would end in a RecursionError.
    """
    repairs = repairs if repairs is not None else Repairs()
    raw, reader, bom = open_reader(source)
    offset = bom
    with raw:
        for number, line in enumerate(_lines(reader), 1):
            start = offset
            offset += len(line)
            if not line.strip():
                continue
            guard = JsonGuard(repairs, start=start)
            line = guard.feed(line, final=True)
            if guard.too_deep_at is not None:
                yield number, BadLine(number, guard.too_deep_at,
                                      f"nested deeper than {guard.max_depth} levels")
                continue
            text = line.decode("utf-8").rstrip("\r\n")  # the guard left only UTF-8
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
