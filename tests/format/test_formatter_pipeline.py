"""data_formatter.py end to end on the bundled samples, with the shipped embedder."""

import json
import pickle
import shutil
from pathlib import Path

import pytest

import data_formatter
from rhizome.format.pipeline import FormatConfig, FormatError, run
from rhizome.format.steps import StepLog
from rhizome.pdf import PdfConfig, run as run_pdf_stage

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
SPLITS = ("train", "validation", "test")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formatter")
    for name in ("conversations.json", "conversations2.json"):
        shutil.copy(SAMPLES / name, folder / name)
    run_pdf_stage(PdfConfig(pdf_dir=str(ROOT / "PDFs"), output=str(folder / "pdf_texts.json"), workers=1))
    return folder


def config_for(workdir: Path, out: str, **overrides) -> FormatConfig:
    values = dict(inputs=[str(workdir / n) for n in ("conversations.json", "conversations2.json", "pdf_texts.json")],
                  output_dir=str(workdir / out), cache_dir=str(workdir / "cache"),
                  input_memory_texts=str(workdir / "memory_texts.npy"),
                  semantic_memory_path=str(workdir / f"{out}_semantic_memory.pkl"))
    values.update(overrides)
    return FormatConfig(**values)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_default_run_writes_every_file_in_the_fixed_line_format(workdir):
    steps = StepLog()
    metadata = run(config_for(workdir, "plain"), steps)
    # the caller's step log holds every step with its time; the result holds only the metadata
    assert "_step_table" not in metadata and [r.as_metadata() for r in steps.records] == metadata["steps"]
    assert all(r.seconds > 0 for r in steps.records) and "embed" in steps.table()
    out = workdir / "plain"
    rows = {name: read_jsonl(out / f"dataset_{name}.jsonl") for name in SPLITS}
    assert {name: len(r) for name, r in rows.items()} == metadata["splits"]
    assert all(rows.values()), "every split has pairs on the sample data"
    for row in rows["train"]:
        assert set(row) == {"id", "messages", "themes", "theme_weight", "quality", "source", "conversation_id"}
        assert [m["role"] for m in row["messages"]][-2:] == ["user", "assistant"]
        assert row["quality"] >= 0.46 and row["theme_weight"] == 1.0 and row["themes"] == []
    assert {r["source"] for rs in rows.values() for r in rs} == {"chatgpt", "claude", "pdf"}
    # a conversation never crosses splits
    owners = {}
    for name, rs in rows.items():
        for r in rs:
            assert owners.setdefault(r["conversation_id"], name) == name
    detailed = read_jsonl(out / "dataset_train_detailed.jsonl")
    assert {"quality_components", "refs", "keyphrases", "tfidf_terms", "dedup_group"} <= set(detailed[0])
    assert [s["step"] for s in metadata["steps"]] == ["load", "clean", "pairs", "embed", "quality", "dedup",
                                                      "themes", "split", "preferences", "write"]
    saved = json.loads((out / "dataset_metadata.json").read_text())
    assert saved["total_pairs"] == sum(metadata["splits"].values())
    assert json.loads((out / "format_config.json").read_text())["output_dir"] == str(out)


def test_fully_flagged_run_labels_themes_and_weights_pairs(workdir, capsys):
    args = [*config_for(workdir, "x").inputs, "--output-dir", str(workdir / "flagged"),
            "--cache-dir", str(workdir / "cache"), "--semantic-memory-path", str(workdir / "flagged.pkl"),
            "--enable-semantic-labeling", "--extract-keyphrases", "--semantic-mode", "adaptive",
            "--semantic-method", "hybrid", "--dedup-similarity-threshold", "0.95",
            "--qa-quality-score-threshold", "0.46"]
    assert data_formatter.main(args) == 0
    assert "themes; most common" in capsys.readouterr().out
    rows = read_jsonl(workdir / "flagged" / "dataset_train.jsonl")
    assert all(r["themes"] for r in rows)
    weights = [r["theme_weight"] for r in rows]
    assert len(set(weights)) > 1 and all(w > 0 for w in weights)
    metadata = json.loads((workdir / "flagged" / "dataset_metadata.json").read_text())
    assert metadata["themes"]["method"] == "hybrid" and metadata["unique_themes"] > 10
    assert any(read_jsonl(workdir / "flagged" / "dataset_train_detailed.jsonl")[i]["keyphrases"] for i in range(3))
    assert (workdir / "flagged.pkl").exists() and metadata["semantic_memory"]["runs"] == 1


def test_same_seed_and_inputs_give_byte_identical_outputs(workdir):
    for out in ("same_a", "same_b"):
        run(config_for(workdir, out, enable_semantic_labeling=True, semantic_mode="normal"))
    for name in [f"dataset_{s}{d}.jsonl" for s in SPLITS for d in ("", "_detailed")] + ["dataset_metadata.json"]:
        a, b = (workdir / "same_a" / name).read_bytes(), (workdir / "same_b" / name).read_bytes()
        if name == "dataset_metadata.json":  # the output folder is part of the saved config
            a, b = a.replace(b"same_a", b"X"), b.replace(b"same_b", b"X")
        assert a == b, name


def test_secrets_never_reach_a_training_file(workdir, tmp_path):
    key = "sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5"
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"My OpenAI key {key} stopped working after I rotated it, question {i}?"},
        {"role": "assistant", "content": f"Revoke that key at once, create a new one and keep it in an environment "
                                         f"variable rather than in your code, variant {i}."}]}) + "\n"
        for i in range(4)), encoding="utf-8")
    redacted = run(config_for(workdir, "redacted", inputs=[str(chat)]))
    text = "".join(p.read_text() for p in (workdir / "redacted").glob("*.jsonl"))
    assert key not in text and "[REDACTED:openai_key]" in text
    assert redacted["secrets_redacted"] == {"openai_key": 4}
    run(config_for(workdir, "kept", inputs=[str(chat)], redact=False))
    assert key in (workdir / "kept" / "dataset_train.jsonl").read_text()


def test_redact_pii_keeps_personal_data_out_of_the_training_files(workdir, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Please write to ann.lee@example.org or call +44 20 7946 09{i:02d} about "
                                    f"the hive inspection on Saturday, visit {i}."},
        {"role": "assistant", "content": f"I will draft a short note about the inspection for you, version {i}, "
                                         "and suggest a time in the morning when the bees are calm."}]}) + "\n"
        for i in range(4)), encoding="utf-8")
    metadata = run(config_for(workdir, "pii", inputs=[str(chat)], redact_pii=True))
    text = "".join(p.read_text() for p in (workdir / "pii").glob("*.jsonl"))
    assert "ann.lee@" not in text and "7946" not in text and "[REDACTED:email]" in text
    assert metadata["personal_data_redacted"] == {"email": 4, "phone": 4} and metadata["secrets_redacted"] == {}
    run(config_for(workdir, "pii_kept", inputs=[str(chat)]))  # off by default
    assert "ann.lee@example.org" in (workdir / "pii_kept" / "dataset_train.jsonl").read_text()


def test_missing_inputs_say_which_stage_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FormatError, match="pdf_to_json.py"):
        run(FormatConfig())
    assert data_formatter.main([]) == 2  # the shared exit code of errors the user must act on
    assert capsys.readouterr().err.startswith("error: nothing to format.")


def test_everything_filtered_names_the_step_and_the_flag(workdir):
    with pytest.raises(FormatError, match="step 'quality'.*--qa-quality-score-threshold"):
        run(config_for(workdir, "none", qa_quality_score_threshold=1.01))


def test_crafted_semantic_memory_is_refused(workdir, capsys):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = workdir / "evil.pkl"
    bad.write_bytes(pickle.dumps(Exploit()))
    args = [*config_for(workdir, "x").inputs, "--output-dir", str(workdir / "evil"), "--cache-dir",
            str(workdir / "cache"), "--enable-semantic-labeling", "--semantic-memory-path", str(bad)]
    assert data_formatter.main(args) == 2
    captured = capsys.readouterr()
    assert "pwned" not in captured.out and "refusing" in captured.err


def test_outputs_load_with_datasets(workdir):
    import datasets
    out = workdir / "plain"
    if not out.exists():
        run(config_for(workdir, "plain"))
    loaded = datasets.load_dataset("json", data_files={s: str(out / f"dataset_{s}.jsonl") for s in SPLITS})
    assert loaded["train"][0]["messages"][-1]["role"] == "assistant"


def test_formatter_embeds_nothing_the_memory_holds_even_a_message_over_the_token_limit(tmp_path):
    from rhizome.memory.build import EmbedConfig, build_memory

    long_reply = " ".join(f"Step {i}: lift frame {i} and look for eggs, larvae and sealed brood in the nest."
                          for i in range(40))  # ~900 word pieces: the memory holds it as four pieces
    turns = ["How do I inspect a hive in spring?", long_reply, "And how often should I open it?",
             "Every seven to ten days in the swarming season, less often later in the summer."]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": r, "content": t} for r, t in
                                             zip(["user", "assistant"] * 2, turns)]}) + "\n")
    memory = build_memory(EmbedConfig(inputs=[str(chat)], output_dir=str(tmp_path / "memory"),
                                      cache_dir=str(tmp_path / "memory_cache")))
    assert memory["split_items"] >= 3
    steps = StepLog()
    metadata = run(FormatConfig(inputs=[str(chat)], output_dir=str(tmp_path / "out"),
                                cache_dir=str(tmp_path / "formatter_cache"),  # empty: only the memory can help
                                input_memory_texts=str(tmp_path / "memory" / "memory_texts.npy"),
                                qa_quality_score_threshold=0.0, semantic_memory_path=str(tmp_path / "s.pkl")), steps)
    embed = next(r for r in steps.records if r.name == "embed")
    assert embed.varying["newly_embedded"] == 0
    assert metadata["embeddings"]["texts_from_memory"] == memory["items"]


def test_formatter_embeds_nothing_the_memory_holds_when_cleaning_changes_whitespace(tmp_path):
    """Turns as exports hold them: trailing spaces before line breaks, runs of blank lines, Windows line ends,
    non-breaking and zero-width spaces. The memory stores them normalised as the formatter does, so the
    formatter finds every vector there (it used to embed each such turn again)."""
    from rhizome.memory.build import EmbedConfig, build_memory

    long_reply = "\n\n\n\n".join(f"Step {i}: lift frame {i}   \nand look for eggs,\u00a0larvae and sealed brood.  "
                                 for i in range(60))  # over the token limit: split into pieces after normalising
    turns = ["How do I inspect a hive in spring?  \nI am new to this.\t", long_reply,
             "And how often\u200b should I open it?\r\n\r\nThanks!", "Every seven to ten days in the swarming "
             "season.   \n\n\n\n\n\nLess often later in the summer.\n\n"]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": r, "content": t} for r, t in
                                             zip(["user", "assistant"] * 2, turns)]}) + "\n")
    memory = build_memory(EmbedConfig(inputs=[str(chat)], output_dir=str(tmp_path / "memory"),
                                      cache_dir=str(tmp_path / "memory_cache")))
    assert memory["split_items"] >= 2
    steps = StepLog()
    metadata = run(FormatConfig(inputs=[str(chat)], output_dir=str(tmp_path / "out"),
                                cache_dir=str(tmp_path / "formatter_cache"),  # empty: only the memory can help
                                input_memory_texts=str(tmp_path / "memory" / "memory_texts.npy"),
                                qa_quality_score_threshold=0.0, semantic_memory_path=str(tmp_path / "s.pkl")), steps)
    assert metadata["clean"]["texts_changed"] == len(turns)  # the fixture does hold what cleaning changes
    embed = next(r for r in steps.records if r.name == "embed")
    assert embed.varying["newly_embedded"] == 0
    assert metadata["embeddings"]["texts_from_memory"] == memory["items"]
