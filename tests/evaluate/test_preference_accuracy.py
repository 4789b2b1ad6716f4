"""evaluate.py scores held-out preference pairs: accuracy and margin per model, checked against a direct
computation of each reply's log-probability."""

import json
import shutil

import torch
import torch.nn.functional as F

from rhizome.evaluate import EvalConfig, run
from rhizome.evaluate.report import REPORT_MD

PROMPTS = ["How do I know a hive is queenright?", "How do I true a wheel?", "What does reishi grow on?"]
GOOD = ["Look for eggs standing upright in the cells.", "Tighten the spokes a quarter turn at a time.",
        "Reishi grows on hardwood logs."]
BAD = ["Bananas.", "I do not know, but the shed manual might.", "Wheels are round."]


def test_preference_accuracy_and_margin_per_model_match_a_direct_computation(eval_data, adapter_run,
                                                                             tiny_model_dir, tmp_path):
    train, test = eval_data
    folder = tmp_path / "data_finetune"
    folder.mkdir()
    shutil.copy(test, folder / "dataset_test.jsonl")
    rows = [{"id": f"p{i}", "prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": g}],
             "rejected": [{"role": "assistant", "content": b}], "kind": "regeneration" if i else "rating"}
            for i, (p, g, b) in enumerate(zip(PROMPTS, GOOD, BAD))]
    (folder / "dataset_preferences_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run(EvalConfig(adapters=[str(adapter_run)], test_file=str(folder / "dataset_test.jsonl"),
                            train_file=str(train), output_dir=str(tmp_path / "out"), batch_size=2, force_cpu=True,
                            plots=False))
    section = report["preferences"]
    assert section["pairs"] == 3 and set(section["models"]) == {"base", adapter_run.name}

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()

    def logprob(prompt, reply) -> tuple[float, int]:
        """The reply's summed log-probability and its token count (the end-of-turn token included)."""
        context = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                add_generation_prompt=True)
        full = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": reply}], tokenize=False)
        start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
        end = len(tokenizer(context + full[len(context):].rstrip(), add_special_tokens=False)["input_ids"])
        ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = F.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        return float(sum(logits[t - 1, ids[0, t]] for t in range(start, end))), end - start

    scored = [(logprob(p, g), logprob(p, b)) for p, g, b in zip(PROMPTS, GOOD, BAD)]
    margins = [good - bad for (good, _), (bad, _) in scored]
    per_token = [good / n_good - bad / n_bad for (good, n_good), (bad, n_bad) in scored]
    base = section["models"]["base"]
    assert base["margins"] == [round(m, 4) for m in base["margins"]]
    assert all(abs(a - b) < 2e-2 for a, b in zip(base["margins"], margins))
    assert base["accuracy"] == sum(m > 0 for m in margins) / 3
    assert all(abs(a - b) < 2e-3 for a, b in zip(base["per_token_margins"], per_token))
    assert base["per_token_accuracy"] == sum(m > 0 for m in per_token) / 3
    assert abs(base["per_token_margin"] - sum(per_token) / 3) < 2e-3
    assert base["per_kind"]["regeneration"]["per_token_accuracy"] == sum(m > 0 for m in per_token[1:]) / 2
    assert base["per_kind"]["rating"]["pairs"] == 1 and base["per_kind"]["regeneration"]["pairs"] == 2
    assert section["models"][adapter_run.name]["margins"] != base["margins"]  # the adapter is scored, not the base
    assert "## Preference accuracy" in (tmp_path / "out" / REPORT_MD).read_text()


def test_no_preference_file_no_section(evaluation):
    report, _ = evaluation
    assert "preferences" not in report
