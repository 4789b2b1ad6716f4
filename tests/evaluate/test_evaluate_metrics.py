"""The report's numbers equal loss and accuracy computed directly from model(...) on the assistant tokens."""

import math

import pytest
import torch
import torch.nn.functional as F


def _per_pair(model, data):
    """(summed cross-entropy, correct greedy predictions, tokens) over each pair's assistant tokens."""
    rows = []
    with torch.no_grad():
        for i in range(len(data)):
            ids, labels = (torch.from_numpy(a) for a in data.sample(i))
            logits = model(input_ids=ids[None]).logits[0]
            keep = labels != -100
            rows.append((F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum").item(),
                         (logits[keep].argmax(-1) == labels[keep]).sum().item(), keep.sum().item()))
    return rows


def _direct(rows, indices):
    loss, correct, tokens = (sum(rows[i][k] for i in indices) for k in range(3))
    return loss / tokens, correct / tokens, int(tokens)


@pytest.fixture(scope="module")
def models_and_data(tiny_model_dir, adapter_run, eval_data):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rhizome.train.data import load_pairs, tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = tokenize_pairs(load_pairs(eval_data[1]), tokenizer, 512)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_run / "final")
    return {"base": base, "tiny-finetuned": tuned.eval()}, data


@pytest.mark.parametrize("name", ["base", "tiny-finetuned"])
def test_metrics_equal_a_direct_forward_pass(evaluation, models_and_data, name):
    report, _ = evaluation
    models, data = models_and_data
    result = report["models"][name]
    rows = _per_pair(models[name], data)
    groups = {"overall": range(len(data)), "rare": [1, 3], "common": [0, 2]}
    for group, indices in groups.items():
        loss, accuracy, tokens = _direct(rows, indices)
        got = result[group]
        assert got["tokens"] == tokens and got["pairs"] == len(indices)
        assert got["loss"] == pytest.approx(loss, rel=1e-4)
        assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
        assert got["token_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert result["per_pair"]["tokens"] == [r[2] for r in rows]
    assert result["per_pair"]["correct"] == [r[1] for r in rows]
    assert result["per_pair"]["loss_sum"] == pytest.approx([r[0] for r in rows], rel=1e-4)
    loss, _, tokens = _direct(rows, [0, 2])  # the pairs carrying "bees"
    assert result["per_theme"]["bees"]["loss"] == pytest.approx(loss, rel=1e-4)
    assert result["per_theme"]["bees"]["tokens"] == tokens


def test_the_adapter_is_actually_applied(evaluation):
    report, _ = evaluation
    base, tuned = (report["models"][n]["overall"]["loss"] for n in ("base", "tiny-finetuned"))
    assert abs(base - tuned) > 1e-3
