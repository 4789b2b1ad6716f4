"""The stage end to end: bad files skipped with reasons, --strict, incremental reruns, parallel = serial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pdf_samples import encrypted_pdf, scanned_pdf

from rhizome.pdf import pipeline
from rhizome.pdf.pipeline import (
    FORMAT,
    FileTask,
    PdfConfig,
    PdfTextsError,
    extract_file,
    format_summary,
    load_pdf_texts,
    run,
)

ROOT = Path(__file__).resolve().parents[2]


def config(folder: Path, output: Path, **settings) -> PdfConfig:
    return PdfConfig(pdf_dir=str(folder), output=str(output), **settings)


def read(output: Path) -> dict:
    return json.loads(output.read_text(encoding="utf-8"))


@pytest.fixture
def bad_folder(tmp_path, good_pdf):
    """Two good PDFs, one that opens with the empty password, and one of each kind of bad file."""
    folder = tmp_path / "pdfs"
    good = good_pdf("good.pdf").read_bytes()
    good_pdf("sub/also_good.pdf", pages=4)
    encrypted_pdf(folder / "empty_password.pdf", user_password="")
    encrypted_pdf(folder / "locked.pdf", user_password="hunter2")
    (folder / "truncated.pdf").write_bytes(good[: len(good) // 2])
    (folder / "damaged.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20 + b"\n%%EOF\n")
    (folder / "zero.pdf").write_bytes(b"")
    (folder / "notes.pdf").write_text("shopping list: eggs, flour, honey\n")
    scanned_pdf(folder / "scan.pdf")
    return folder


REASONS = {
    "locked.pdf": "encrypted",
    "truncated.pdf": "truncated",
    "damaged.pdf": "damaged",
    "zero.pdf": "empty file",
    "notes.pdf": "not a PDF",
    "scan.pdf": "no text layer",
}


def test_bad_files_are_skipped_with_a_reason_and_the_rest_written(bad_folder, tmp_path):
    output = tmp_path / "out" / "pdf_texts.json"
    report = run(config(bad_folder, output, workers=2))
    data = read(output)
    assert data["format"] == FORMAT and data["version"] == 1
    skipped = {entry["file"]: entry["reason"] for entry in data["skipped"]}
    assert set(skipped) == set(REASONS)
    for file, word in REASONS.items():
        assert word in skipped[file], (file, skipped[file])
    assert dict(report.skipped) == skipped
    read_files = {entry["file"] for entry in data["files"] if entry["status"] == "new"}
    assert read_files == {"good.pdf", "sub/also_good.pdf", "empty_password.pdf"}
    assert {chunk["source_file"] for chunk in data["chunks"]} == read_files
    assert [entry["file"] for entry in data["files"]] == sorted(entry["file"] for entry in data["files"])
    summary = format_summary(report)
    for file in REASONS:
        assert file in summary
    assert "skipped 6" in summary
    saved = read(output.parent / "pdf_to_json_config.json")
    assert saved["chunk_size"] == 1000 and saved["pdf_dir"] == str(bad_folder)


def test_strict_exits_1_after_writing_the_output(bad_folder, tmp_path):
    env = {**os.environ, "RHIZOME_NO_PROGRESS": "1"}
    output = tmp_path / "strict.json"
    command = [sys.executable, str(ROOT / "pdf_to_json.py"), str(bad_folder), "-o", str(output), "--workers", "2"]
    strict = subprocess.run(command + ["--strict"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            check=False)
    assert strict.returncode == 1, strict.stderr
    assert "locked.pdf" in strict.stdout and "--strict" in strict.stderr
    assert len(read(output)["chunks"]) > 0
    lenient = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                            check=False)
    assert lenient.returncode == 0, lenient.stderr
    assert "reused 3" in lenient.stdout


def test_incremental_rerun_reuses_adds_and_drops(tmp_path, good_pdf):
    folder = tmp_path / "pdfs"
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        good_pdf(name)
    output = tmp_path / "pdf_texts.json"
    first = run(config(folder, output))
    assert (first.new, first.reused, first.removed) == (3, 0, 0)
    before = read(output)

    again = run(config(folder, output))
    assert (again.new, again.changed, again.reused, again.removed, again.pages_read) == (0, 0, 3, 0, 0)
    assert read(output)["chunks"] == before["chunks"]

    (folder / "c.pdf").unlink()
    good_pdf("d.pdf")
    good_pdf("b.pdf", word="propolis")
    rerun = run(config(folder, output))
    assert (rerun.new, rerun.changed, rerun.reused, rerun.removed) == (1, 1, 1, 1)
    assert "reused 1, removed 1" in format_summary(rerun)
    data = read(output)
    assert {f["file"]: f["status"] for f in data["files"]} == {"a.pdf": "reused", "b.pdf": "changed",
                                                               "d.pdf": "new"}
    assert [c for c in data["chunks"] if c["source_file"] == "a.pdf"] == \
           [c for c in before["chunks"] if c["source_file"] == "a.pdf"]
    assert any("propolis" in c["text"] for c in data["chunks"] if c["source_file"] == "b.pdf")

    fresh = tmp_path / "fresh.json"
    run(config(folder, fresh, reuse=False))
    assert read(fresh)["chunks"] == data["chunks"]

    resized = run(config(folder, output, chunk_size=500))
    assert (resized.reused, resized.new) == (0, 3), "other chunk settings: every file is read again"


def test_parallel_output_is_identical_to_one_worker(tmp_path, good_pdf):
    folder = tmp_path / "pdfs"
    for index in range(6):
        good_pdf(f"doc{index}.pdf", pages=2 + index % 3)
    run(config(folder, tmp_path / "one.json", workers=1))
    run(config(folder, tmp_path / "three.json", workers=3))
    assert (tmp_path / "one.json").read_text() == (tmp_path / "three.json").read_text()


def crash_on_boom(task: FileTask):
    if "boom" in task.file:
        os._exit(3)
    return extract_file(task)


def hang_on_slow(task: FileTask):
    if "slow" not in task.file:
        return extract_file(task)
    original = pipeline.read_pdf
    pipeline.read_pdf = lambda path: time.sleep(30)
    try:
        return extract_file(task)
    finally:
        pipeline.read_pdf = original


def test_a_worker_crash_costs_only_its_file(tmp_path, good_pdf):
    folder = tmp_path / "pdfs"
    names = ["a.pdf", "b.pdf", "boom.pdf", "c.pdf", "d.pdf", "e.pdf", "f.pdf", "g.pdf"]
    for name in names:
        good_pdf(name)
    output = tmp_path / "out.json"
    report = run(config(folder, output, workers=2), extract=crash_on_boom)
    assert [file for file, _ in report.skipped] == ["boom.pdf"]
    assert "worker process died" in report.skipped[0][1]
    assert report.new == 7
    assert {chunk["source_file"] for chunk in read(output)["chunks"]} == set(names) - {"boom.pdf"}


def test_a_file_past_the_timeout_is_skipped(tmp_path, good_pdf):
    folder = tmp_path / "pdfs"
    good_pdf("fine.pdf")
    good_pdf("slow.pdf")
    started = time.perf_counter()
    report = run(config(folder, tmp_path / "out.json", workers=2, timeout=0.5), extract=hang_on_slow)
    assert time.perf_counter() - started < 10
    assert [file for file, _ in report.skipped] == ["slow.pdf"]
    assert "--timeout" in report.skipped[0][1]


def test_load_pdf_texts_reads_our_file_and_bare_lists(tmp_path, good_pdf):
    good_pdf("a.pdf")
    output = tmp_path / "pdf_texts.json"
    run(config(tmp_path / "pdfs", output))
    chunks = load_pdf_texts(output)
    assert chunks == read(output)["chunks"]
    assert {"id", "text", "source_file", "page_start", "page_end", "chunk_index", "char_count", "sha256",
            "title", "author", "source"} <= set(chunks[0])

    bare = tmp_path / "old.json"
    bare.write_text(json.dumps([{"text": "Old chunk.", "filename": "x.pdf", "page": 4}]))
    (old,) = load_pdf_texts(bare)
    assert (old["text"], old["source_file"], old["page_start"], old["page_end"], old["source"]) == \
           ("Old chunk.", "x.pdf", 4, 4, "pdf")


@pytest.mark.parametrize("content,expected", [
    ("{not json", "not valid JSON"),
    ('{"format": "something.else", "chunks": []}', "not a PDF texts file"),
    ('{"format": "rhizome.pdf_texts", "version": 99, "chunks": []}', "version 99"),
    ('[{"no_text": 1}]', "chunk 0"),
    ('"a string"', "JSON str"),
])
def test_load_pdf_texts_explains_a_broken_or_foreign_file(tmp_path, content, expected):
    path = tmp_path / "pdf_texts.json"
    path.write_text(content)
    with pytest.raises(PdfTextsError) as error:
        load_pdf_texts(path)
    assert expected in str(error.value) and str(path) in str(error.value)
    assert "pdf_to_json.py" in str(error.value)


def test_missing_file_is_explained(tmp_path):
    with pytest.raises(PdfTextsError, match="does not exist"):
        load_pdf_texts(tmp_path / "nope.json")


def test_a_foreign_output_file_is_not_overwritten(tmp_path, good_pdf):
    good_pdf("a.pdf")
    output = tmp_path / "conversations.json"
    output.write_text('{"conversations": []}')
    with pytest.raises(PdfTextsError, match="refusing to overwrite"):
        run(config(tmp_path / "pdfs", output))
    assert output.read_text() == '{"conversations": []}'


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        run(config(tmp_path, tmp_path / "out.json", chunk_size=200, overlap=150))
