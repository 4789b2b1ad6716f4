"""The CTranslate2 engine on tiny random models: same replies as the PyTorch engine, same streaming and stopping,
conversion cached per adapter and redone when it changes, and the engine choice with its reason."""

import json
import os
import threading

import pytest
import torch

from rhizome.chat.engine_ct2 import KEY_FILE, CT2ChatModel, cache_folder
from rhizome.chat.llm import ChatModel, load_chat_model
from rhizome.train.model import ModelNotFoundError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I split a hive?"}]


@pytest.fixture(scope="module")
def torch_model(tiny_chat_model_dir):
    return ChatModel.load(tiny_chat_model_dir, None, device="cpu")


@pytest.fixture(scope="module")
def ct2_float32(tiny_chat_model_dir, models_dir):
    return CT2ChatModel.load(tiny_chat_model_dir, None, quantization="float32")


@pytest.fixture(scope="module")
def ct2_int8(tiny_chat_model_dir, models_dir):
    return CT2ChatModel.load(tiny_chat_model_dir, None)


def test_float32_replies_equal_the_torch_engines_token_for_token(torch_model, ct2_float32):
    for n in (1, 40):
        want = list(torch_model.stream(MESSAGES, max_new_tokens=n, temperature=0, repetition_penalty=1.0))
        got = list(ct2_float32.stream(MESSAGES, max_new_tokens=n, temperature=0, repetition_penalty=1.0))
        assert "".join(got) == "".join(want)
        assert ct2_float32.last_stats.new_tokens == torch_model.last_stats.new_tokens == n
        assert ct2_float32.last_stats.prompt_tokens == torch_model.last_stats.prompt_tokens
    assert len(got) > 1  # streamed, not handed over in one piece at the end
    assert ct2_float32.last_stats.first_token_s is not None and not ct2_float32.last_stats.stopped
    assert ct2_float32.engine == "ct2 float32" and torch_model.engine == "torch float32"


def test_int8_is_the_default_on_a_cpu_and_streams(ct2_int8):
    assert ct2_int8.engine == "ct2 int8" and "CTranslate2 int8" in ct2_int8.description
    assert "".join(ct2_int8.stream(MESSAGES, max_new_tokens=20, temperature=0))
    assert ct2_int8.last_stats.new_tokens == 20


def test_a_reply_ends_at_the_end_of_turn_token(tiny_chat_model_dir, models_dir, tmp_path):
    """The end token is the model's generation_config eos: make it the token greedy decoding picks third."""
    import shutil

    from transformers import GenerationConfig

    folder = tmp_path / "eos"
    shutil.copytree(tiny_chat_model_dir, folder)
    torch_model = ChatModel.load(str(folder), None, device="cpu")
    ids = torch_model.prompt_ids(MESSAGES)
    third = torch_model.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=3,
                                       pad_token_id=0)[0, -1].item()
    config = GenerationConfig.from_pretrained(folder)
    config.eos_token_id = [third]
    config.save_pretrained(folder)
    torch_model = ChatModel.load(str(folder), None, device="cpu")
    ct2 = CT2ChatModel.load(str(folder), None, quantization="float32")
    want = "".join(torch_model.stream(MESSAGES, max_new_tokens=30, temperature=0))
    got = "".join(ct2.stream(MESSAGES, max_new_tokens=30, temperature=0))
    assert got == want and torch_model.last_stats.new_tokens <= 3
    assert ct2.last_stats.new_tokens == torch_model.last_stats.new_tokens


def test_a_set_stop_event_ends_generation_within_a_token(ct2_int8):
    stop = threading.Event()
    stop.set()
    list(ct2_int8.stream(MESSAGES, max_new_tokens=50, temperature=0, stop_event=stop))
    assert ct2_int8.last_stats.new_tokens <= 1 and ct2_int8.last_stats.stopped


def test_stop_mid_reply_keeps_what_was_said_and_ends_early(ct2_int8):
    stop = threading.Event()
    pieces = []
    for piece in ct2_int8.stream(MESSAGES, max_new_tokens=120, temperature=0, stop_event=stop):
        pieces.append(piece)
        stop.set()
    assert pieces and ct2_int8.last_stats.new_tokens < 120 and ct2_int8.last_stats.stopped


def test_leaving_the_stream_early_stops_decoding(ct2_int8):
    stream = ct2_int8.stream(MESSAGES, max_new_tokens=1000, temperature=0)
    next(stream)
    stream.close()
    assert ct2_int8.last_stats.new_tokens < 1000
    # The model is free again: a new reply runs (a generation still holding the lock would hang here).
    assert "".join(ct2_int8.stream(MESSAGES, max_new_tokens=3, temperature=0))


def test_sampling_follows_the_temperature(ct2_int8):
    hot = "".join(ct2_int8.stream(MESSAGES, max_new_tokens=20, temperature=1.5, top_p=1.0))
    greedy = "".join(ct2_int8.stream(MESSAGES, max_new_tokens=20, temperature=0))
    assert hot and hot != greedy


def _save_adapter(base_dir: str, folder, seed: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora).save_pretrained(folder)


def test_adapter_is_merged_converted_once_and_reconverted_when_it_changes(tiny_chat_model_dir, tmp_path):
    adapter = tmp_path / "run" / "final"
    _save_adapter(tiny_chat_model_dir, adapter, seed=2)
    ct2 = CT2ChatModel.load(tiny_chat_model_dir, str(adapter), quantization="float32")
    converted = cache_folder(tiny_chat_model_dir, str(adapter), "float32")
    assert converted == tmp_path / "run" / "final.ct2-float32" and (converted / "model.bin").is_file()
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    torch_merged = ChatModel.load(tiny_chat_model_dir, str(adapter), device="cpu")
    want = "".join(torch_merged.stream(MESSAGES, max_new_tokens=24, temperature=0))
    assert "".join(ct2.stream(MESSAGES, max_new_tokens=24, temperature=0)) == want
    base = "".join(ChatModel.load(tiny_chat_model_dir, None, device="cpu").stream(MESSAGES, max_new_tokens=24,
                                                                                 temperature=0))
    assert want != base  # the adapter really changed the replies

    key = json.loads((converted / KEY_FILE).read_text())["key"]
    mtime = (converted / "model.bin").stat().st_mtime_ns
    CT2ChatModel.load(tiny_chat_model_dir, str(adapter), quantization="float32")
    assert (converted / "model.bin").stat().st_mtime_ns == mtime  # reused, not converted again

    _save_adapter(tiny_chat_model_dir, adapter, seed=3)  # training wrote a new final/
    again = CT2ChatModel.load(tiny_chat_model_dir, str(adapter), quantization="float32")
    assert json.loads((converted / KEY_FILE).read_text())["key"] != key
    retrained = "".join(ChatModel.load(tiny_chat_model_dir, str(adapter), device="cpu").stream(
        MESSAGES, max_new_tokens=24, temperature=0))
    assert "".join(again.stream(MESSAGES, max_new_tokens=24, temperature=0)) == retrained


def test_auto_takes_ct2_on_a_cpu_and_says_why(tiny_chat_model_dir, models_dir):
    model, why = load_chat_model(tiny_chat_model_dir, None, engine="auto", force_cpu=True)
    assert isinstance(model, CT2ChatModel) and "ct2 int8" in why and "auto" in why
    model, why = load_chat_model(tiny_chat_model_dir, None, engine="torch", force_cpu=True)
    assert isinstance(model, ChatModel) and "torch float32" in why


@pytest.fixture(scope="module")
def unconvertible_model_dir(tiny_chat_model_dir, tmp_path_factory):
    """A tiny OLMo: an architecture transformers runs and CTranslate2 has no converter for."""
    from transformers import AutoTokenizer, OlmoConfig, OlmoForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    config = OlmoConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    folder = tmp_path_factory.mktemp("olmo")
    torch.manual_seed(0)
    OlmoForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_auto_falls_back_to_torch_for_a_model_ct2_cannot_convert(unconvertible_model_dir, models_dir):
    model, why = load_chat_model(unconvertible_model_dir, None, engine="auto", force_cpu=True)
    assert isinstance(model, ChatModel) and "cannot convert" in why and "torch" in why
    assert "".join(model.stream(MESSAGES, max_new_tokens=3, temperature=0))
    assert not list(models_dir.glob("ct2/*olmo*"))  # nothing half-converted left behind


def test_ct2_asked_for_a_model_it_cannot_convert_is_a_clear_error(unconvertible_model_dir, models_dir):
    with pytest.raises(ModelNotFoundError, match="--engine torch"):
        load_chat_model(unconvertible_model_dir, None, engine="ct2", force_cpu=True)
