"""The merged folder is a plain transformers model that behaves exactly like base + adapter."""

import json
import os

import pytest
import torch


def _peft_model(run, base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(run / "final")).eval()


def _greedy(model, ids, n=20):
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=2)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def test_merged_folder_loads_with_transformers_alone_and_matches_base_plus_adapter(exported, tiny_run, tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = exported.output
    names = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
    assert not any(n.startswith("adapter_") for n in names)

    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    reference = _peft_model(tiny_run, tiny_base)
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "How do bees make honey?"}],
                                        add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
    expected = reference(input_ids=ids).logits
    assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)
    assert (base(input_ids=ids).logits - expected).abs().max() > 0.1  # the adapter really changes the model
    assert _greedy(merged, ids) == _greedy(reference, ids)


def test_export_records_what_it_did(exported, tiny_run, tiny_base):
    folder = exported.output
    card = (folder / "README.md").read_text()
    assert str(tiny_base) in card and str((tiny_run / "final").resolve()) in card and "UTC" in card
    saved = json.loads((folder / "export_config.json").read_text())
    assert saved["base_model"] == str(tiny_base)
    assert saved["checks"]["merged"]["same_greedy_text"] is True
    assert saved["checks"]["merged"]["max_abs_logit_diff"] < 1e-4
    assert exported.checks["gguf"]["same_greedy_text"] is True


def test_finds_the_adapter_from_a_run_folder_or_the_newest_run_here(tiny_run, tmp_path):
    from rhizome.export.merge import ExportError, find_adapter
    from rhizome.runs import AdapterNotFoundError

    assert find_adapter(str(tiny_run))[0] == tiny_run / "final"
    assert find_adapter(str(tiny_run / "final")) == (tiny_run / "final", find_adapter(str(tiny_run))[1])
    with pytest.raises(ExportError, match="(?s)No trained adapter found.*train_script.py"):
        find_adapter("", cwd=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterNotFoundError, match="holds no LoRA adapter"):
        find_adapter(str(tmp_path / "empty"))
    (tmp_path / "x-finetuned").symlink_to(tiny_run)
    base = json.loads((tiny_run / "training_config.json").read_text())["model"]
    path, run = find_adapter("", cwd=tmp_path, base_model=base)
    assert path == tmp_path / "x-finetuned" / "final" and run.name == "x-finetuned"
    # Export picks as the chat does: with no --base, the newest adapter trained on the shipped model.
    with pytest.raises(ExportError, match="(?s)No adapter trained on HuggingFaceTB/SmolLM2-135M-Instruct.*--base"):
        find_adapter("", cwd=tmp_path)


def test_a_quantised_base_is_refused_with_the_way_out(tiny_run, tiny_base, tmp_path):
    from rhizome.export.merge import ExportError, describe_adapter

    quantised = tmp_path / "base-bnb-4bit"
    quantised.mkdir()
    config = json.loads((tiny_base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                     "bnb_4bit_quant_type": "nf4"}
    (quantised / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="unquantised base"):
        describe_adapter(str(tiny_run), base_override=str(quantised))


def test_a_qlora_run_is_merged_over_the_unquantised_base_and_says_so(tiny_run, tmp_path):
    from rhizome.export.merge import describe_adapter

    run = tmp_path / "qlora-run"
    (run / "final").mkdir(parents=True)
    for f in (tiny_run / "final").iterdir():
        (run / "final" / f.name).write_bytes(f.read_bytes())
    config = json.loads((tiny_run / "training_config.json").read_text())
    (run / "training_config.json").write_text(json.dumps({**config, "quantization": "auto"}))
    # Prose is no record: a model card or log mentioning 4-bit does not make the run QLoRA.
    (run / "final" / "README.md").write_text("- Adapter: LoRA r=16; base weights 4-bit NF4 (QLoRA)\n")
    (run / "train.log").write_text("Quantisation: 4-bit NF4\n")
    assert describe_adapter(str(run)).qlora is False
    (run / "run.json").write_text(json.dumps({"format": 1, "status": "finished", "quantization": "nf4"}))
    assert describe_adapter(str(run)).qlora is True


def test_the_saved_dtype_follows_the_base(tiny_run, tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    from rhizome.export.merge import describe_adapter

    assert describe_adapter(str(tiny_run)).base_dtype == torch.float32
    AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert describe_adapter(str(tiny_run), base_override=str(tmp_path / "bf16")).base_dtype == torch.bfloat16
