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
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator

import ijson

from rhizome.ingest import chatgpt, claude, custom
from rhizome.ingest.records import Conversation, IngestReport, MalformedRecord
from rhizome.ingest.stream import (
    BadLine, JsonDamage, Layout, Source, iter_json_records, iter_jsonl_records, open_reader, sniff_layout,
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

Parser = Callable[[dict, str, str, IngestReport], Conversation]
PARSERS: dict[str, Parser] = {
    "chatgpt": chatgpt.conversation_from_record,
    "claude": claude.conversation_from_record,
    "custom": custom.conversation_from_record,
    "hf_chat": custom.hf_conversation_from_record,
}


def iter_conversations(
    paths: Iterable[str | os.PathLike], report: IngestReport | None = None
) -> Iterator[Conversation]:
    """Yield every conversation with at least one visible turn, in path order, then file and export order.

    Never raises for bad input: missing or unreadable paths, damaged JSON and
    malformed records are recorded in ``report`` (errors, skipped counts) and
    everything readable is still yielded.
    """
    report = report if report is not None else IngestReport()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not the characters of its name
    seen: set[tuple[str, str]] = set()
    for path in paths:
        yield from _read_path(Path(path), report, seen)


def load_conversations(paths: Iterable[str | os.PathLike], report: IngestReport | None = None) -> list[Conversation]:
    return list(iter_conversations(paths, report))


def detect_format(path: str | os.PathLike) -> str:
    """"chatgpt", "claude", "custom", "hf_chat", "pdf_texts" or "unknown", from a peek at the first records.

    For a folder or a zip archive: the format of the first conversation file inside.
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _first_conversation_format(Source.from_path(f) for f in _folder_files(path))
        if not path.is_file():
            return "unknown"
        source = Source.from_path(path)
        layout = sniff_layout(source)
        if layout.kind == "zip":
            return _first_conversation_format(_zip_members(path, IngestReport()) or [])
        return _peek_format(source, layout)
    except (OSError, zipfile.BadZipFile, zlib.error):
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


def _folder_files(folder: Path) -> list[Path]:
    files = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in FILE_SUFFIXES]
    return sorted(files, key=lambda f: _natural_key(f.name))


def _zip_members(archive: Path, report: IngestReport) -> list[Source] | None:
    """The archive's .json/.jsonl files in natural name order; None (and an error) when it cannot be read."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [
                info for info in zf.infolist()
                if not info.is_dir() and info.filename.lower().endswith(FILE_SUFFIXES)
                and not info.filename.startswith("__MACOSX/") and not Path(info.filename).name.startswith("._")
            ]
    except (zipfile.BadZipFile, OSError) as exc:
        _fail(report, str(archive), f"not a readable zip archive ({exc}); download the export again")
        return None
    infos.sort(key=lambda info: _natural_key(info.filename))
    return [Source.from_zip_member(archive, info) for info in infos]


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
    raw, reader, _ = open_reader(source, limit=PEEK_BYTES)
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


def _read_path(path: Path, report: IngestReport, seen: set) -> Iterator[Conversation]:
    if path.is_dir():
        files = _folder_files(path)
        formats = []
        for file in files:
            formats.append((yield from _read_source(Source.from_path(file), False, report, seen)))
        if not any(fmt in CONVERSATION_FORMATS or fmt == "pdf_texts" for fmt in formats):
            _fail(report, str(path), f"no conversation files in this folder (looked at {len(files)} .json/.jsonl "
                                     f"files); {EXPECTED_FORMATS}")
        return
    if not path.exists():
        _fail(report, str(path), "no such file or folder; check the path (ChatGPT: conversations.json or the "
                                 "export .zip; Claude: its conversations.json)")
        return
    source = Source.from_path(path)
    try:
        layout = sniff_layout(source)
    except OSError as exc:
        _fail(report, str(path), f"cannot be read ({exc.strerror or exc})")
        return
    if layout.kind != "zip":
        yield from _read_source(source, True, report, seen, layout)
        return
    members = _zip_members(path, report)
    if members is None:
        return
    if not members:
        _fail(report, str(path), "this archive holds no .json or .jsonl files; expected a ChatGPT or Claude "
                                 "data export containing conversations.json")
        return
    formats = []
    for member in members:
        formats.append((yield from _read_source(member, False, report, seen)))
    if not any(fmt in CONVERSATION_FORMATS for fmt in formats):
        _fail(report, str(path), f"no conversations inside this archive (looked at {len(members)} .json/.jsonl "
                                 f"files); {EXPECTED_FORMATS}")


def _read_source(source: Source, named: bool, report: IngestReport, seen: set,
                 layout: Layout | None = None) -> Generator[Conversation, None, str]:
    """Yield the conversations of one file or zip member; return its format.

    ``named``: the user named this file itself (not a file found in a folder or archive).
    ``layout``: the source's :func:`sniff_layout`, when the caller already has it.
    """
    name = source.name
    if layout is None:
        try:
            layout = sniff_layout(source)
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            _fail(report, name, f"cannot be read ({exc})")
            return "unknown"
    problem = {
        "empty": "the file is empty; export or extract it again",
        "utf16": "the file is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 IN > OUT) and retry",
        "not_json": f"not JSON (it starts with {layout.first_char!r}); {EXPECTED_FORMATS}",
        "zip": "a zip archive with a .json name; rename it to .zip",
    }.get(layout.kind)
    if problem is not None:
        report.files[name] = "unknown"
        _fail(report, name, problem)
        return "unknown"
    fmt = _peek_format(source, layout)
    report.files[name] = fmt
    if fmt == "pdf_texts" or (fmt == "unknown" and not named):
        return fmt

    records = iter_jsonl_records(source) if layout.kind == "jsonl" else enumerate(iter_json_records(source, layout), 1)
    id_separator = ":" if layout.kind == "jsonl" else "#"
    kept, first_kind, errors_before = 0, None, len(report.errors)
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
            if not conversation.messages:
                report.filtered["empty_conversation"] += 1
                continue
            if conversation.source in DEDUPLICATED_FORMATS:
                key = (conversation.source, conversation.id)
                if key in seen:
                    report.filtered["duplicate_conversation"] += 1
                    continue
                seen.add(key)
            report.conversations += 1
            report.messages += len(conversation.messages)
            kept += 1
            yield conversation
    except JsonDamage as damage:
        _fail(report, name, _describe_damage(damage, kept))
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        _fail(report, name, f"reading stopped ({exc}); kept {_conversations(kept)} before it. "
                            "Download or extract the export again.")
    if fmt == "unknown" and first_kind is not None:
        report.files[name] = fmt = first_kind
    elif fmt == "unknown" and len(report.errors) == errors_before:
        _fail(report, name, f"no conversations found; {EXPECTED_FORMATS}")
    return fmt


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
    except MalformedRecord as exc:
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
