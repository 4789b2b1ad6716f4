"""End to end with the shipped embedder: exports + PDFs -> memory files -> search."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import batch_embedder
from rhizome import safe_pickle
from rhizome.chat.retrieval import ChatMemory, memory_line
from rhizome.memory.build import EmbedConfig, build_memory
from rhizome.memory.embedder import EmbeddingCache, text_key
from rhizome.memory.store import Memory, MemoryFilesError
from rhizome.pdf import PdfConfig, run as run_pdf_stage

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    run_pdf_stage(PdfConfig(pdf_dir=str(ROOT / "PDFs"), output=str(folder / "pdf_texts.json"), workers=1))
    chat = folder / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": m}) + "\n" for m in [
        [{"role": "system", "content": "You are helpful."},
         {"role": "user", "content": "My bike chain skips under load on the big cog. What should I check?"},
         {"role": "assistant", "content": "Measure chain wear first: a stretched chain skips on worn cogs. "
                                          "Then check the rear derailleur hanger alignment and cable tension."}],
        [{"role": "user", "content": "How warm should the fruiting room be for oyster mushrooms?"},
         {"role": "assistant", "content": "Keep it around 15 to 20 °C with high humidity and fresh air."}],
    ]), encoding="utf-8")
    return folder


def test_build_writes_aligned_memory_files_and_search_finds_the_right_source(corpus, tmp_path):
    out = tmp_path / "out"
    config = EmbedConfig(inputs=[str(corpus / "chat.jsonl"), str(corpus / "pdf_texts.json")],
                         output_dir=str(out), cache_dir=str(tmp_path / "cache"))
    summary = build_memory(config)

    vectors = np.load(out / "memory_texts.npy")
    metadata = safe_pickle.load(out / "memory_metadata.pkl")
    assert vectors.shape == (len(metadata), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert summary["messages"] == 4  # the system turn is not memory
    assert {m["source"] for m in metadata} == {"hf_chat", "pdf"}
    assert all(type(m) is dict for m in metadata)
    saved = json.loads((out / "memory_config.json").read_text())
    assert saved["embedding_model"] == config.embedding_model and saved["summary"]["items"] == len(metadata)

    memory = Memory.load(out)
    (hit,) = memory.search("chain skipping on the rear cog", k=1)
    assert hit.metadata["role"] == "user" and "chain skips" in hit.text
    pdf_hit = memory.search("queen cells in May are a sign of swarming", k=1)[0]
    assert pdf_hit.metadata["file"] == "beekeeping_basics.pdf"
    assert "Queen cells" in pdf_hit.text
    assert pdf_hit.metadata["page_start"] <= pdf_hit.metadata["page_end"]
    assert "beekeeping_basics.pdf, p" in pdf_hit.source_label()


def test_rerun_recomputes_nothing_and_new_items_are_embedded(corpus, tmp_path):
    chat = tmp_path / "chat.jsonl"
    shutil.copy(corpus / "chat.jsonl", chat)
    config = EmbedConfig(inputs=[str(chat)], output_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    first = build_memory(config)
    first_vectors = np.load(tmp_path / "memory_texts.npy")

    again = build_memory(config)
    assert (again["newly_embedded"], again["model_loaded"]) == (0, False)
    np.testing.assert_array_equal(np.load(tmp_path / "memory_texts.npy"), first_vectors)

    with chat.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"messages": [{"role": "user", "content": "What is a derailleur hanger?"}]}) + "\n")
    grown = build_memory(config)
    assert grown["newly_embedded"] == 1 and grown["items"] == first["items"] + 1
    np.testing.assert_array_equal(np.load(tmp_path / "memory_texts.npy")[:first["items"]], first_vectors)


def test_query_flag_prints_hits_with_scores_and_sources(corpus, tmp_path, capsys):
    args = [str(corpus / "pdf_texts.json"), "-o", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    assert batch_embedder.main(args) == 0
    assert batch_embedder.main(["-o", str(tmp_path), "--query", "oyster mushroom substrate", "--k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "score" in printed and "oyster_mushrooms.pdf" in printed


def test_missing_memory_is_a_clear_error(tmp_path):
    with pytest.raises(MemoryFilesError, match="batch_embedder.py"):
        Memory.load(tmp_path)


def test_missing_model_exits_with_a_message_not_a_traceback(corpus, tmp_path, capsys):
    code = batch_embedder.main([str(corpus / "chat.jsonl"), "-o", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
                                "--embedding-model", str(tmp_path / "nope")])
    assert code == 2 and "--embedding-model" in capsys.readouterr().err


def test_rebuild_keeps_turns_the_chat_page_remembered(corpus, tmp_path):
    config = EmbedConfig(inputs=[str(corpus / "chat.jsonl")], output_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    build_memory(config)
    memory = Memory.load(tmp_path)
    memory.add([{"id": "chat:s1:0", "source": "chat", "role": "user", "text": "My sourdough starter smells of acetone.",
                 "conversation_id": "s1", "conversation_title": "sourdough", "timestamp": 1.7e9, "file": None}])
    memory.save(tmp_path)

    rebuilt = build_memory(config)
    assert rebuilt["chat_turns_kept"] == 1
    (hit,) = Memory.load(tmp_path).search("hungry starter smelling like nail polish remover", k=1)
    assert hit.metadata["source"] == "chat" and "acetone" in hit.text


KEY = "sk-proj-" + "Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5"


@pytest.fixture(scope="module")
def leaky_chat(tmp_path_factory):
    chat = tmp_path_factory.mktemp("leaky") / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [
        {"role": "user", "content": f"My OpenAI key {KEY} stopped working. Mail me at ann.lee@example.org."},
        {"role": "assistant", "content": "Revoke that key at once and create a new one."}]}) + "\n", encoding="utf-8")
    return chat


def test_secrets_never_reach_the_memory_and_the_redacted_text_is_what_is_embedded(leaky_chat, tmp_path):
    config = EmbedConfig(inputs=[str(leaky_chat)], output_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    summary = build_memory(config)
    assert summary["redacted"] == {"openai_key": 1}
    saved = json.loads((tmp_path / "memory_config.json").read_text())
    assert saved["summary"]["redacted"] == {"openai_key": 1} and saved["redact"] is True
    assert KEY not in (tmp_path / "memory_metadata.pkl").read_bytes().decode("latin-1")
    memory = Memory.load(tmp_path)
    (hit,) = memory.search("my API key stopped working", k=1)
    assert hit.text == "My OpenAI key [REDACTED:openai_key] stopped working. Mail me at ann.lee@example.org."
    # The vector is the redacted text's, and so is the cache entry: the key is in no file of the cache either.
    np.testing.assert_allclose(memory.vectors[memory.metadata.index(hit.metadata)], memory.embed([hit.text])[0],
                               atol=1e-5)
    cache = EmbeddingCache(str(tmp_path / "cache"), config.embedding_model)
    assert cache.get(text_key(hit.text)) is not None and cache.get(text_key(hit.text.replace(
        "[REDACTED:openai_key]", KEY))) is None


def test_no_redact_keeps_secrets_and_redact_pii_removes_personal_data(leaky_chat, tmp_path):
    args = [str(leaky_chat), "--cache-dir", str(tmp_path / "cache")]
    assert batch_embedder.main([*args, "-o", str(tmp_path / "kept"), "--no-redact"]) == 0
    assert KEY in Memory.load(tmp_path / "kept").metadata[0]["text"]
    assert batch_embedder.main([*args, "-o", str(tmp_path / "pii"), "--redact-pii"]) == 0
    memory = Memory.load(tmp_path / "pii")
    assert memory.metadata[0]["text"] == ("My OpenAI key [REDACTED:openai_key] stopped working. "
                                          "Mail me at [REDACTED:email].")
    assert memory.config["summary"]["redacted"] == {"email": 1, "openai_key": 1}


def test_a_rebuild_redacts_chat_turns_remembered_before_redaction_and_embeds_them_again(leaky_chat, tmp_path):
    config = EmbedConfig(inputs=[str(leaky_chat)], output_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    build_memory(config)
    memory = Memory.load(tmp_path)  # as an older version of the chat page left it: the key in the clear
    memory.add([{"id": "chat:s1:0", "source": "chat", "role": "user", "text": f"Use {KEY} for the sourdough bot.",
                 "text_hash": text_key(f"Use {KEY} for the sourdough bot."), "conversation_id": "s1",
                 "conversation_title": f"key {KEY}", "timestamp": 1.7e9, "file": None}])
    memory.save(tmp_path)

    rebuilt = build_memory(config)
    assert rebuilt["chat_turns_kept"] == 1 and rebuilt["redacted"] == {"openai_key": 3}
    memory = Memory.load(tmp_path)
    chat = memory.metadata[-1]
    assert chat["text"] == "Use [REDACTED:openai_key] for the sourdough bot."
    assert chat["conversation_title"] == "key [REDACTED:openai_key]" and chat["text_hash"] == text_key(chat["text"])
    np.testing.assert_allclose(memory.vectors[-1], memory.embed([chat["text"]])[0], atol=1e-5)


def test_the_chat_page_remembers_turns_redacted_like_the_memory(leaky_chat, tmp_path):
    build_memory(EmbedConfig(inputs=[str(leaky_chat)], output_dir=str(tmp_path), cache_dir=str(tmp_path / "c"),
                             redact_pii=True))
    chat = ChatMemory.open(tmp_path, min_score=0.1)
    chat.remember(f"Here is my Hugging Face token hf_{'a1B2c3D4e5' * 4}, mail ann@example.org", "Thanks, revoke it.",
                  conversation_id="s1", conversation_title="token ann@example.org")
    remembered = [m for m in Memory.load(tmp_path).metadata if m["source"] == "chat"]
    assert remembered[0]["text"] == "Here is my Hugging Face token [REDACTED:huggingface_token], mail [REDACTED:email]"
    assert remembered[0]["conversation_title"] == "token [REDACTED:email]"
    # ... and so do the memories the page shows and puts in the prompt.
    lines = [memory_line(hit) for hit in chat.retrieve("my Hugging Face token")]
    assert lines and not any("hf_a1B2" in line or "ann@" in line for line in lines)


def test_nothing_to_embed_exits_2_saying_what_to_add(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert batch_embedder.main([]) == 2
    assert capsys.readouterr().err.startswith("error: nothing to embed. Put conversations.json")
