"""DPO: reply log-probabilities and the loss against a direct computation on a tiny random model; a real run
learns the preferences, writes the run folder the studio reads, and resumes exactly after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rhizome.train.dpo import (
    PreferenceData, dpo_loss, load_preferences, micro_batches, orpo_loss, reply_logprobs,
)
from rhizome.train.fused import fuse_lora
from rhizome.train.model import LoraSetup, apply_lora

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def preference_records(split: str) -> list[dict]:
    """The fixture pairs as preferences: chosen = the pair's reply, rejected = the reply of the next pair."""
    rows = [json.loads(line) for line in (FIXTURES / f"dataset_{split}.jsonl").read_text().splitlines()]
    records = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["messages"][-1]
        records.append({"id": row["id"], "prompt": row["messages"][:-1], "chosen": row["messages"][-1:],
                        "rejected": [other], "kind": "regeneration", "themes": row.get("themes", []),
                        "theme_weight": row.get("theme_weight", 1.0)})
    return records


@pytest.fixture
def preference_dir(tmp_path) -> Path:
    folder = tmp_path / "data_finetune"
    folder.mkdir()
    for split in ("train", "validation"):
        (folder / f"dataset_preferences_{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in preference_records(split)))
    return folder


def _tiny(tiny_model_dir, lora: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    if not lora:
        return model.eval()
    torch.manual_seed(1)
    model = apply_lora(model, LoraSetup(8, 16, 0.0, (), False), "none")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # a LoRA that changes the model, so base != policy
    fuse_lora(model)
    return model.eval()


def _direct_logprob(model, data, i) -> float:
    """One sample alone, no packing: log-softmax over the full logits, summed at its labelled positions."""
    ids, labels = data.sample(i)
    logits = model(input_ids=torch.from_numpy(ids)[None]).logits[0].float()
    keep = torch.from_numpy(labels != -100)
    return float(F.log_softmax(logits[keep], -1).gather(1, torch.from_numpy(labels)[keep][:, None]).sum())


def test_packed_reply_logprobs_match_each_reply_computed_alone(tiny_model_dir, tokenizer, preference_dir):
    pairs, _ = load_preferences(preference_dir / "dataset_preferences_train.jsonl", tokenizer, 256, cache_dir=None)
    model = _tiny(tiny_model_dir, lora=True)
    [(batch_pairs, rows)] = micro_batches(pairs, np.arange(4), 4, capacity=512, packing=True)
    assert any(len(row) > 1 for row in rows)  # several replies share a row
    with torch.no_grad():
        samples, sums, counts = reply_logprobs(model, pairs.samples, rows, tokenizer.pad_token_id or 0)
    assert sorted(samples) == sorted(int(s) for k in batch_pairs for s in (pairs.chosen[k], pairs.rejected[k]))
    with torch.no_grad():
        direct = [_direct_logprob(model, pairs.samples, i) for i in samples]
    np.testing.assert_allclose(sums.numpy(), direct, rtol=1e-4, atol=1e-3)
    assert counts.tolist() == [pairs.samples.label_count(i) for i in samples]


def test_a_pair_drawn_twice_into_one_batch_counts_twice_not_doubled(tiny_model_dir, tokenizer, preference_dir):
    pairs, _ = load_preferences(preference_dir / "dataset_preferences_train.jsonl", tokenizer, 256, cache_dir=None)
    model = _tiny(tiny_model_dir, lora=True)
    [(_, rows)] = micro_batches(pairs, np.array([0, 0, 1]), 3, capacity=512, packing=True)
    with torch.no_grad():
        places, sums, _ = reply_logprobs(model, pairs.samples, rows, 0)
        direct = {i: _direct_logprob(model, pairs.samples, i) for i in set(places)}
    assert sorted(places).count(int(pairs.chosen[0])) == 2
    np.testing.assert_allclose(sums.numpy(), [direct[i] for i in places], rtol=1e-4, atol=1e-3)


def test_dpo_loss_with_the_lora_disabled_reference_matches_a_separate_base_model(tiny_model_dir, tokenizer,
                                                                                 preference_dir):
    pairs, _ = load_preferences(preference_dir / "dataset_preferences_train.jsonl", tokenizer, 256, cache_dir=None)
    policy = _tiny(tiny_model_dir, lora=True)
    base = _tiny(tiny_model_dir, lora=False)  # a second copy only here, to check the one-copy reference
    [(batch_pairs, rows)] = micro_batches(pairs, np.arange(3), 3, capacity=512, packing=True)
    with torch.no_grad():
        samples, policy_sums, _ = reply_logprobs(policy, pairs.samples, rows, 0)
        with policy.disable_adapter():
            _, reference_sums, _ = reply_logprobs(policy, pairs.samples, rows, 0)
    where = {s: j for j, s in enumerate(samples)}
    chosen = [where[int(pairs.chosen[k])] for k in batch_pairs]
    rejected = [where[int(pairs.rejected[k])] for k in batch_pairs]
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_sums[chosen], policy_sums[rejected],
                                                        reference_sums[chosen], reference_sums[rejected], beta=0.5)
    with torch.no_grad():
        for j, k in enumerate(batch_pairs):
            pc, pr = (_direct_logprob(policy, pairs.samples, int(pairs.chosen[k])),
                      _direct_logprob(policy, pairs.samples, int(pairs.rejected[k])))
            rc, rr = (_direct_logprob(base, pairs.samples, int(pairs.chosen[k])),
                      _direct_logprob(base, pairs.samples, int(pairs.rejected[k])))
            expected = -F.logsigmoid(torch.tensor(0.5 * ((pc - rc) - (pr - rr))))
            assert abs(float(losses[j]) - float(expected)) < 1e-3
            assert abs(float(chosen_rewards[j]) - 0.5 * (pc - rc)) < 1e-3
            assert abs(float(rejected_rewards[j]) - 0.5 * (pr - rr)) < 1e-3
    assert not torch.allclose(policy_sums, reference_sums)


def _scored_first_batch(tiny_model_dir, tokenizer, preference_dir):
    """A LoRA tiny model's reply log-prob sums and token counts for the first 3 training pairs, packed into one
    micro-batch, with the positions of each pair's chosen and rejected reply among them."""
    pairs, _ = load_preferences(preference_dir / "dataset_preferences_train.jsonl", tokenizer, 256, cache_dir=None)
    model = _tiny(tiny_model_dir, lora=True)
    [(batch_pairs, rows)] = micro_batches(pairs, np.arange(3), 3, capacity=512, packing=True)
    samples, sums, counts = reply_logprobs(model, pairs.samples, rows, 0)
    where = {s: j for j, s in enumerate(samples)}
    chosen = [where[int(pairs.chosen[k])] for k in batch_pairs]
    rejected = [where[int(pairs.rejected[k])] for k in batch_pairs]
    return model, pairs, batch_pairs, sums, counts, chosen, rejected


def test_rpo_adds_alpha_times_the_chosen_replies_token_mean_nll_to_every_pairs_dpo_loss(tiny_model_dir, tokenizer,
                                                                                        preference_dir):
    model, pairs, batch_pairs, sums, counts, chosen, rejected = _scored_first_batch(tiny_model_dir, tokenizer,
                                                                                    preference_dir)
    reference = torch.tensor([-40.0, -55.0, -70.0]), torch.tensor([-45.0, -50.0, -90.0])
    losses, chosen_rewards, _ = dpo_loss(sums[chosen], sums[rejected], *reference, beta=0.1, rpo_alpha=0.7,
                                         chosen_tokens=counts[chosen])
    losses.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        c = [_direct_logprob(model, pairs.samples, int(pairs.chosen[k])) for k in batch_pairs]
        r = [_direct_logprob(model, pairs.samples, int(pairs.rejected[k])) for k in batch_pairs]
    # TRL: cross-entropy over all the batch's chosen reply tokens (one mean), added to each pair's DPO loss
    nll = -sum(c) / sum(pairs.samples.label_count(int(pairs.chosen[k])) for k in batch_pairs)
    for j in range(3):
        dpo = -np.log(1 / (1 + np.exp(-0.1 * ((c[j] - float(reference[0][j])) - (r[j] - float(reference[1][j]))))))
        assert abs(float(losses[j].detach()) - (dpo + 0.7 * nll)) < 1e-3
        assert abs(float(chosen_rewards[j]) - 0.1 * (c[j] - float(reference[0][j]))) < 1e-3  # rewards stay DPO's
    plain, _, _ = dpo_loss(sums[chosen].detach(), sums[rejected].detach(), *reference, beta=0.1)
    torch.testing.assert_close(losses.detach() - plain, torch.full((3,), 0.7 * nll), atol=1e-3, rtol=0)


def test_a_dpo_run_with_rpo_alpha_scores_log_2_plus_alpha_times_the_chosen_nll_before_training(
        tiny_model_dir, preference_dir, tmp_path):
    from rhizome.train.config import TrainConfig
    from rhizome.train.dpo import PreferenceTune
    from rhizome.train.loop import Dist

    recipe = PreferenceTune(TrainConfig(
        method="dpo", rpo_alpha=0.5, model=str(tiny_model_dir), init_adapter="none",
        train_file=str(preference_dir / "dataset_preferences_train.jsonl"),
        validation_file=str(preference_dir / "dataset_preferences_validation.jsonl"), output_dir=str(tmp_path / "rpo"),
        max_seq_length=256, per_device_train_batch_size=64, threads=1, report_to=["none"], plots=False,
        use_cache=False), Dist())
    recipe.setup()
    figures = recipe.evaluate()  # one micro-batch holds every validation pair, and the policy is its reference
    assert figures["loss"] == pytest.approx(np.log(2) + 0.5 * np.log(figures["chosen_perplexity"]), rel=1e-5)


@pytest.mark.parametrize("method, alpha", [("orpo", 1.0), ("dpo", -0.5)])
def test_rpo_alpha_is_refused_for_orpo_and_when_negative(method, alpha, preference_dir):
    from rhizome.train.config import TrainConfig
    from rhizome.train.dpo import PreferenceError, PreferenceTune

    with pytest.raises(PreferenceError, match="--rpo-alpha"):
        PreferenceTune(TrainConfig(method=method, rpo_alpha=alpha,
                                   train_file=str(preference_dir / "dataset_preferences_train.jsonl")))


def test_orpo_loss_matches_a_direct_computation_of_nll_plus_the_odds_ratio_term(tiny_model_dir, tokenizer,
                                                                                  preference_dir):
    model, pairs, batch_pairs, sums, counts, chosen, rejected = _scored_first_batch(tiny_model_dir, tokenizer,
                                                                                    preference_dir)
    losses, chosen_rewards, rejected_rewards = orpo_loss(sums[chosen] / counts[chosen],
                                                         sums[rejected] / counts[rejected], beta=0.25)
    losses.sum().backward()  # the gradient reaches the LoRA weights: ORPO trains without a reference pass
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        for j, k in enumerate(batch_pairs):
            c, r = int(pairs.chosen[k]), int(pairs.rejected[k])
            mean_c = _direct_logprob(model, pairs.samples, c) / pairs.samples.label_count(c)
            mean_r = _direct_logprob(model, pairs.samples, r) / pairs.samples.label_count(r)
            odds_c, odds_r = np.exp(mean_c) / (1 - np.exp(mean_c)), np.exp(mean_r) / (1 - np.exp(mean_r))
            expected = -mean_c - 0.25 * np.log(1 / (1 + odds_r / odds_c))  # log sigmoid(log(odds_c / odds_r))
            assert abs(float(losses[j]) - expected) < 1e-3
            assert abs(float(chosen_rewards[j]) - 0.25 * mean_c) < 1e-4
            assert abs(float(rejected_rewards[j]) - 0.25 * mean_r) < 1e-4


def test_orpo_odds_stay_finite_for_a_certain_reply_and_a_nearly_impossible_one():
    certain, impossible = torch.tensor([0.0, -1e-9], requires_grad=True), torch.tensor([-80.0, -1e-3])
    losses, _, _ = orpo_loss(certain, impossible, beta=0.1)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(certain.grad).all()


def test_pairs_losing_a_reply_to_max_seq_length_are_left_out_whole(tokenizer, preference_dir):
    pairs, _ = load_preferences(preference_dir / "dataset_preferences_train.jsonl", tokenizer, 256, cache_dir=None)
    assert isinstance(pairs, PreferenceData) and len(pairs) == 48 and pairs.incomplete == 0
    assert all(pairs.samples.ids[c].endswith("chosen") and pairs.samples.ids[r].endswith("rejected")
               for c, r in zip(pairs.chosen, pairs.rejected))


def _command(tiny_model_dir, data: Path, out: Path, *extra) -> list[str]:
    return [
        sys.executable, str(ROOT / "train_script.py"), "--method", "dpo", "--model", str(tiny_model_dir),
        "--train-file", str(data / "dataset_preferences_train.jsonl"),
        "--validation-file", str(data / "dataset_preferences_validation.jsonl"), "--init-adapter", "none",
        "--output-dir", str(out), "--cache-dir", str(data / "tokenized_cache"), "--max-seq-length", "256",
        "--batch-size", "2", "--grad-accum", "2", "--num-train-epochs", "2", "--lr", "5e-3", "--warmup-steps", "2",
        "--lora-dropout", "0.1", "--save-steps", "5", "--eval-steps", "12", "--logging-steps", "4", "--threads", "1",
        "--report-to", "none", *extra,
    ]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RHIZOME_NO_PROGRESS": "1"}


def _run(command, cwd):
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_dpo_run_learns_the_preferences_and_resumes_exactly_after_kill_9(tiny_model_dir, preference_dir, tmp_path):
    reference = tmp_path / "reference"
    _run(_command(tiny_model_dir, preference_dir, reference), tmp_path)
    history = json.loads((reference / "final" / "training_metrics.json").read_text())
    evals = history["eval"]
    assert evals[0]["reward_accuracy"] == 0.0 and evals[0]["loss"] == pytest.approx(np.log(2))  # policy == reference
    second_epoch = [m for m in history["train"] if m["step"] > 12]
    assert np.mean([m["reward_accuracy"] for m in second_epoch]) > 0.6  # it learns the training preferences
    assert np.median([m["reward_margin"] for m in second_epoch]) > 0
    state = json.loads((reference / "run.json").read_text())
    assert state["status"] == "finished" and state["step"] == state["total_steps"] == 24
    metrics = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert all("reward_accuracy" in m for m in metrics)
    assert (reference / "preference_plots.png").exists()

    _kill_while_checkpointing_and_rerun(_command(tiny_model_dir, preference_dir, tmp_path / "resumed"),
                                        tmp_path / "resumed", tmp_path)
    _assert_same_run(reference, tmp_path / "resumed")


def test_orpo_run_trains_without_a_reference_pass_and_resumes_exactly_after_kill_9(tiny_model_dir, preference_dir,
                                                                                  tmp_path):
    reference = tmp_path / "reference"
    _run(_command(tiny_model_dir, preference_dir, reference, "--method", "orpo"), tmp_path)
    assert "reference log-probabilities" not in (reference / "train.log").read_text()
    history = json.loads((reference / "final" / "training_metrics.json").read_text())
    train = history["train"]
    assert np.mean([m["loss"] for m in train[-6:]]) < np.mean([m["loss"] for m in train[:6]])
    first, last = history["eval"][0], history["eval"][-1]
    assert last["chosen_perplexity"] < 0.8 * first["chosen_perplexity"]  # the NLL term: chosen replies get likelier
    assert (reference / "preference_plots.png").exists()
    assert "ORPO" in (reference / "final" / "README.md").read_text()

    _kill_while_checkpointing_and_rerun(_command(tiny_model_dir, preference_dir, tmp_path / "resumed", "--method",
                                                 "orpo"), tmp_path / "resumed", tmp_path)
    _assert_same_run(reference, tmp_path / "resumed")


def _kill_while_checkpointing_and_rerun(command, resumed: Path, cwd: Path) -> None:
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if list(resumed.glob(".checkpoint-10.tmp-*")) or (resumed / "checkpoint-10").exists():
                break
            time.sleep(0.002)
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    _run(command, cwd)


def _assert_same_run(reference: Path, resumed: Path) -> None:
    from safetensors.torch import load_file

    history = json.loads((reference / "final" / "training_metrics.json").read_text())
    ours = json.loads((resumed / "final" / "training_metrics.json").read_text())
    assert [m["loss"] for m in ours["train"]] == pytest.approx([m["loss"] for m in history["train"]], rel=1e-5)
    a = load_file(reference / "final" / "adapter_model.safetensors")
    b = load_file(resumed / "final" / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_preference_training_starts_from_the_sft_adapter_weights_exactly(tiny_model_dir, preference_dir, tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from rhizome.train.config import TrainConfig
    from rhizome.train.dpo import PreferenceTune
    from rhizome.train.loop import Dist
    from rhizome.train.loop import run as run_sft

    common = dict(model=str(tiny_model_dir), max_seq_length=256, per_device_train_batch_size=2,
                  gradient_accumulation_steps=1, learning_rate=5e-3, warmup_steps=0, max_steps=3, threads=1,
                  report_to=["none"], plots=False, use_cache=False, lora_r=4, lora_alpha=8)
    run_sft(TrainConfig(train_file=str(FIXTURES / "dataset_train.jsonl"), validation_file="",
                        output_dir=str(tmp_path / "sft"), **common))
    preferences = preference_dir / "dataset_preferences_train.jsonl"
    recipe = PreferenceTune(TrainConfig(method="orpo", train_file=str(preferences), validation_file="",
                                        output_dir=str(tmp_path / "orpo"), init_adapter=str(tmp_path / "sft"),
                                        **{**common, "lora_r": 16}), Dist())
    recipe.setup()
    saved = load_file(tmp_path / "sft" / "final" / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(recipe.model)
    assert recipe.config.lora_r == 4 and set(loaded) == set(saved)  # the adapter's shape is adopted
    assert any(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k)  # SFT moved its LoRA
    assert all(torch.equal(loaded[k].float(), saved[k].float()) for k in saved)
