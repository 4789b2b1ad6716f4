"""The exported GGUF in the real llama.cpp (npm's node-llama-cpp, prebuilt): prompted through the chat template inside
the GGUF it renders what transformers renders, stops at the end-of-turn token, and answers as the merged Hugging Face
model does (greedy, first 32 tokens equal). On the shipped SmolLM2-135M-Instruct with a small LoRA adapter, since a
random tiny model never ends a turn."""

import json
import os

import pytest
import torch

from rhizome.export.llama_cpp import LlamaCpp, LlamaCppUnavailable, install
from rhizome.train.config import DEFAULT_MODEL
from rhizome.train.model import resolve_model

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow."]  # answers end in 8 and 62 tokens
AGREE_TOKENS = 32


@pytest.fixture(scope="module")
def llama_cpp():
    """npm install of node-llama-cpp into the cache, once; skipped when Node.js / npm cannot provide it, unless CI
    requires it (RHIZOME_REQUIRE_LLAMA_CPP=1, set by .ci/run)."""
    try:
        return install()
    except LlamaCppUnavailable as exc:
        if os.environ.get("RHIZOME_REQUIRE_LLAMA_CPP") == "1":
            raise
        pytest.skip(f"llama.cpp from npm unavailable: {exc}")


@pytest.fixture(scope="module")
def smollm_export(llama_cpp, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rhizome.export.config import ExportConfig
    from rhizome.export.pipeline import run

    base = resolve_model(DEFAULT_MODEL)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # non-zero, small enough to leave the model fluent
                param.normal_(0, 0.002)
    run_dir = tmp_path_factory.mktemp("smollm-finetuned")
    model.save_pretrained(run_dir / "final")
    (run_dir / "training_config.json").write_text(json.dumps({"model": DEFAULT_MODEL}))
    return run(ExportConfig(adapter=str(run_dir), output=str(run_dir / "merged"), verify=False))


def system_prompt(export) -> str:
    text = (export.output / "Modelfile").read_text()
    return text.split('SYSTEM """', 1)[1].split('"""', 1)[0]


@pytest.mark.slow
@torch.no_grad()
def test_llama_cpp_stops_at_the_end_of_turn_and_answers_as_the_merged_model(smollm_export):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_export.output)
    merged = AutoModelForCausalLM.from_pretrained(smollm_export.output, dtype=torch.float32).eval()
    system = system_prompt(smollm_export)
    with LlamaCpp(smollm_export.gguf_file, threads=2) as llm:
        for question in QUESTIONS:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                return_tensors="pt")["input_ids"]
            out = merged.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=96,
                                  pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
            want = [t for t in out if t != tokenizer.eos_token_id]
            assert out[-1] == tokenizer.eos_token_id, "the merged model itself should end its turn"

            got = llm.chat(system=system, user=question, max_tokens=96)
            assert got["prompt"] == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            assert got["stop_reason"] == "eogToken", got
            assert got["tokens"][:AGREE_TOKENS] == want[:AGREE_TOKENS], (got["text"], tokenizer.decode(want))


@pytest.mark.slow
def test_q4_0_gguf_runs_and_ends_its_turn(smollm_export, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rhizome.export.gguf_writer import write_gguf

    tokenizer = AutoTokenizer.from_pretrained(smollm_export.output)
    merged = AutoModelForCausalLM.from_pretrained(smollm_export.output, dtype=torch.float32)
    path = tmp_path / "m-q4_0.gguf"
    assert write_gguf(merged, tokenizer, smollm_export.output, path, "q4_0", name="m") < 0.4 * smollm_export.gguf_bytes
    with LlamaCpp(path, threads=2) as llm:
        got = llm.chat(system=system_prompt(smollm_export), user=QUESTIONS[0], max_tokens=64)
    assert got["stop_reason"] == "eogToken" and "Paris" in got["text"]
