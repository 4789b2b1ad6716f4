"""Bad input to the importers and the PDF stage: a seeded corpus of broken files, run under a memory limit.

    python bench/fuzz_inputs.py [--seed 0] [--mutations 80] [--memory-gb 3] [--keep DIR]

Writes a corpus into a temporary folder: one or more files for every class of
bad input the importers must survive (JSON and JSONL nested 100,000 deep,
numbers beyond int64 or double range, fields of the wrong type, times out of
range, lone surrogates, a FIFO and devices, password-protected, Deflate64 and
AES zip members, a 200 KB zip bomb expanding to one 210 MB message, a zip of
1,000 members, a ChatGPT tree of 16,000 nodes without ``current_node``, one id
given to two conversations) plus random truncations and byte flips of the
sample exports in samples/ and of the sample PDFs in PDFs/. Good
conversations are mixed in: in files of their own between the bad ones, before
the damage in damaged files, beside bad members in zips and beside a FIFO in a
folder.

A child process, under RLIMIT_AS (``--memory-gb``), then reads every file on
its own the way the stages do (``split_inputs``, ``load_pdf_chunks``,
``iter_conversations``), reads all of them again in one run, and runs the PDF
stage over the PDFs. It prints files tried, named errors, skips, repairs,
tracebacks and hangs (both must be 0), peak memory, and whether every good
conversation was imported; the exit status is 1 when any of those fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

SAMPLE_EXPORTS = ["conversations.json", "conversations2.json", "custom_conversations.json", "chat.jsonl"]
PER_FILE_SECONDS = 60  # a file that takes longer counts as a hang


# --------------------------------------------------------------------------- good conversations

class Good:
    """The good conversations written into the corpus: (source, id) -> number of turns expected."""

    def __init__(self):
        self.expected: dict[tuple[str, str], int] = {}
        self.count = 0

    def claude(self, turns: int = 2, **extra) -> dict:
        self.count += 1
        key = f"good-claude-{self.count}"
        self.expected[("claude", key)] = turns
        return claude_record(key, [f"good turn {n} of {key}" for n in range(turns)], **extra)

    def chatgpt(self, turns: int = 2) -> dict:
        self.count += 1
        key = f"good-chatgpt-{self.count}"
        self.expected[("chatgpt", key)] = turns
        return chatgpt_record(key, [f"good turn {n} of {key}" for n in range(turns)])

    def jsonl_line(self) -> str:
        self.count += 1
        key = f"good-chat-{self.count}"
        self.expected[("hf_chat", key)] = 2
        return json.dumps({"id": key, "messages": [{"role": "user", "content": f"question of {key}"},
                                                   {"role": "assistant", "content": f"answer of {key}"}]})


def claude_record(key: str, texts: list[str], updated: object = "2024-05-01T10:00:00Z") -> dict:
    messages = [{"uuid": f"{key}-{n}", "sender": "human" if n % 2 == 0 else "assistant", "text": text,
                 "created_at": "2024-05-01T09:00:00Z"} for n, text in enumerate(texts)]
    return {"uuid": key, "name": key, "created_at": "2024-05-01T09:00:00Z", "updated_at": updated,
            "chat_messages": messages}


def chatgpt_record(key: str, texts: list[str]) -> dict:
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for n, text in enumerate(texts):
        node = f"{key}-{n}"
        mapping[node] = {"id": node, "parent": parent, "children": [], "message": {
            "id": node, "author": {"role": "user" if n % 2 == 0 else "assistant"}, "create_time": 1.7e9 + n,
            "content": {"content_type": "text", "parts": [text]}, "recipient": "all"}}
        mapping[parent]["children"].append(node)
        parent = node
    return {"id": key, "title": key, "create_time": 1.7e9, "update_time": 1.7e9 + len(texts), "mapping": mapping,
            "current_node": parent}


# --------------------------------------------------------------------------- the corpus

class Corpus:
    def __init__(self, folder: Path, rng: random.Random):
        self.folder = folder
        self.rng = rng
        self.good = Good()
        self.inputs: list[str] = []  # what the stages are given, in order
        self.pdfs = folder / "pdfs"
        self.pdfs.mkdir()

    def path(self, name: str) -> Path:
        return self.folder / f"{len(self.inputs):04d}-{name}"

    def add(self, name: str, data: bytes | str) -> Path:
        path = self.path(name)
        path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        self.inputs.append(str(path))
        return path

    def add_json(self, name: str, records: list) -> Path:
        return self.add(name, json.dumps(records))

    def good_file(self) -> None:
        """A good file between bad ones: one of each export kind in turn."""
        kind = self.rng.randrange(3)
        if kind == 0:
            self.add_json("good-claude.json", [self.good.claude(), self.good.claude(4)])
        elif kind == 1:
            self.add_json("good-chatgpt.json", [self.good.chatgpt(), self.good.chatgpt(4)])
        else:
            self.add("good-chat.jsonl", "\n".join(self.good.jsonl_line() for _ in range(3)) + "\n")


def deep_nesting(corpus: Corpus) -> None:
    good = json.dumps(corpus.good.claude())
    corpus.add("deep-arrays.json", f"[{good}, " + "[" * 100_000 + "]" * 100_000 + "]")
    corpus.add("deep-objects.json", f"[{json.dumps(corpus.good.claude())}, " + '{"a":' * 100_000 + "1"
               + "}" * 100_000 + "]")
    corpus.add("deep-line.jsonl", "\n".join([corpus.good.jsonl_line(), '{"messages": ' + "[" * 100_000
                                             + "]" * 100_000 + "}", corpus.good.jsonl_line()]) + "\n")
    corpus.add("deep-first-line.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n{}\n")
    corpus.add("deep-unclosed.json", "[" * 200_000)


def big_numbers(corpus: Corpus) -> None:
    for number in ["9" * 5000, str(2 ** 63), str(-(2 ** 63)), str(2 ** 64), "1e400", "-1" + "0" * 400 + ".5"]:
        record = corpus.good.claude()
        text = json.dumps([corpus.good.claude(), record, corpus.good.claude()])
        corpus.add("number.json", text.replace('"updated_at": "2024-05-01T10:00:00Z"', f'"updated_at": {number}', 2))
        line = corpus.good.jsonl_line().replace('{"id"', f'{{"timestamp": {number}, "id"', 1)
        corpus.add("number.jsonl", line + "\n" + corpus.good.jsonl_line() + "\n")
    corpus.add("number-as-id.json", json.dumps([{"uuid": 1, "chat_messages": []}]).replace("1", "7" * 5000, 1))


def wrong_types(corpus: Corpus) -> None:
    oddities = [[], {}, None, 0, -1.5, True, "", [["nested"]], {"a": {"b": []}}, "x" * 1000]
    for n in range(20):
        claude = claude_record(f"odd-claude-{n}", ["a", "b"])
        chatgpt = chatgpt_record(f"odd-chatgpt-{n}", ["a", "b"])
        message = claude["chat_messages"][0]
        target = corpus.rng.choice([claude, message, chatgpt, chatgpt["mapping"]["root"],
                                    chatgpt["mapping"][f"odd-chatgpt-{n}-0"]["message"]])
        field = corpus.rng.choice(sorted(target))
        target[field] = corpus.rng.choice(oddities)
        if n % 4 == 0:
            message["parent_message_uuid"] = corpus.rng.choice(oddities)
        corpus.add("wrong-type.json", json.dumps([corpus.good.claude(), claude, chatgpt, corpus.good.chatgpt()]))
    custom = {"conversations": [{"id": [1], "messages": [{"author": {"x": 1}, "content": [{"type": []}]}]},
                                {"id": "ok", "messages": "not a list"}]}
    corpus.add("wrong-type-custom.json", json.dumps(custom))


def times_out_of_range(corpus: Corpus) -> None:
    for moment in [1e300, -1e300, "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1" * 400, "nan"]:
        corpus.add("time.json", json.dumps([corpus.good.claude(updated=moment)]))


def surrogates(corpus: Corpus) -> None:
    text = json.dumps([corpus.good.claude(), corpus.good.claude()])
    corpus.add("surrogate.json", text.replace("good turn 0", "good \\udc00 turn \\ud800 0"))
    line = corpus.good.jsonl_line().replace("question", "question \\udfff", 1)
    corpus.add("surrogate.jsonl", line + "\n")
    corpus.add("surrogate-raw.jsonl", b'{"messages": [{"role": "user", "content": "\xed\xb0\x80"}]}\n')


def not_regular_files(corpus: Corpus) -> None:
    fifo = corpus.path("fifo.json")
    os.mkfifo(fifo)
    corpus.inputs.append(str(fifo))
    folder = corpus.path("folder-with-fifo")
    folder.mkdir()
    os.mkfifo(folder / "conversations-000.json")
    (folder / "conversations-001.json").write_text(json.dumps([corpus.good.claude()]))
    corpus.inputs.append(str(folder))
    corpus.inputs.extend(["/dev/zero", "/dev/null"])


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_member(data: bytes, name: str, flag_bits: int | None = None, method: int | None = None) -> bytes:
    """A member's flags or compression method, in its local and central header, as an encrypting or Deflate64
    archiver writes them (zipfile cannot write either)."""
    patched = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local = archive.getinfo(name).header_offset
    central = patched.find(b"PK\x01\x02")
    while patched[central + 46:central + 46 + len(name)] != name.encode():
        central = patched.find(b"PK\x01\x02", central + 4)
    # flag bits and method: at +6 / +8 in the local header, +8 / +10 in the central one
    for field, value in ((6, flag_bits), (8, method)):
        if value is not None:
            patched[local + field:local + field + 2] = value.to_bytes(2, "little")
            patched[central + field + 2:central + field + 4] = value.to_bytes(2, "little")
    return bytes(patched)


def zips(corpus: Corpus) -> None:
    members = {f"conversations-{n}.json": json.dumps([corpus.good.claude()]).encode() for n in range(2)}
    members.update({f"locked-{n}.json": json.dumps([claude_record(f"locked-{n}", ["a", "b"])]).encode()
                    for n in range(3)})
    data = zip_bytes(members)
    data = patch_member(data, "locked-0.json", flag_bits=0x1)
    data = patch_member(data, "locked-1.json", method=9)
    data = patch_member(data, "locked-2.json", flag_bits=0x1, method=99)
    corpus.add("locked-members.zip", data)

    bomb = corpus.path("bomb.zip")
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("good.json", json.dumps([corpus.good.claude()]))
        with archive.open("conversations.json", "w", force_zip64=True) as member:
            member.write(b'[{"uuid": "bomb", "chat_messages": [{"sender": "human", "text": "')
            block = b"a" * (1 << 20)
            for _ in range(210):
                member.write(block)
            member.write(b'"}]}]')
    corpus.inputs.append(str(bomb))

    many = {f"conversations-{n:04d}.json": json.dumps([corpus.good.claude()]).encode() for n in range(1000)}
    corpus.add("1000-members.zip", zip_bytes(many))

    lying = bytearray(zip_bytes({"conversations.json": json.dumps([claude_record("liar", ["a", "b"])]).encode()}))
    central = lying.find(b"PK\x01\x02")
    lying[central + 24:central + 28] = (10).to_bytes(4, "little")  # uncompressed size: 10 bytes
    corpus.add("lying-size.zip", bytes(lying))
    export = (ROOT / "samples" / "conversations.json").read_bytes()
    corpus.add("truncated.zip", zip_bytes({"conversations.json": export})[:9000])
    corpus.add("zip-in-zip.zip", zip_bytes({"inner.zip": zip_bytes({"c.json": b"[]"}), "x.json": b"[1, 2"}))


def large_trees(corpus: Corpus) -> None:
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for n in range(8_000):  # 16,000 nodes: a spine with a leaf on every node, no current_node
        for node, role in ((f"s{n}", "user"), (f"l{n}", "assistant")):
            mapping[node] = {"id": node, "parent": parent if role == "user" else f"s{n}", "children": [],
                             "message": {"author": {"role": role}, "content": {"parts": [f"{role} {n}"]}}}
        parent = f"s{n}"
    corpus.add("comb-16k.json", json.dumps([{"id": "comb", "mapping": mapping}]))
    loop = chatgpt_record("loop", ["a", "b", "c"])
    loop["mapping"]["root"]["parent"] = "loop-2"  # a parent cycle
    del loop["current_node"]
    corpus.add("parent-cycle.json", json.dumps([loop, corpus.good.chatgpt()]))


def same_ids(corpus: Corpus) -> None:
    corpus.add_json("version-old.json", [claude_record("versioned", ["q1", "a1"], updated="2024-01-01T00:00:00Z")])
    corpus.add_json("version-new.json", [claude_record("versioned", ["q1", "a1", "q2", "a2"],
                                                       updated="2024-02-01T00:00:00Z")])
    corpus.good.expected[("claude", "versioned")] = 4
    corpus.add_json("stranger-a.json", [claude_record("shared-id", ["bees", "yes"])])
    corpus.add_json("stranger-b.json", [claude_record("shared-id", ["bicycles", "no"])])
    corpus.good.expected[("claude", "shared-id")] = 2
    corpus.good.expected[("claude", "shared-id~2")] = 2


def odd_files(corpus: Corpus) -> None:
    corpus.add("empty.json", b"")
    corpus.add("nul.json", b"\x00" * 5000)
    corpus.add("utf16.json", json.dumps([claude_record("u16", ["a", "b"])]).encode("utf-16"))
    corpus.add("random.json", corpus.rng.randbytes(20_000))
    corpus.add("html.json", "<!DOCTYPE html><html><body>export</body></html>")
    corpus.add("pdf-named.json", (ROOT / "PDFs" / "steel_bicycle.pdf").read_bytes())
    corpus.add("long-number-run.json", "[" + "1" * 3_000_000 + "]")
    corpus.add("pdf_texts-damaged.json", '{"format": "rhizome.pdf_texts", "version": 1, "chunks": [{"text": 5}')
    corpus.add("pdf_texts-list.json", json.dumps([{"text": "a chunk", "source_file": ["x"], "page_start": "one"}]))


STRUCTURAL = b'[]{}",:\\0123456789-eE. \n'
SPLICES = [b"\\udc00", b"\\ud83d", b"9" * 25, b"-1e999", b"[" * 300, b"{" * 300, b'"', b"\\", b"null", b"{}",
           b'"mapping": []', b'"chat_messages": {}', b'"uuid": [1]', b'"create_time": 1e300', b"\xed\xa0\x80"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A truncation, one to eight bytes replaced (half of them by JSON's structural characters), or a splice:
    a known troublemaker or a slice of the file itself inserted at a random place."""
    choice = rng.random()
    if choice < 0.3:
        return data[:rng.randrange(len(data))]
    if choice < 0.7:
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(damaged))
            damaged[position] = rng.choice(STRUCTURAL) if rng.random() < 0.5 else rng.randrange(256)
        return bytes(damaged)
    start = rng.randrange(len(data))
    piece = rng.choice(SPLICES) if rng.random() < 0.6 else data[start:start + rng.randint(1, 2000)]
    position = rng.randrange(len(data))
    return data[:position] + piece + data[position:]


def mutations(corpus: Corpus, count: int) -> None:
    for name in SAMPLE_EXPORTS:
        data = (ROOT / "samples" / name).read_bytes()
        for n in range(count):
            mutated = mutate(data, corpus.rng)
            if n % 10 == 9:
                corpus.add(f"mutated-{name}.zip", zip_bytes({name: mutated}))
            else:
                corpus.add(f"mutated-{name}", mutated)
            if n % 15 == 0:
                corpus.good_file()
    for pdf in sorted((ROOT / "PDFs").glob("*.pdf")):
        data = pdf.read_bytes()
        shutil.copy(pdf, corpus.pdfs / pdf.name)
        for n in range(count // 2):
            (corpus.pdfs / f"{pdf.stem}-{n:03d}.pdf").write_bytes(mutate(data, corpus.rng))
    os.mkfifo(corpus.pdfs / "fifo.pdf")
    (corpus.pdfs / "empty.pdf").write_bytes(b"")


def build_corpus(folder: Path, seed: int, count: int) -> dict:
    corpus = Corpus(folder, random.Random(seed))
    for make in (deep_nesting, big_numbers, wrong_types, times_out_of_range, surrogates, not_regular_files, zips,
                 large_trees, same_ids, odd_files):
        make(corpus)
        corpus.good_file()
    mutations(corpus, count)
    return {"inputs": corpus.inputs, "pdfs": str(corpus.pdfs), "output": str(folder / "out"),
            "good": [[source, key, turns] for (source, key), turns in corpus.good.expected.items()]}


# --------------------------------------------------------------------------- the child: read it all

class Hang(Exception):
    pass


def on_alarm(signum, frame):
    raise Hang()


def read_everything(manifest: dict) -> dict:
    from rhizome.ingest import IngestReport, iter_conversations
    from rhizome.inputs import load_pdf_chunks, split_inputs
    from rhizome.pdf.pipeline import PdfConfig, find_pdfs, run

    signal.signal(signal.SIGALRM, on_alarm)
    totals = {"files": 0, "errors": 0, "skipped": 0, "repaired": 0, "tracebacks": [], "hangs": []}
    started = time.perf_counter()
    for path in manifest["inputs"]:
        totals["files"] += 1
        report = IngestReport()
        signal.alarm(PER_FILE_SECONDS)
        try:
            conversation_files, pdf_files = split_inputs([path])
            load_pdf_chunks(pdf_files, report)
            for _ in iter_conversations(conversation_files, report):
                pass
        except Hang:
            totals["hangs"].append(path)
        except Exception:  # what the fuzzing is for: count it, keep going
            totals["tracebacks"].append(f"{path}\n{traceback.format_exc(limit=6)}")
        finally:
            signal.alarm(0)
        totals["errors"] += len(report.errors)
        totals["skipped"] += report.skipped_conversations + report.skipped_messages
        totals["repaired"] += sum(report.repaired.values())
    per_file_seconds = time.perf_counter() - started

    # All at once, as a user naming everything would: the good conversations must all come through.
    report = IngestReport()
    imported: dict[tuple[str, str], int] = {}
    signal.alarm(20 * PER_FILE_SECONDS)
    try:
        for conversation in iter_conversations(manifest["inputs"], report):
            imported[(conversation.source, conversation.id)] = len(conversation.messages)
    except Exception:
        totals["tracebacks"].append(f"(all inputs together)\n{traceback.format_exc(limit=6)}")
    except Hang:
        totals["hangs"].append("(all inputs together)")
    finally:
        signal.alarm(0)
    missing = [(source, key, turns, imported.get((source, key))) for source, key, turns in manifest["good"]
               if imported.get((source, key)) != turns]

    pdf_started = time.perf_counter()
    pdf_found = len(find_pdfs(Path(manifest["pdfs"])))
    pdf_skipped = 0
    try:
        pdf_report = run(PdfConfig(pdf_dir=manifest["pdfs"], output=str(Path(manifest["output"]) / "pdf_texts.json"),
                                   workers=2, timeout=PER_FILE_SECONDS, reuse=False))
        pdf_skipped = len(pdf_report.skipped)
    except Exception:
        totals["tracebacks"].append(f"(PDF stage)\n{traceback.format_exc(limit=6)}")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {**totals, "per_file_seconds": per_file_seconds, "pdf_seconds": time.perf_counter() - pdf_started,
            "together_conversations": report.conversations, "together_errors": len(report.errors),
            "good": len(manifest["good"]), "missing": missing, "pdf_files": pdf_found, "pdf_skipped": pdf_skipped,
            "peak_mb": own / 1024, "peak_worker_mb": workers / 1024}


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mutations", type=int, default=80,
                        help="mutated copies of each sample export (and half as many of each sample PDF)")
    parser.add_argument("--memory-gb", type=float, default=3.0, help="RLIMIT_AS of the process reading the corpus")
    parser.add_argument("--keep", metavar="DIR", help="write the corpus here and keep it (default: a temp folder)")
    parser.add_argument("--child", metavar="MANIFEST", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        limit = int(args.memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result = read_everything(json.loads(Path(args.child).read_text()))
        print(json.dumps(result))
        return 0

    if args.keep:
        folder = Path(args.keep)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="rhizome-fuzz-"))
    try:
        started = time.perf_counter()
        manifest = build_corpus(folder, args.seed, args.mutations)
        manifest_path = folder / "manifest.json"
        manifest_path.write_text(json.dumps(manifest))
        built = time.perf_counter() - started
        done = subprocess.run([sys.executable, __file__, "--child", str(manifest_path), "--memory-gb",
                               str(args.memory_gb)], capture_output=True, text=True, cwd=folder)
        if done.returncode != 0:
            print(done.stderr[-4000:], file=sys.stderr)
            print(f"the reading process died (status {done.returncode}) under a {args.memory_gb} GB limit")
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    corpus_files = len(manifest["inputs"]) + result["pdf_files"]
    print(f"corpus: {corpus_files} files ({len(manifest['inputs'])} conversation inputs, {result['pdf_files']} PDFs), "
          f"seed {args.seed}, built in {built:.1f} s")
    print(f"conversation inputs, one at a time: {result['files']} tried in {result['per_file_seconds']:.1f} s; "
          f"{result['errors']} named errors, {result['skipped']} malformed records or messages skipped, "
          f"{result['repaired']} values repaired")
    print(f"all inputs in one run: {result['together_conversations']} conversations, "
          f"{result['together_errors']} named errors; good conversations imported: "
          f"{result['good'] - len(result['missing'])} of {result['good']}")
    print(f"PDF stage: {result['pdf_files']} PDFs, {result['pdf_skipped']} skipped with a reason, "
          f"{result['pdf_seconds']:.1f} s")
    print(f"tracebacks: {len(result['tracebacks'])}, hangs: {len(result['hangs'])}")
    print(f"peak memory (RSS): {result['peak_mb']:.0f} MB reading, {result['peak_worker_mb']:.0f} MB in a PDF "
          f"worker; address-space limit {args.memory_gb:g} GB")
    for failure in result["tracebacks"][:5] + result["hangs"][:5]:
        print("\n" + failure)
    for source, key, turns, got in result["missing"][:10]:
        print(f"missing: {source} {key}: expected {turns} turns, got {got}")
    return 1 if result["tracebacks"] or result["hangs"] or result["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
