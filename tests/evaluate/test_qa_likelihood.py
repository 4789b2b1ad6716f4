"""The gold answer's likelihood is a plain teacher-forced forward pass over the chat's own prompt tokens, on both
chat engines; the recorder shows the session's own prompt."""

import numpy as np
import pytest
import torch

from rhizome.chat.engine_ct2 import CT2ChatModel
from rhizome.chat.engine_ort import ORTChatModel
from rhizome.chat.llm import ChatModel
from rhizome.evaluate.qa_likelihood import PromptRecorder, gold_likelihood

MESSAGES = [{"role": "system", "content": "Answer from the memories.\n\nMemories (1):\n- The brood nest is kept "
                                          "at about 35 °C."},
            {"role": "user", "content": "At what temperature do bees keep the brood nest?"}]
GOLD = "35 °C"


@pytest.fixture(scope="module")
def torch_engine(tiny_model_dir):
    return ChatModel.load(str(tiny_model_dir), None, device="cpu")


def direct_scores(model_dir, messages, gold) -> tuple[float, bool]:
    """The same quantity computed by hand: chat template text, then the gold's tokens, one forward pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(gold, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0].double(), dim=-1)
    per_token = [log_probs[len(prompt) - 1 + i, token].item() for i, token in enumerate(answer)]
    return float(np.mean(per_token)), int(log_probs[len(prompt) - 1].argmax()) == answer[0]


def test_torch_engine_scores_the_gold_as_a_forward_pass_does(torch_engine, tiny_model_dir):
    expected_logprob, expected_top1 = direct_scores(tiny_model_dir, MESSAGES, GOLD)
    scores = gold_likelihood(torch_engine, MESSAGES, GOLD)
    assert scores["gold_logprob"] == pytest.approx(expected_logprob, abs=1e-5)
    assert scores["gold_top1"] == float(expected_top1)
    # A different prompt gives a different score: the prompt is really read.
    other = gold_likelihood(torch_engine, MESSAGES[1:], GOLD)["gold_logprob"]
    assert other != pytest.approx(expected_logprob, abs=1e-4)


def test_gold_top1_is_the_models_first_greedy_token(torch_engine):
    """With the first greedy token of the model's own reply as the gold, ``gold_top1`` is 1."""
    ids = torch_engine.prompt_ids(MESSAGES)
    with torch.no_grad():
        first = int(torch_engine.model(ids).logits[0, -1].argmax())
    gold = torch_engine.tokenizer.decode([first])
    assert torch_engine.tokenizer.encode(gold, add_special_tokens=False) == [first]
    assert gold_likelihood(torch_engine, MESSAGES, gold)["gold_top1"] == 1.0


def test_ct2_engine_scores_as_the_torch_engine(torch_engine, tiny_model_dir, models_dir):
    ct2 = CT2ChatModel.load(str(tiny_model_dir), None, quantization="float32")
    assert gold_likelihood(ct2, MESSAGES, GOLD)["gold_logprob"] == pytest.approx(
        gold_likelihood(torch_engine, MESSAGES, GOLD)["gold_logprob"], abs=1e-3)


def test_ort_engine_scores_as_a_forward_pass_does(tiny_model_dir, models_dir):
    """The chat's default CPU engine: its fp32 build scores the gold as the hand-made forward pass does."""
    expected_logprob, expected_top1 = direct_scores(tiny_model_dir, MESSAGES, GOLD)
    scores = gold_likelihood(ORTChatModel.load(str(tiny_model_dir), None, variant="fp32"), MESSAGES, GOLD)
    assert scores["gold_logprob"] == pytest.approx(expected_logprob, abs=1e-3)
    assert scores["gold_top1"] == float(expected_top1)


def test_empty_gold_is_not_scored(torch_engine):
    assert gold_likelihood(torch_engine, MESSAGES, "") == {"gold_logprob": None, "gold_top1": None}


def test_recorder_keeps_the_streamed_prompt_and_is_otherwise_the_engine(torch_engine):
    recorder = PromptRecorder(torch_engine)
    assert recorder.context_length == torch_engine.context_length and recorder.tokenizer is torch_engine.tokenizer
    reply = "".join(recorder.stream(MESSAGES, max_new_tokens=3, temperature=0.0))
    assert recorder.last_messages is MESSAGES
    assert reply == "".join(torch_engine.stream(MESSAGES, max_new_tokens=3, temperature=0.0))
