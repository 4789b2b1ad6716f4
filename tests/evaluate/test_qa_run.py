"""evaluate.py --qa asks through the chat's own retrieval and prompt assembly, in four conditions, and reports them."""

import json

import pytest

import evaluate
from rhizome.chat.config import ChatConfig
from rhizome.chat.llm import ChatModel
from rhizome.chat.retrieval import ChatMemory, build_messages
from tests.evaluate.test_qa_questions import CHUNKS, TEST, TRAIN


@pytest.fixture(scope="module")
def qa_inputs(tmp_path_factory):
    """pdf_texts.json, data_finetune-style splits and the memory batch_embedder.py builds from them."""
    from rhizome.memory.build import EmbedConfig, build_memory

    folder = tmp_path_factory.mktemp("qa")
    pdf_texts = folder / "pdf_texts.json"
    pdf_texts.write_text(json.dumps({"format": "rhizome.pdf_texts", "version": 1, "chunks": CHUNKS}), "utf-8")
    for name, pairs in (("train", TRAIN), ("test", TEST)):
        (folder / f"dataset_{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), "utf-8")
    chats = folder / "chat.jsonl"
    chats.write_text(json.dumps({"messages": TEST[2]["messages"]}) + "\n", "utf-8")
    build_memory(EmbedConfig(inputs=[str(chats), str(pdf_texts)], output_dir=str(folder),
                             cache_dir=str(folder / "cache")))
    return folder


@pytest.fixture(scope="module")
def qa_evaluation(qa_inputs, adapter_run, tmp_path_factory):
    """One `evaluate.py --qa` run; every prompt the chat model was given is recorded on the way."""
    prompts = []
    original = ChatModel.stream

    def recording(self, messages, **kwargs):
        prompts.append(messages)
        return original(self, messages, **kwargs)

    out = tmp_path_factory.mktemp("qa-out")
    patch = pytest.MonkeyPatch()
    patch.setattr(ChatModel, "stream", recording)
    try:
        code = evaluate.main([str(adapter_run), "--qa", "--test-file", str(qa_inputs / "dataset_test.jsonl"),
                              "--train-file", str(qa_inputs / "dataset_train.jsonl"), "--qa-validation-file", "",
                              "--pdf-texts", str(qa_inputs / "pdf_texts.json"), "--memory-dir", str(qa_inputs),
                              "--qa-max-new-tokens", "4", "-o", str(out), "--force-cpu"])
    finally:
        patch.undo()
    assert code == 0
    return json.loads((out / "eval_report.json").read_text("utf-8")), out, prompts


def test_prompts_are_the_chats_own(qa_evaluation, qa_inputs, tiny_model_dir):
    report, _, prompts = qa_evaluation
    qa = report["qa"]
    questions = [q["question"] for q in qa["questions"]]
    assert len(prompts) == 4 * len(questions)  # base and adapter, each without and with memories
    config = ChatConfig(base_model=str(tiny_model_dir), memory_dir=str(qa_inputs))
    chat_memory = ChatMemory.from_config(config, count_tokens=ChatModel.load(str(tiny_model_dir)).count_tokens)
    for condition, start in (("without", 0), ("with", len(questions))):
        for question, messages in zip(questions, prompts[start:start + len(questions)]):
            hits = chat_memory.retrieve(question) if condition == "with" else []
            # What the page sends for the same first message: the chat's system prompt and memory block.
            assert messages == build_messages(config.system_prompt, [], question, hits)
    with_memories = prompts[len(questions):2 * len(questions)]
    assert all("Memories (" in m[0]["content"] for m in with_memories)
    assert qa["retrieval"]["retrieved"] == [[h.text for h in chat_memory.retrieve(q)] for q in questions]


def test_report_has_four_conditions_with_intervals_and_recall(qa_evaluation):
    report, out, _ = qa_evaluation
    qa = report["qa"]
    assert list(qa["conditions"]) == ["base without memories", "base with memories",
                                      "tiny-finetuned without memories", "tiny-finetuned with memories"]
    assert qa["summary"]["all"]["questions"] == len(qa["questions"]) == 3
    for condition in qa["conditions"].values():
        assert len(condition["answers"]) == 3 and len(condition["per_question"]["exact_match"]) == 3
    stat = qa["summary"]["all"]["conditions"]["tiny-finetuned with memories"]["exact_match"]
    assert stat["low"] <= stat["mean"] <= stat["high"]
    assert "tiny-finetuned with memories − base with memories" in qa["summary"]["all"]["differences"]
    # Each question's source sentence is in the memory, and the chat's retrieval finds it.
    assert qa["summary"]["pdf"]["recall_at_k"]["mean"] == 1.0
    markdown = (out / "eval_report.md").read_text("utf-8")
    assert "## Grounded question answering" in markdown and "| tiny-finetuned with memories | 3 |" in markdown
    assert (out / "qa_accuracy.png").stat().st_size > 0


def test_summary_prints_the_adapter_with_memories_next_to_perplexity(qa_evaluation, capsys):
    from rhizome import summary

    report, out, _ = qa_evaluation
    assert summary.main(["--root", str(out.parent), "--run-dir", out.name]) == 0
    printed = capsys.readouterr().out
    assert "Test perplexity" in printed and "Grounded QA (3 questions): tiny-finetuned with memories" in printed
