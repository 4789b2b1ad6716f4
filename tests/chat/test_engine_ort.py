"""The ONNX Runtime GenAI engine on tiny random models: the same replies as the PyTorch engine (fp32 exactly, int4
mostly), the same streaming, stopping and sampling, conversion cached per adapter and redone when it changes, the
prefix of the last turn reused with the replies of a full prefill, and a clear refusal of a model it cannot run."""

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rhizome.chat.engine_ort import KEY_FILE, ORTChatModel, ORTUnsupportedError, next_token
from rhizome.chat.conversion import cache_folder
from rhizome.chat.llm import ChatModel, load_chat_model
from rhizome.train.model import ModelNotFoundError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I split a hive?"}]
QUESTIONS = ["How do I split a hive?", "Why does my chain skip?", "How warm should oyster mushrooms be?",
             "What is the capital of France?", "Write a haiku about honey."]


@pytest.fixture(scope="module")
def model_dir(make_tiny_model) -> str:
    """ONNX Runtime's attention kernel wants head sizes in multiples of 16."""
    return make_tiny_model(hidden_size=64, intermediate_size=128, head_dim=16)


@pytest.fixture(scope="module")
def torch_model(model_dir):
    return ChatModel.load(model_dir, None, device="cpu")


@pytest.fixture(scope="module")
def ort_fp32(model_dir, models_dir):
    return ORTChatModel.load(model_dir, None, variant="fp32")


@pytest.fixture(scope="module")
def ort_int4(model_dir, models_dir):
    return ORTChatModel.load(model_dir, None, variant="int4")


@pytest.fixture(scope="module")
def ort_default(model_dir, models_dir):
    return ORTChatModel.load(model_dir, None)


def torch_greedy_ids(model: ChatModel, messages: list[dict], n: int, repetition_penalty: float = 1.0) -> list[int]:
    ids = model.prompt_ids(messages)
    out = model.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                               repetition_penalty=repetition_penalty, pad_token_id=model.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def forget(model: ORTChatModel) -> None:
    model._generator, model._held = None, []  # as a model that never answered before


def test_fp32_replies_equal_the_torch_engines_token_for_token(torch_model, ort_fp32):
    for n, penalty in ((1, 1.0), (40, 1.0), (40, 1.3)):
        for question in QUESTIONS[:3]:
            messages = [MESSAGES[0], {"role": "user", "content": question}]
            forget(ort_fp32)
            want = list(torch_model.stream(messages, max_new_tokens=n, temperature=0, repetition_penalty=penalty))
            got = list(ort_fp32.stream(messages, max_new_tokens=n, temperature=0, repetition_penalty=penalty))
            assert "".join(got) == "".join(want)
            assert ort_fp32.last_stats.new_tokens == torch_model.last_stats.new_tokens == n
            assert ort_fp32.last_stats.prompt_tokens == torch_model.last_stats.prompt_tokens
            ids = ort_fp32.prompt_ids(messages)[0].tolist()
            forget(ort_fp32)
            assert list(ort_fp32.generate_ids(ids, max_new_tokens=n, temperature=0, repetition_penalty=penalty)) \
                == torch_greedy_ids(torch_model, messages, n, penalty)
    assert len(got) > 1  # streamed, not handed over in one piece at the end
    assert ort_fp32.last_stats.first_token_s is not None and not ort_fp32.last_stats.stopped
    assert ort_fp32.engine == "ort fp32"


def test_log_probs_are_the_torch_models_teacher_forced_log_probs(torch_model, ort_fp32):
    """``log_probs`` (the chat bench's perplexity) scores every token after the first as one forward pass does."""
    ids = ort_fp32.prompt_ids(MESSAGES)[0].tolist() + torch_greedy_ids(torch_model, MESSAGES, 12)
    with torch.no_grad():
        rows = torch.log_softmax(torch_model.model(torch.tensor([ids])).logits[0].double(), dim=-1)
    want = [rows[i, token].item() for i, token in enumerate(ids[1:])]
    got = ort_fp32.log_probs(ids)
    assert len(got) == len(ids) - 1
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert np.ptp(want) > 0.1  # the tokens differ in likelihood, so a constant could not pass


def test_int8_is_the_default(ort_default):
    assert ort_default.engine == "ort int8" and "ONNX Runtime GenAI int8" in ort_default.description
    assert "".join(ort_default.stream(MESSAGES, max_new_tokens=20, temperature=0))


def test_int4_agrees_with_torch_on_most_tokens(torch_model, ort_int4):
    assert ort_int4.engine == "ort int4"
    agreed = total = 0
    for question in QUESTIONS:
        messages = [MESSAGES[0], {"role": "user", "content": question}]
        want = torch_greedy_ids(torch_model, messages, 32)
        forget(ort_int4)
        got = list(ort_int4.generate_ids(ort_int4.prompt_ids(messages)[0].tolist(), max_new_tokens=32,
                                         temperature=0, repetition_penalty=1.0))
        agreed += next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        total += max(len(want), len(got))
    assert agreed / total >= 0.5


def test_int4_weights_are_a_quarter_of_fp32s(ort_int4, ort_fp32, model_dir):
    def weights(variant: str) -> int:
        folder = cache_folder(model_dir, None, "ort", variant)
        return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))

    assert weights("int4") < 0.5 * weights("fp32")


def test_a_reply_ends_at_the_end_of_turn_token(model_dir, models_dir, tmp_path):
    """The end token is the model's generation_config eos: make it the token greedy decoding picks third."""
    import shutil

    from transformers import GenerationConfig

    folder = tmp_path / "eos"
    shutil.copytree(model_dir, folder)
    torch_model = ChatModel.load(str(folder), None, device="cpu")
    third = torch_greedy_ids(torch_model, MESSAGES, 3)[-1]
    config = GenerationConfig.from_pretrained(folder)
    config.eos_token_id = [third]
    config.save_pretrained(folder)
    torch_model = ChatModel.load(str(folder), None, device="cpu")
    ort = ORTChatModel.load(str(folder), None, variant="fp32")
    want = "".join(torch_model.stream(MESSAGES, max_new_tokens=30, temperature=0))
    got = "".join(ort.stream(MESSAGES, max_new_tokens=30, temperature=0))
    assert got == want and torch_model.last_stats.new_tokens <= 3
    assert ort.last_stats.new_tokens == torch_model.last_stats.new_tokens


def test_a_set_stop_event_ends_generation_within_a_token(ort_int4):
    stop = threading.Event()
    stop.set()
    list(ort_int4.stream(MESSAGES, max_new_tokens=50, temperature=0, stop_event=stop))
    assert ort_int4.last_stats.new_tokens <= 1 and ort_int4.last_stats.stopped


def test_stop_mid_reply_keeps_what_was_said_and_ends_early(ort_int4):
    stop = threading.Event()
    pieces = []
    for piece in ort_int4.stream(MESSAGES, max_new_tokens=120, temperature=0, stop_event=stop):
        pieces.append(piece)
        stop.set()
    assert pieces and ort_int4.last_stats.new_tokens < 120 and ort_int4.last_stats.stopped


def test_leaving_the_stream_early_stops_decoding(ort_int4):
    stream = ort_int4.stream(MESSAGES, max_new_tokens=1000, temperature=0)
    next(stream)
    stream.close()
    assert ort_int4.last_stats.new_tokens < 1000
    # The model is free again: a new reply runs (a generation still holding the lock would hang here).
    assert "".join(ort_int4.stream(MESSAGES, max_new_tokens=3, temperature=0))


def test_sampling_follows_the_temperature(ort_int4):
    greedy = "".join(ort_int4.stream(MESSAGES, max_new_tokens=20, temperature=0))
    hot = {"".join(ort_int4.stream(MESSAGES, max_new_tokens=20, temperature=1.5, top_p=1.0)) for _ in range(3)}
    assert greedy and hot - {greedy} and len(hot) > 1


def test_next_token_follows_transformers_penalty_temperature_and_top_p():
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 200).astype(np.float32)
    seen_ids = [int(i) for i in np.argsort(-logits)[:5]] + [int(np.argmin(logits))]
    seen = np.zeros(200, dtype=bool)
    seen[seen_ids] = True
    input_ids = torch.tensor([seen_ids])
    scores = RepetitionPenaltyLogitsProcessor(1.3)(input_ids, torch.tensor(logits)[None])
    assert next_token(logits, seen, temperature=0, top_p=1.0, repetition_penalty=1.3, rng=rng) == \
        int(scores.argmax())
    kept = TopPLogitsWarper(0.8)(input_ids, TemperatureLogitsWarper(0.7)(input_ids, scores.clone()))
    allowed = set(torch.nonzero(torch.isfinite(kept[0])).flatten().tolist())
    drawn = {next_token(logits, seen, temperature=0.7, top_p=0.8, repetition_penalty=1.3, rng=rng)
             for _ in range(3000)}
    assert drawn == allowed and len(allowed) > 1


def _save_adapter(base_dir: str, folder, seed: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora).save_pretrained(folder)


def test_adapter_is_merged_converted_once_and_reconverted_when_it_changes(model_dir, tmp_path):
    adapter = tmp_path / "run" / "final"
    _save_adapter(model_dir, adapter, seed=2)
    ort = ORTChatModel.load(model_dir, str(adapter), variant="fp32")
    converted = cache_folder(model_dir, str(adapter), "ort", "fp32")
    assert converted == tmp_path / "run" / "final.ort-fp32" and (converted / "genai_config.json").is_file()
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    torch_merged = ChatModel.load(model_dir, str(adapter), device="cpu")
    want = "".join(torch_merged.stream(MESSAGES, max_new_tokens=24, temperature=0))
    assert "".join(ort.stream(MESSAGES, max_new_tokens=24, temperature=0)) == want
    base = "".join(ChatModel.load(model_dir, None, device="cpu").stream(MESSAGES, max_new_tokens=24, temperature=0))
    assert want != base  # the adapter really changed the replies

    key = json.loads((converted / KEY_FILE).read_text())["key"]
    mtime = (converted / "model.onnx").stat().st_mtime_ns
    ORTChatModel.load(model_dir, str(adapter), variant="fp32")
    assert (converted / "model.onnx").stat().st_mtime_ns == mtime  # reused, not converted again

    _save_adapter(model_dir, adapter, seed=3)  # training wrote a new final/
    again = ORTChatModel.load(model_dir, str(adapter), variant="fp32")
    assert json.loads((converted / KEY_FILE).read_text())["key"] != key
    retrained = "".join(ChatModel.load(model_dir, str(adapter), device="cpu").stream(
        MESSAGES, max_new_tokens=24, temperature=0))
    assert "".join(again.stream(MESSAGES, max_new_tokens=24, temperature=0)) == retrained


def second_turn(reply: str, question: str = "And in autumn?") -> list[dict]:
    return MESSAGES + [{"role": "assistant", "content": reply.strip()}, {"role": "user", "content": question}]


@pytest.mark.parametrize("variant", ["fp32", "int4"])
def test_the_next_turn_prefills_only_what_follows_the_last_and_replies_the_same(variant, ort_fp32, ort_int4):
    model = {"fp32": ort_fp32, "int4": ort_int4}[variant]
    greedy = {"max_new_tokens": 16, "temperature": 0, "repetition_penalty": 3.0}  # varied words from a random model
    forget(model)
    first = "".join(model.stream(MESSAGES, **greedy))
    assert model.last_stats.reused_tokens == 0 and first.strip()
    held = list(model._held)
    turn_2 = second_turn(first)
    reply = "".join(model.stream(turn_2, **greedy))
    prompt = model.prompt_ids(turn_2)[0].tolist()
    common = next(i for i, (a, b) in enumerate(zip(held, prompt)) if a != b) if held != prompt[:len(held)] \
        else len(held)
    assert model.last_stats.reused_tokens == common >= len(model.prompt_ids(MESSAGES)[0])
    forget(model)
    assert reply == "".join(model.stream(turn_2, **greedy)) and model.last_stats.reused_tokens == 0

    # An edited history is prefilled from where it differs.
    edited = [MESSAGES[0], {"role": "user", "content": "How do I split a nuc?"}] + turn_2[2:]
    edited_reply = "".join(model.stream(edited, **greedy))
    assert 0 < model.last_stats.reused_tokens < len(model.prompt_ids(MESSAGES)[0])
    forget(model)
    assert edited_reply == "".join(model.stream(edited, **greedy))


def test_engine_ort_is_chosen_by_name_and_by_auto_on_a_cpu_and_says_why(model_dir, models_dir):
    model, why = load_chat_model(model_dir, None, engine="ort", force_cpu=True)
    assert isinstance(model, ORTChatModel) and "ort int8" in why and "--engine ort" in why
    model, why = load_chat_model(model_dir, None, engine="auto", force_cpu=True)
    assert isinstance(model, ORTChatModel) and "ort int8" in why and "auto" in why and "decodes fastest" in why


def test_auto_passes_a_model_ort_cannot_run_to_ctranslate2_and_says_why(tiny_chat_model_dir, models_dir):
    from rhizome.chat.engine_ct2 import CT2ChatModel

    model, why = load_chat_model(tiny_chat_model_dir, None, engine="auto", force_cpu=True)
    assert isinstance(model, CT2ChatModel) and "head size" in why and "ct2 int8" in why


def test_a_model_ort_cannot_run_is_refused_at_load_with_a_clear_error(tiny_chat_model_dir, models_dir):
    """The shared tiny model has head size 8, which the runtime's attention refuses: known before converting."""
    with pytest.raises(ORTUnsupportedError, match="head size"):
        ORTChatModel.load(tiny_chat_model_dir, None)
    assert not list(models_dir.glob(f"ort/{Path(tiny_chat_model_dir).name}-*"))
    with pytest.raises(ModelNotFoundError, match="--engine"):
        load_chat_model(tiny_chat_model_dir, None, engine="ort", force_cpu=True)
