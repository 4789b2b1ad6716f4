"""Where conversations come from: files, folders and export archives, and which format each holds.

A path is a ``.json`` / ``.jsonl`` file, a ChatGPT or Claude export ``.zip``
(read in place, streamed from the archive) or a folder (its ``*.json`` and
``*.jsonl`` files, e.g. an unpacked export, a folder of per-conversation
files, or ``conversations-000.json``, ``conversations-001.json`` ... of a
split export). The format is decided per file by a cheap peek and again per
record by its keys, so one file can mix formats.

Inside folders and archives, JSON files that hold no conversations
(``user.json``, ``projects.json``, our own ``pdf_texts.json``) are passed over
quietly; a file named on the command line that holds none is reported.

Bad input costs only itself, and what it costs is reported: a pipe or device
is refused (reading it would hang), a password-protected, oddly compressed or
over-size zip member is skipped (:class:`InputLimits`), a message over the
length limit is left out, and a conversation that comes twice is resolved
(:class:`_SameIds`), never silently dropped.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import zipfile
import zlib
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator

import ijson

from rhizome.ingest import chatgpt, claude, custom
from rhizome.ingest.records import Conversation, IngestReport, InputLimits, MalformedRecord, optional_str
from rhizome.ingest.stream import (
    BadLine, JsonDamage, JsonGuard, Layout, Repairs, Source, iter_json_records, iter_jsonl_records, open_reader,
    sniff_layout,
)
from rhizome.log import get_logger

log = get_logger(__name__)

DEFAULT_CONVERSATION_FILES = ("conversations.json", "conversations2.json")  # ChatGPT, Claude (the original's names)
CONVERSATION_FORMATS = ("chatgpt", "claude", "custom", "hf_chat")
FILE_SUFFIXES = (".json", ".jsonl", ".ndjson")
PEEK_BYTES = 4 << 20
PEEK_RECORDS = 16
EXPECTED_FORMATS = (
    "expected a ChatGPT export (conversations with 'mapping'), a Claude export (with 'chat_messages'), "
    "custom JSON ({\"conversations\": [{\"messages\": [{\"author\", \"content\"}]}]}) "
    "or chat JSONL ({\"messages\": [{\"role\", \"content\"}]} per line)"
)
# Records of one conversation service carry stable ids; the same conversation given twice (the .zip and the
# unpacked conversations.json) is imported once. Hand-made files reuse ids like "1", so they are not deduplicated.
DEDUPLICATED_FORMATS = frozenset({"chatgpt", "claude"})
PDF_TEXTS_MARKER = "rhizome.pdf_texts"  # the "format" field of our pdf stage's output (rhizome.pdf.pipeline)
# A chunk of PDF text has a "text" key; a conversation or message never has "text" without one of these.
_CONVERSATION_KEYS = frozenset({"messages", "mapping", "chat_messages", "role", "author", "sender", "content"})
_RECORD_PREFIXES = ("item", "", "conversations.item")
# What reading a file or zip member can raise besides damaged JSON: I/O, a damaged or lying archive.
READ_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error,
               lzma.LZMAError)
ZIP_METHODS_READ = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
ZIP_METHOD_NAMES = {1: "Shrink", 6: "Implode", 9: "Deflate64", 93: "Zstandard", 95: "XZ", 98: "PPMd",
                    99: "AES encryption"}
_ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0

Parser = Callable[[dict, str, str, IngestReport], Conversation]
PARSERS: dict[str, Parser] = {
    "chatgpt": chatgpt.conversation_from_record,
    "claude": claude.conversation_from_record,
    "custom": custom.conversation_from_record,
    "hf_chat": custom.hf_conversation_from_record,
}


def iter_conversations(
    paths: Iterable[str | os.PathLike], report: IngestReport | None = None, limits: InputLimits | None = None,
) -> Iterator[Conversation]:
    """Yield every conversation with at least one visible turn, in path order, then file and export order
    (a conversation that comes more than once: where its last copy is read; see :class:`_SameIds`).

    Never raises for bad input: missing or unreadable paths, damaged JSON and
    malformed records are recorded in ``report`` (errors, skipped counts) and
    everything readable is still yielded. ``limits`` caps what one input may cost.
    """
    report = report if report is not None else IngestReport()
    limits = limits if limits is not None else InputLimits()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not the characters of its name
    paths = [Path(path) for path in paths]
    same_ids = _SameIds(_repeated_ids(paths, limits), report)
    for path in paths:
        for conversation in _read_path(path, report, limits):
            yield from _counted(same_ids.add(conversation), report)
    yield from _counted(same_ids.rest(), report)


def _counted(conversations: Iterable[Conversation], report: IngestReport) -> Iterator[Conversation]:
    for conversation in conversations:
        report.conversations += 1
        report.messages += len(conversation.messages)
        yield conversation


def load_conversations(paths: Iterable[str | os.PathLike], report: IngestReport | None = None,
                       limits: InputLimits | None = None) -> list[Conversation]:
    return list(iter_conversations(paths, report, limits))


def detect_format(path: str | os.PathLike) -> str:
    """"chatgpt", "claude", "custom", "hf_chat", "pdf_texts" or "unknown", from a peek at the first records.

    For a folder or a zip archive: the format of the first conversation file inside.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _first_conversation_format(Source.from_path(f) for f in _folder_files(path)[0])
        if not _is_regular_file(path):
            return "unknown"
        source = Source.from_path(path)
        layout = sniff_layout(source)
        if layout.kind == "zip":
            with zipfile.ZipFile(path) as archive:
                return _first_conversation_format(_zip_members(archive, IngestReport(), InputLimits()))
        return _peek_format(source, layout)
    except (*READ_ERRORS, JsonDamage):
        return "unknown"


def record_format(record: Any) -> str:
    """The format of one conversation object, from its keys."""
    if not isinstance(record, dict):
        return "unknown"
    if "mapping" in record:
        return "chatgpt"
    if "chat_messages" in record:
        return "claude"
    messages = record.get("messages")
    if isinstance(messages, list):
        first = next((m for m in messages if isinstance(m, dict)), None)
        if first is None or "author" in first:
            return "custom"
        if "role" in first:
            return "hf_chat"
        return "unknown"
    if record.get("format") == PDF_TEXTS_MARKER or "chunks" in record or _looks_like_pdf_chunk(record.keys()):
        return "pdf_texts"
    return "unknown"


def _looks_like_pdf_chunk(keys: Iterable[str]) -> bool:
    keys = set(keys)
    return "text" in keys and not keys & _CONVERSATION_KEYS


def _natural_key(name: str) -> list:
    """"conversations-2.json" before "conversations-10.json"."""
    return [int(piece) if piece.isdigit() else piece.lower() for piece in re.split(r"(\d+)", name)]


def _is_regular_file(path: Path) -> bool:
    """A plain file: reading a pipe, socket or device (a FIFO, /dev/zero) would wait or never end."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


NOT_A_FILE = ("not a regular file (a pipe, socket or device; reading it could wait forever); "
              "save the export to a file and name that")


def _folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(the folder's .json/.jsonl files in natural order, entries with those names that are not regular files)."""
    named = [f for f in folder.iterdir() if f.suffix.lower() in FILE_SUFFIXES]
    files = [f for f in named if _is_regular_file(f)]
    odd = [f for f in named if f not in files and not f.is_dir()]
    return sorted(files, key=lambda f: _natural_key(f.name)), sorted(odd)


def _zip_members(archive: zipfile.ZipFile, report: IngestReport, limits: InputLimits) -> list[Source]:
    """The archive's .json/.jsonl files in natural name order; those it cannot or should not read are reported."""
    infos = [
        info for info in archive.infolist()
        if not info.is_dir() and info.filename.lower().endswith(FILE_SUFFIXES)
        and not info.filename.startswith("__MACOSX/") and not Path(info.filename).name.startswith("._")
    ]
    infos.sort(key=lambda info: _natural_key(info.filename))
    members = []
    for info in infos:
        problem = _member_problem(info, limits)
        if problem is None:
            members.append(Source.from_zip_member(archive, info))
        else:
            _fail(report, f"{archive.filename}/{info.filename}", problem)
    return members


def _member_problem(info: zipfile.ZipInfo, limits: InputLimits) -> str | None:
    """Why a zip member is not read (checked from the archive's directory, before a byte is inflated)."""
    if info.flag_bits & _ZIP_ENCRYPTED:
        return ("password-protected; extract it with its password (unzip FILE.zip) and name the extracted "
                "file; the other members are read")
    if info.compress_type not in ZIP_METHODS_READ:
        method = ZIP_METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        return (f"unsupported compression ({method}); extract it with a tool that reads it (7z x FILE.zip) "
                "and name the extracted file; the other members are read")
    megabytes = info.file_size / (1 << 20)
    if megabytes > limits.max_member_mb:
        return (f"expands to {megabytes:,.0f} MB, over the {limits.max_member_mb:,} MB limit for one member; "
                "raise --max-member-mb to read it")
    ratio = info.file_size / max(info.compress_size, 1)
    if megabytes > limits.ratio_applies_above_mb and ratio > limits.max_compression_ratio:
        return (f"expands {ratio:,.0f}-fold ({info.compress_size:,} bytes to {info.file_size:,}), over the "
                f"{limits.max_compression_ratio}-fold limit (exports compress 5-10 fold; this looks like a zip "
                "bomb); raise --max-compression-ratio to read it")
    return None


def _first_conversation_format(sources: Iterable[Source]) -> str:
    for source in sources:
        fmt = _peek_format(source, sniff_layout(source))
        if fmt in CONVERSATION_FORMATS:
            return fmt
    return "unknown"


def _peek_format(source: Source, layout: Layout) -> str:
    if layout.kind == "jsonl":
        for count, (_, record) in enumerate(iter_jsonl_records(source)):
            if not isinstance(record, BadLine):
                return record_format(record)
            if count >= PEEK_RECORDS:
                break
        return "unknown"
    if layout.kind == "json":
        return _peek_json_format(source)
    return "unknown"


def _peek_json_format(source: Source) -> str:
    """Decide from the keys of the first records, reading at most PEEK_BYTES; never parses the whole file."""
    raw, reader, _ = open_reader(source, limit=PEEK_BYTES, guard=JsonGuard())
    record_keys: dict[str, set[str]] = {}
    records_seen = 0
    with raw:
        try:
            for prefix, event, value in ijson.parse(reader, use_float=True):
                if prefix == "" and event == "map_key" and value == "chunks":
                    return "pdf_texts"
                if prefix == "format" and value == PDF_TEXTS_MARKER:
                    return "pdf_texts"
                if event == "map_key" and prefix in _RECORD_PREFIXES:
                    if value == "mapping":
                        return "chatgpt"
                    if value == "chat_messages":
                        return "claude"
                    record_keys.setdefault(prefix, set()).add(value)
                elif event == "map_key" and prefix.endswith("messages.item"):
                    if prefix[: -len("messages.item")].rstrip(".") in _RECORD_PREFIXES and value in ("author", "role"):
                        return "custom" if value == "author" else "hf_chat"
                elif event == "end_map" and prefix in _RECORD_PREFIXES:
                    if _looks_like_pdf_chunk(record_keys.pop(prefix, ())):
                        return "pdf_texts"
                    records_seen += 1
                    if records_seen >= PEEK_RECORDS:
                        break
        except ijson.JSONError:
            pass  # the peek stopped at PEEK_BYTES, or the file is damaged: reading it will say where
    return "unknown"


def _fail(report: IngestReport, file: str, reason: str) -> None:
    log.warning("%s: %s", file, reason)
    report.error(file, reason)


def _read_path(path: Path, report: IngestReport, limits: InputLimits) -> Iterator[Conversation]:
    if path.is_dir():
        files, odd = _folder_files(path)
        for entry in odd:
            _fail(report, str(entry), NOT_A_FILE)
        formats = []
        for file in files:
            formats.append((yield from _read_source(Source.from_path(file), False, report, limits)))
        if not any(fmt in CONVERSATION_FORMATS or fmt == "pdf_texts" for fmt in formats) and not odd:
            _fail(report, str(path), f"no conversation files in this folder (looked at {len(files)} .json/.jsonl "
                                     f"files); {EXPECTED_FORMATS}")
        return
    if not path.exists():
        _fail(report, str(path), "no such file or folder; check the path (ChatGPT: conversations.json or the "
                                 "export .zip; Claude: its conversations.json)")
        return
    if not _is_regular_file(path):
        _fail(report, str(path), NOT_A_FILE)
        return
    source = Source.from_path(path)
    try:
        layout = sniff_layout(source)
    except OSError as exc:
        _fail(report, str(path), f"cannot be read ({exc.strerror or exc})")
        return
    if layout.kind != "zip":
        yield from _read_source(source, True, report, limits, layout)
        return
    try:
        archive = zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        _fail(report, str(path), f"not a readable zip archive ({exc}); download the export again")
        return
    with archive:
        errors_before = len(report.errors)
        members = _zip_members(archive, report, limits)
        refused = len(report.errors) - errors_before
        if not members and not refused:
            _fail(report, str(path), "this archive holds no .json or .jsonl files; expected a ChatGPT or Claude "
                                     "data export containing conversations.json")
            return
        formats = []
        for member in members:
            formats.append((yield from _read_source(member, False, report, limits)))
    if members and not any(fmt in CONVERSATION_FORMATS for fmt in formats):
        _fail(report, str(path), f"no conversations inside this archive (looked at {len(members)} .json/.jsonl "
                                 f"files); {EXPECTED_FORMATS}")


def _read_source(source: Source, named: bool, report: IngestReport, limits: InputLimits,
                 layout: Layout | None = None) -> Generator[Conversation, None, str]:
    """Yield the conversations of one file or zip member; return its format.

    ``named``: the user named this file itself (not a file found in a folder or archive).
    ``layout``: the source's :func:`sniff_layout`, when the caller already has it.
    """
    name = source.name
    try:
        if layout is None:
            layout = sniff_layout(source)
        problem = {
            "empty": "the file is empty; export or extract it again",
            "utf16": "the file is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 IN > OUT) and retry",
            "not_json": f"not JSON (it starts with {layout.first_char!r}); {EXPECTED_FORMATS}",
            "zip": "a zip archive with a .json name; rename it to .zip",
        }.get(layout.kind)
        fmt = "unknown" if problem else _peek_format(source, layout)
    except READ_ERRORS as exc:
        _fail(report, name, f"cannot be read ({exc})")
        return "unknown"
    report.files[name] = fmt
    if problem is not None:
        _fail(report, name, problem)
        return fmt
    if fmt == "pdf_texts" or (fmt == "unknown" and not named):
        return fmt

    repairs = Repairs()
    records = (iter_jsonl_records(source, repairs) if layout.kind == "jsonl"
               else enumerate(iter_json_records(source, layout, repairs), 1))
    id_separator = ":" if layout.kind == "jsonl" else "#"
    kept, first_kind, errors_before = 0, None, len(report.errors)
    too_long = _TooLong(limits.max_message_chars)
    try:
        for number, record in records:
            if isinstance(record, BadLine):
                report.skipped_conversations += 1
                _fail(report, name, f"line {record.line} (byte {record.offset}) is not valid JSON ({record.problem}); "
                                    "skipped that line and read the rest. Fix or delete the line to import it.")
                continue
            conversation = _parse_record(record, name, f"{name}{id_separator}{number}", report)
            if conversation is None:
                continue
            first_kind = first_kind or conversation.source
            too_long.leave_out(conversation)
            if not conversation.messages:
                report.filtered["empty_conversation"] += 1
                continue
            kept += 1
            yield conversation
    except JsonDamage as damage:
        _fail(report, name, _describe_damage(damage, kept))
    except READ_ERRORS as exc:
        _fail(report, name, f"reading stopped ({exc}); kept {_conversations(kept)} before it. "
                            "Download or extract the export again.")
    too_long.report(report, name)
    _report_repairs(repairs, report, name)
    if fmt == "unknown" and first_kind is not None:
        report.files[name] = fmt = first_kind
    elif fmt == "unknown" and len(report.errors) == errors_before:
        _fail(report, name, f"no conversations found; {EXPECTED_FORMATS}")
    return fmt


class _TooLong:
    """Leaves out messages over the length limit, and says how many and how long: a giant message is
    most often a pasted log or a damaged file, and cutting it silently would import half a thought."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.count = 0
        self.longest = 0

    def leave_out(self, conversation: Conversation) -> None:
        over = [len(m.text) for m in conversation.messages if len(m.text) > self.max_chars]
        if over:
            conversation.messages = [m for m in conversation.messages if len(m.text) <= self.max_chars]
            self.count += len(over)
            self.longest = max(self.longest, *over)

    def report(self, report: IngestReport, name: str) -> None:
        if self.count:
            report.filtered["over_max_message_chars"] += self.count
            _fail(report, name, f"left out {self.count} message{'s' if self.count > 1 else ''} longer than "
                                f"{self.max_chars:,} characters (the longest: {self.longest:,}); raise "
                                "--max-message-chars to import them")


def _report_repairs(repairs: Repairs, report: IngestReport, name: str) -> None:
    if repairs.surrogates:
        report.repaired["lone_surrogate"] += repairs.surrogates
    if repairs.bad_bytes:
        report.repaired["not_utf8_byte"] += repairs.bad_bytes
        _fail(report, name, f"{repairs.bad_bytes} byte{'s' if repairs.bad_bytes > 1 else ''} that are not UTF-8 "
                            "text read as '?'")
    if repairs.numbers:
        report.repaired["number_out_of_range"] += repairs.numbers
        _fail(report, name, f"{repairs.numbers} number{'s' if repairs.numbers > 1 else ''} beyond what any field "
                            f"can hold (the first at byte {repairs.first_number_at}) read as null")


def _parse_record(record: Any, file: str, fallback_id: str, report: IngestReport) -> Conversation | None:
    kind = record_format(record)
    parser = PARSERS.get(kind)
    if parser is None:
        if kind != "pdf_texts":
            report.skipped_conversations += 1
            log.debug("%s: skipped record %s: not a conversation of any known format", file, fallback_id)
        return None
    try:
        return parser(record, file, fallback_id, report)
    # Exports are untrusted: a field of an unexpected type anywhere in a record (a list where an id
    # belongs) costs that record, counted, never the rest of the file.
    except (MalformedRecord, TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
        report.skipped_conversations += 1
        log.debug("%s: skipped malformed conversation %s: %s", file, fallback_id, exc)
        return None


def _describe_damage(damage: JsonDamage, kept: int) -> str:
    if damage.truncated:
        return (f"truncated: the JSON stops unfinished at byte {damage.offset} (an interrupted download or "
                f"extraction?). Kept {_conversations(kept)} before the damage. Download the export again, "
                "or pass the export .zip itself.")
    hint = ""
    if "trailing garbage" in damage.problem:
        hint = " If the file holds one JSON object per line, name it .jsonl."
    return (f"invalid JSON at byte {damage.offset} ({damage.problem}). Kept {_conversations(kept)} before the "
            "damage; the rest of the file was not read. Repair the file around that byte "
            f"(head -c {damage.offset + 100} FILE | tail -c 200 shows it) or export again.{hint}")


def _conversations(count: int) -> str:
    return f"the {count} conversation{'' if count == 1 else 's'}" if count else "no conversations"


Key = tuple[str, str]  # (source, conversation id)


def _repeated_ids(paths: list[Path], limits: InputLimits) -> dict[Key, int]:
    """How often each ChatGPT / Claude conversation id occurs, where more than once, across the sources of
    a service that has more than one (two exports, or the .zip and its unpacked file).

    A quick first pass (ids only, about half the time of the import) so that the second copy of a
    conversation can be weighed against the first before either is handed on. Anything it cannot
    read, the import itself reports.
    """
    per_format = Counter(fmt for path in paths for fmt, _, _ in _peeked_sources(path, limits))
    wanted = {fmt for fmt, sources in per_format.items() if sources > 1 and fmt in DEDUPLICATED_FORMATS}
    counts: Counter = Counter()
    for path in paths if wanted else ():
        for fmt, layout, source in _peeked_sources(path, limits):
            if fmt in wanted:
                try:
                    counts.update(_source_ids(source, layout, fmt))
                except (*READ_ERRORS, JsonDamage):
                    continue
    return {key: count for key, count in counts.items() if count > 1}


def _peeked_sources(path: Path, limits: InputLimits) -> Iterator[tuple[str, Layout, Source]]:
    """(format, layout, source) of each file a path stands for; what cannot be read is passed over."""
    try:
        if path.is_dir():
            sources = [Source.from_path(file) for file in _folder_files(path)[0]]
        elif _is_regular_file(path):
            sources = [Source.from_path(path)]
        else:
            return
        for source in sources:
            layout = sniff_layout(source)
            if layout.kind in ("json", "jsonl"):
                yield _peek_format(source, layout), layout, source
            elif layout.kind == "zip" and len(sources) == 1:
                with zipfile.ZipFile(path) as archive:
                    for member in _zip_members(archive, IngestReport(), limits):
                        member_layout = sniff_layout(member)
                        if member_layout.kind in ("json", "jsonl"):
                            yield _peek_format(member, member_layout), member_layout, member
    except (*READ_ERRORS, JsonDamage):
        return


_ID_PREFIXES = {"chatgpt": "item.id", "claude": "item.uuid"}


def _source_ids(source: Source, layout: Layout, fmt: str) -> Iterator[Key]:
    if layout.kind == "json" and layout.first_char == "[":
        # Only the ids are built: the parser skips the rest of each record.
        raw, reader, _ = open_reader(source, guard=JsonGuard())
        with raw:
            try:
                for value in ijson.items(reader, _ID_PREFIXES[fmt], use_float=True):
                    if optional_str(value):
                        yield fmt, value
            except ijson.JSONError:
                return
        return
    records = (iter_json_records(source, layout) if layout.kind == "json"
               else (record for _, record in iter_jsonl_records(source) if not isinstance(record, BadLine)))
    for record in records:
        kind = record_format(record)
        if kind in DEDUPLICATED_FORMATS:
            conversation_id = (optional_str(record.get("id")) or optional_str(record.get("conversation_id"))
                               if kind == "chatgpt" else optional_str(record.get("uuid")))
            if conversation_id:
                yield kind, conversation_id


class _SameIds:
    """Conversations of one service that share an id: nothing is lost.

    Copies of one conversation (the export .zip and its unpacked file, both named) are kept once. Versions
    of one conversation (one's turns begin the other's: an older and a newer export) keep the newer, by
    update time, then length. Conversations that differ keep both, the later ones under ``id~2``, ``id~3``.
    Ids known from the first pass to repeat wait until their last copy is read. A repeat it did not look
    for (inside one file) is weighed against the copy already handed on, which cannot be taken back: an
    older version or a copy is dropped, a newer version or a stranger is kept beside it.
    """

    def __init__(self, repeated: dict[Key, int], report: IngestReport):
        self.repeated = repeated
        self.report = report
        self.waiting: dict[Key, list[Conversation]] = {}
        self.handed_on: dict[Key, array] = {}  # key -> the turns' fingerprint, to compare a late repeat with

    def add(self, conversation: Conversation) -> list[Conversation]:
        if conversation.source not in DEDUPLICATED_FORMATS:
            return [conversation]
        key = (conversation.source, conversation.id)
        if key in self.repeated:
            group = self.waiting.setdefault(key, [])
            group.append(conversation)
            return self._resolve(self.waiting.pop(key)) if len(group) == self.repeated[key] else []
        if key in self.handed_on:
            return self._late_repeat(conversation, key)
        return self._hand_on([conversation])

    def rest(self) -> Iterator[Conversation]:
        """Groups whose last copy never came (a damaged file, an empty conversation)."""
        for group in self.waiting.values():
            yield from self._resolve(group)
        self.waiting = {}

    def _resolve(self, group: list[Conversation]) -> list[Conversation]:
        newest_first = sorted(group, key=_newness, reverse=True)
        kept: list[tuple[Conversation, array]] = []
        for conversation in newest_first:
            turns = _fingerprint(conversation)
            match = next((older for older in kept if _one_begins_the_other(turns, older[1])), None)
            if match is None:
                kept.append((conversation, turns))
            elif turns == match[1]:
                self.report.filtered["duplicate_conversation"] += 1
            else:
                self.report.filtered["older_version"] += 1
                _fail(self.report, conversation.file, f"conversation {conversation.id} also comes in a newer "
                                                      f"version (from {match[0].file}); kept the newer one")
        order = {id(conversation): position for position, conversation in enumerate(group)}
        kept.sort(key=lambda pair: order[id(pair[0])])
        return self._hand_on([conversation for conversation, _ in kept])

    def _late_repeat(self, conversation: Conversation, key: Key) -> list[Conversation]:
        turns, before = _fingerprint(conversation), self.handed_on[key]
        if turns == before:
            self.report.filtered["duplicate_conversation"] += 1
            return []
        if _one_begins_the_other(turns, before) and len(turns) < len(before):
            self.report.filtered["older_version"] += 1
            _fail(self.report, conversation.file, f"conversation {conversation.id} is an older version of one "
                                                  "already read; kept the newer one")
            return []
        # The copy handed on already cannot be taken back: a newer version read after it is kept beside it.
        newer = _one_begins_the_other(turns, before)
        return self._hand_on([conversation], force_new_id=True, why="a newer version of" if newer else "")

    def _hand_on(self, conversations: list[Conversation], force_new_id: bool = False,
                 why: str = "") -> list[Conversation]:
        for position, conversation in enumerate(conversations):
            if position or force_new_id:
                original = conversation.id
                copy = 2
                while (conversation.source, f"{original}~{copy}") in self.handed_on:
                    copy += 1
                conversation.id = f"{original}~{copy}"
                what = (f"is {why} one read before" if why else "comes more than once with different turns")
                _fail(self.report, conversation.file, f"conversation {original} {what}; kept both, this one as "
                                                      f"{conversation.id}")
            self.handed_on[(conversation.source, conversation.id)] = _fingerprint(conversation)
        return conversations


def _newness(conversation: Conversation) -> tuple[float, int]:
    when = conversation.update_time if conversation.update_time is not None else conversation.create_time
    return (when if when is not None else float("-inf"), len(conversation.messages))


def _fingerprint(conversation: Conversation) -> array:
    """One 64-bit hash per turn: 8 bytes a turn, enough to tell copies, versions and strangers apart."""
    return array("q", (hash((m.role, m.text)) for m in conversation.messages))


def _one_begins_the_other(a: array, b: array) -> bool:
    shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
    return longer[:len(shorter)] == shorter
