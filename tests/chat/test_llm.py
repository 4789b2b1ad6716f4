"""ChatModel on a tiny random model built from SmolLM2's config: streaming, stopping, adapters, templates."""

import json
import os
import shutil
import threading

import pytest
import torch

from rhizome.chat.llm import ChatModel
from rhizome.train.model import ModelNotFoundError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I split a hive?"}]


@pytest.fixture(scope="module")
def chat_model(tiny_chat_model_dir):
    return ChatModel.load(tiny_chat_model_dir, None, device="cpu")


def greedy_reference(model: ChatModel, max_new_tokens: int) -> torch.Tensor:
    ids = model.prompt_ids(MESSAGES)
    with torch.no_grad():
        out = model.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                   max_new_tokens=max_new_tokens, pad_token_id=model.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:]


def test_streamed_pieces_join_into_the_greedy_generate_output(chat_model):
    reference = greedy_reference(chat_model, 40)
    pieces = list(chat_model.stream(MESSAGES, max_new_tokens=40, temperature=0, repetition_penalty=1.0))
    assert len(pieces) > 1  # streamed, not handed over in one piece at the end
    assert "".join(pieces) == chat_model.tokenizer.decode(reference, skip_special_tokens=True)
    assert chat_model.last_stats.new_tokens == len(reference)
    assert chat_model.last_stats.prompt_tokens == chat_model.prompt_ids(MESSAGES).shape[1]
    assert chat_model.last_stats.first_token_s is not None and not chat_model.last_stats.stopped


def test_prompt_uses_the_models_chat_template(chat_model):
    text = chat_model.tokenizer.decode(chat_model.prompt_ids(MESSAGES)[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_a_set_stop_event_ends_generation_within_a_token(chat_model):
    stop = threading.Event()
    stop.set()
    list(chat_model.stream(MESSAGES, max_new_tokens=50, temperature=0, stop_event=stop))
    assert chat_model.last_stats.new_tokens <= 1 and chat_model.last_stats.stopped


def test_stop_mid_reply_keeps_what_was_said_and_ends_early(chat_model):
    assert len(greedy_reference(chat_model, 120)) == 120  # without a stop it would run the full length
    stop = threading.Event()
    pieces = []
    for piece in chat_model.stream(MESSAGES, max_new_tokens=120, temperature=0, repetition_penalty=1.0,
                                   stop_event=stop):
        pieces.append(piece)
        stop.set()
    assert pieces and chat_model.last_stats.new_tokens < 120


def test_leaving_the_stream_early_stops_the_generation_thread(chat_model):
    stream = chat_model.stream(MESSAGES, max_new_tokens=400, temperature=0)
    next(stream)
    stream.close()
    assert chat_model.last_stats.new_tokens < 400
    assert not [t for t in threading.enumerate() if t.name == "chat-generate"]


def test_sampling_follows_the_temperature(chat_model):
    torch.manual_seed(1)
    hot = "".join(chat_model.stream(MESSAGES, max_new_tokens=20, temperature=1.5, top_p=1.0))
    greedy = "".join(chat_model.stream(MESSAGES, max_new_tokens=20, temperature=0))
    assert hot and hot != greedy


def test_lora_adapter_is_merged_and_gives_the_peft_models_outputs(tiny_chat_model_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir), lora).save_pretrained(tmp_path / "final")

    merged = ChatModel.load(tiny_chat_model_dir, str(tmp_path / "final"), device="cpu")
    assert "merged" in merged.description
    assert not any("lora" in name for name, _ in merged.model.named_modules())
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir), tmp_path / "final").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    ids = merged.prompt_ids(MESSAGES)
    with torch.no_grad():
        got, want, plain = (m(ids).logits for m in (merged.model, reference, base))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter really changed the model


def test_adapter_for_another_model_is_a_clear_error(tiny_chat_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_chat_model_dir)
    config.update({"hidden_size": 48, "head_dim": 12})
    other = get_peft_model(AutoModelForCausalLM.from_config(config), LoraConfig(r=2, target_modules=["q_proj"]))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ModelNotFoundError, match="trained on this base model"):
        ChatModel.load(tiny_chat_model_dir, str(tmp_path / "other"), device="cpu")


def test_tokenizer_without_chat_template_gets_plain_role_prompts(tiny_chat_model_dir, tmp_path):
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_chat_model_dir, folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    config_file = folder / "tokenizer_config.json"
    settings = json.loads(config_file.read_text())
    settings.pop("chat_template", None)
    config_file.write_text(json.dumps(settings))

    model = ChatModel.load(str(folder), None, device="cpu")
    assert "no chat template" in model.description
    prompt = model.tokenizer.decode(model.prompt_ids(MESSAGES)[0])
    assert prompt == "System: Be brief.\n\nUser: How do I split a hive?\n\nAssistant:"
    assert "".join(model.stream(MESSAGES, max_new_tokens=5, temperature=0))


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="--base-model"):
        ChatModel.load(str(tmp_path / "nowhere"), None, device="cpu")
