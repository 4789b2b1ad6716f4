"""The Modelfile: ChatML templates become Ollama's Go template, with every stop token, the system prompt the template
adds by itself, and the chat's sampling defaults; other templates are not guessed at."""

from transformers import AutoTokenizer

from rhizome.chat.config import ChatConfig
from rhizome.export.modelfile import CHATML_GO_TEMPLATE, build_modelfile, chatml_default_system
from rhizome.train.config import DEFAULT_MODEL
from rhizome.train.model import resolve_model

LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def test_exported_modelfile_has_template_stops_and_defaults(exported):
    text = (exported.output / "Modelfile").read_text()
    chat = ChatConfig()
    assert text.startswith(f"FROM ./{exported.gguf_file.name}\n")
    assert f'TEMPLATE """{CHATML_GO_TEMPLATE}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    assert f"PARAMETER temperature {chat.temperature}" in text and f"PARAMETER top_p {chat.top_p}" in text
    assert f"PARAMETER repeat_penalty {chat.repetition_penalty}" in text
    assert f"PARAMETER num_predict {chat.max_new_tokens}" in text and "PARAMETER num_ctx 2048" in text
    assert "SYSTEM" not in text  # the tiny model's template adds no system message of its own


def test_smollm2s_template_is_chatml_with_its_own_system_prompt():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    assert chatml_default_system(tokenizer) == (True, "You are a helpful AI assistant named SmolLM, trained by "
                                                      "Hugging Face")
    spec = build_modelfile("m.gguf", tokenizer, None, 8192)
    assert spec.template == CHATML_GO_TEMPLATE and spec.stops == ["<|im_end|>", "<|im_start|>"]
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in spec.text()


def test_a_template_that_is_not_chatml_is_not_guessed_at(exported):
    tokenizer = AutoTokenizer.from_pretrained(exported.output)
    tokenizer.chat_template = LLAMA3
    assert chatml_default_system(tokenizer) == (False, None)
    text = build_modelfile("m.gguf", tokenizer, None, 4096).text()
    assert not [line for line in text.splitlines() if line.startswith("TEMPLATE")] and "not ChatML" in text
    assert 'PARAMETER stop "<|im_end|>"' in text  # the tokenizer's end token still stops replies
