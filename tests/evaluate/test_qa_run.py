"""evaluate.py --qa asks through the chat's own retrieval and prompt assembly, in four conditions, and reports them."""

import json

import pytest

import evaluate
from rhizome.chat.config import ChatConfig
from rhizome.chat.retrieval import build_messages
from rhizome.chat.session import ChatSession
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


def qa_args(qa_inputs, *extra):
    return ["--qa", "--test-file", str(qa_inputs / "dataset_test.jsonl"),
            "--train-file", str(qa_inputs / "dataset_train.jsonl"), "--qa-validation-file", "",
            "--pdf-texts", str(qa_inputs / "pdf_texts.json"), "--memory-dir", str(qa_inputs),
            "--qa-max-new-tokens", "4", "--force-cpu", *extra]


@pytest.fixture(scope="module")
def qa_evaluation(qa_inputs, adapter_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("qa-out")
    assert evaluate.main([str(adapter_run), *qa_args(qa_inputs, "-o", str(out))]) == 0
    return json.loads((out / "eval_report.json").read_text("utf-8")), out


def test_prompts_are_the_chats_own(qa_inputs, adapter_run, tiny_model_dir):
    """The messages that reach the model are those the chat page builds for the same first message."""
    from rhizome.config import parse_args
    from rhizome.evaluate import EvalConfig
    from rhizome.evaluate.qa_run import answer, chat_sessions, load_questions

    config, _ = parse_args(EvalConfig, "", qa_args(qa_inputs))
    questions, _ = load_questions(config)
    without, with_memories = chat_sessions(config, str(tiny_model_dir), str(adapter_run / "final"))
    assert with_memories.model is without.model and with_memories.config.temperature == 0
    page = ChatSession.from_config(ChatConfig(base_model=str(tiny_model_dir), adapter=str(adapter_run / "final"),
                                              memory_dir=str(qa_inputs), remember=False))
    prompts = []
    original = with_memories.model.stream

    def recording(messages, **kwargs):  # on this instance only: the real model still answers
        prompts.append(messages)
        return original(messages, **kwargs)

    with_memories.model.stream = recording
    for question in questions:
        answer(without, question.question)
        answer(with_memories, question.question)
        assert with_memories.model.last_messages is prompts[-1]  # what the likelihood is scored after
    assert len(prompts) == 2 * len(questions) == 6
    for question, (bare, grounded) in zip(questions, zip(prompts[::2], prompts[1::2])):
        hits = page.memory.retrieve(question.question)
        assert hits and grounded == build_messages(page.config.system_prompt, [], question.question, hits)
        assert bare == build_messages(page.config.system_prompt, [], question.question, [])
        assert "Memories (" in grounded[-2]["content"] and "Memories (" not in str(bare)


def test_gold_likelihood_is_scored_after_the_chats_own_prompt(qa_evaluation, qa_inputs, adapter_run, tiny_model_dir):
    """Each condition's gold log-prob is the page's engine scoring the gold after the messages the page builds."""
    from rhizome.evaluate.qa_likelihood import gold_likelihood

    report, _ = qa_evaluation
    qa = report["qa"]
    page = ChatSession.from_config(ChatConfig(base_model=str(tiny_model_dir), adapter=str(adapter_run / "final"),
                                              memory_dir=str(qa_inputs), remember=False))
    conditions = qa["conditions"]
    for i, question in enumerate(qa["questions"]):
        hits = page.memory.retrieve(question["question"])
        for memories, label in ((hits, "tiny-finetuned with memories"), ([], "tiny-finetuned without memories")):
            messages = build_messages(page.config.system_prompt, [], question["question"], memories)
            expected = gold_likelihood(page.model, messages, question["answer"])
            assert conditions[label]["per_question"]["gold_logprob"][i] == pytest.approx(expected["gold_logprob"])
            assert conditions[label]["per_question"]["gold_top1"][i] == expected["gold_top1"]
    # The memories change the prompt, so they change the score.
    assert (conditions["tiny-finetuned with memories"]["per_question"]["gold_logprob"]
            != conditions["tiny-finetuned without memories"]["per_question"]["gold_logprob"])


def test_report_has_four_conditions_with_intervals_and_recall(qa_evaluation):
    report, out = qa_evaluation
    qa = report["qa"]
    assert list(qa["conditions"]) == ["base without memories", "base with memories",
                                      "tiny-finetuned without memories", "tiny-finetuned with memories"]
    assert qa["summary"]["all"]["questions"] == len(qa["questions"]) == 3
    for condition in qa["conditions"].values():
        assert len(condition["answers"]) == 3 and len(condition["per_question"]["exact_match"]) == 3
    stat = qa["summary"]["all"]["conditions"]["tiny-finetuned with memories"]["exact_match"]
    assert stat["low"] <= stat["mean"] <= stat["high"]
    difference = qa["summary"]["all"]["differences"]["tiny-finetuned with memories − base with memories"]
    assert set(difference) == {"exact_match", "gold_logprob", "gold_top1"}
    logprob = qa["summary"]["all"]["conditions"]["base with memories"]["gold_logprob"]
    assert logprob["n"] == 3 and logprob["low"] <= logprob["mean"] <= logprob["high"] < 0
    # Each question's source sentence is in the memory, and the chat's retrieval finds it.
    assert qa["summary"]["pdf"]["recall_at_k"]["mean"] == 1.0
    markdown = (out / "eval_report.md").read_text("utf-8")
    assert "## Grounded question answering" in markdown and "| tiny-finetuned with memories | 3 |" in markdown
    assert "gold log-prob/token" in markdown and "Paired differences in gold log-prob per token" in markdown
    assert (out / "qa_accuracy.png").stat().st_size > 0


def test_summary_prints_the_adapter_with_memories_next_to_perplexity(qa_evaluation, capsys):
    from rhizome import summary

    report, out = qa_evaluation
    assert summary.main(["--root", str(out.parent), "--run-dir", out.name]) == 0
    printed = capsys.readouterr().out
    assert "Test perplexity" in printed and "Grounded QA (3 questions): tiny-finetuned with memories" in printed
    assert "exact match, gold log-prob/token -" in printed
