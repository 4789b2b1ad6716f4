"""Training throughput: our trainer vs what a user would write by hand, side by side in one run.

Same model (SmolLM2-135M-Instruct, fp32, LoRA r=16 on all 7 projections), same chat data (synthetic
pairs, loss on the assistant reply only), same rows per step, same steps and max length:

  ours            rhizome.train (packed rows, LM head only where the loss is, fp32)
  ours-qlora      the same on a 4-bit NF4 base (bitsandbytes)
  ours-bf16       the same with bf16 autocast
  ours-fullhead   the same with the LM head over every position (what the optimisation saves)
  trainer         Hugging Face Trainer + PEFT, dynamic padding to the longest in the batch
  trainer-grouped the same with train_sampling_strategy="group_by_length"
  trl             TRL SFTTrainer, packing=True (best-fit decreasing, padding-free)

Each runs in its own process (so peak memory is its own); the first step is a warm-up and not timed.
Prints the median over steps of real (non-padding) tokens per second and of seconds per step (the
machine may be shared), nominal FLOP/s (4 x parameters x real tokens: forward + activation gradients
of a frozen base) against the measured fp32 matmul peak, peak RSS, and the ratios.
Goals: ours >= 1.5x trainer, >= 1.0x trl.

    python bench/train.py [--steps 5] [--batch-size 4] [--max-seq-length 512] [--pairs 300]
    python bench/train.py --configs ours trainer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

CONFIGS = ("ours", "ours-qlora", "ours-bf16", "ours-fullhead", "trainer", "trainer-grouped", "trl")
WORDS = ["hive", "queen", "brood", "frame", "honey", "super", "varroa", "smoker", "nectar", "comb", "spore", "substrate", "straw", "oyster", "pasteurise", "humidity", "flush", "chain", "derailleur", "cassette", "spoke", "rim", "hub", "bearing", "grease", "tyre", "valve", "pressure", "season", "spring", "autumn", "temperature", "colony", "mushroom", "bicycle", "repair", "because", "therefore", "however", "the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "with", "as", "on", "was", "this", "be", "are", "you", "your", "can", "will", "not"]


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chat pairs whose prompt and reply lengths vary like real exchanges (many short, a few long)."""
    rng = np.random.default_rng(seed)

    def text(mean_words: float) -> str:
        words = int(np.clip(rng.lognormal(np.log(mean_words), 0.7), 3, 600))
        return " ".join(rng.choice(WORDS, words)).capitalize() + "."

    return [{"id": f"bench-{i}", "messages": [{"role": "user", "content": text(50)},
                                              {"role": "assistant", "content": text(120)}],
             "themes": [str(rng.choice(WORDS[:20]))], "theme_weight": 1.0, "quality": 1.0, "source": "bench",
             "conversation_id": f"c{i}"} for i in range(n)]


# ------------------------------------------------------------------------------------------- one config


def _ours(name: str, args) -> list[tuple[float, int]]:
    from rhizome.train.config import TrainConfig
    from rhizome.train.loop import CausalLMLoss, FineTune

    if name == "ours-fullhead":
        import torch.nn.functional as F

        def forward(self, input_ids, position_ids, labels):
            causal_lm = self.model.get_base_model()
            hidden = causal_lm.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
            logits = causal_lm.lm_head(hidden)
            return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum", ignore_index=-100)

        CausalLMLoss.forward = forward
    config = TrainConfig(
        train_file=args.data, validation_file="", output_dir=str(Path(args.tmp) / name),
        cache_dir=str(Path(args.tmp) / "cache"), max_seq_length=args.max_seq_length, use_theme_weighting=False,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, max_steps=args.steps + 1,
        learning_rate=1e-4, warmup_steps=0, quantization="nf4" if name == "ours-qlora" else "none",
        precision="bf16" if name == "ours-bf16" else "fp32", plots=False, threads=args.threads,
    )
    recipe = FineTune(config)
    recipe.setup()
    timings = []
    for index in range(args.steps + 1):
        metrics = recipe.train_step(index)
        timings.append((metrics["seconds"], metrics["real_tokens"]))
    return timings


def _hf_dataset(args, tokenizer):
    from datasets import Dataset

    from rhizome.train.cache import load_or_tokenize

    data, _ = load_or_tokenize(args.data, tokenizer, args.max_seq_length, "last", cache_dir=None)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "assistant_masks": []}
    for i in range(len(data)):
        start, end = data.offsets[i], data.offsets[i + 1]
        ids = data.tokens[start:end].astype(int).tolist()
        mask = data.targets[start:end].astype(int).tolist()
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * len(ids))
        rows["labels"].append([t if m else -100 for t, m in zip(ids, mask)])
        rows["assistant_masks"].append(mask)
    return Dataset.from_dict(rows)


class _StepTimer:
    """A TrainerCallback recording each optimizer step's wall time."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, *a, **k):
                timer.started = time.perf_counter()

            def on_step_end(self, *a, **k):
                timer.seconds.append(time.perf_counter() - timer.started)

        self.seconds: list[float] = []
        self.callback = Callback()


def _counting(collator, counts: list[int], key_real):
    def collate(features):
        batch = collator(features)
        counts.append(key_real(batch))
        return batch

    return collate


def _hf(name: str, args) -> list[tuple[float, int]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import lora_target_modules, resolve_model

    path = resolve_model(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = _hf_dataset(args, tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=lora_target_modules(model),
                      task_type="CAUSAL_LM")
    timer, counts = _StepTimer(), []
    common = {"output_dir": str(Path(args.tmp) / name), "per_device_train_batch_size": args.batch_size,
              "gradient_accumulation_steps": 1, "max_steps": args.steps + 1, "learning_rate": 1e-4,
              "save_strategy": "no", "report_to": [], "logging_steps": 10_000, "use_cpu": True,
              "dataloader_num_workers": 0, "seed": 0}
    if name == "trl":
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(**common, packing=True, packing_strategy="bfd", max_length=args.max_seq_length,
                           bf16=False, fp16=False, gradient_checkpointing=False)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset.remove_columns(["labels", "attention_mask"]),
                             processing_class=tokenizer, peft_config=lora, callbacks=[timer.callback])
        trainer.data_collator = _counting(trainer.data_collator, counts, lambda b: int(b["input_ids"].numel()))
    else:
        config = TrainingArguments(**common, remove_unused_columns=False,
                                   **({"train_sampling_strategy": "group_by_length"} if name == "trainer-grouped" else {}))
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=get_peft_model(model, lora), args=config, callbacks=[timer.callback],
                          train_dataset=dataset.remove_columns(["assistant_masks"]),
                          data_collator=_counting(collator, counts, lambda b: int(b["attention_mask"].sum())))
    trainer.train()
    return list(zip(timer.seconds, counts))


def run_one(name: str, args) -> dict:
    import torch

    from rhizome.device import physical_cores

    torch.set_num_threads(args.threads or physical_cores())
    timings = (_ours if name.startswith("ours") else _hf)(name, args)[1:]  # first step: warm-up
    # Medians: the machine may be shared, and one slow step should not decide a ratio.
    return {"config": name, "steps": len(timings), "seconds_per_step": float(np.median([t for t, _ in timings])),
            "tokens_per_s": float(np.median([n / t for t, n in timings])),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


# ------------------------------------------------------------------------------------------- the table


def matmul_peak(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 4 * 2 * 2048**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per config (plus one warm-up)")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per step")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = physical cores)")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print("RESULT " + json.dumps(run_one(args.only, args)), flush=True)
        return

    import torch

    from rhizome.device import physical_cores
    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import parameter_count, resolve_model

    threads = args.threads or physical_cores()
    peak = matmul_peak(threads)
    params = parameter_count(resolve_model(DEFAULT_MODEL))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "dataset_train.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(args.pairs)))
        for name in args.configs:
            command = [sys.executable, __file__, "--only", name, "--data", str(data), "--tmp", tmp,
                       "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                       "--max-seq-length", str(args.max_seq_length), "--threads", str(threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(lines[-1][len("RESULT "):])
            print(f"  {name:16s} {results[name]['tokens_per_s']:7.0f} tok/s", file=sys.stderr, flush=True)

    print(f"SmolLM2-135M-Instruct ({params / 1e6:.1f}M parameters), {args.pairs} pairs, batch {args.batch_size} rows, "
          f"max length {args.max_seq_length}, {args.steps} timed steps, {threads} threads, torch {torch.__version__}")
    print(f"fp32 matmul peak (2048^2): {peak / 1e9:.0f} GFLOP/s")
    print(f"{'config':16s} {'real tok/s':>10s} {'s/step':>7s} {'GFLOP/s':>8s} {'% peak':>7s} {'peak RSS':>9s}")
    for name, r in results.items():
        flops = 4 * params * r["tokens_per_s"]
        print(f"{name:16s} {r['tokens_per_s']:10.0f} {r['seconds_per_step']:7.2f} {flops / 1e9:8.1f} "
              f"{100 * flops / peak:6.1f}% {r['peak_rss_gb']:7.2f} GB")
    if "ours" in results:
        for other, goal in (("trainer", 1.5), ("trainer-grouped", None), ("trl", 1.0), ("ours-qlora", None),
                            ("ours-bf16", None), ("ours-fullhead", None)):
            if other in results:
                ratio = results["ours"]["tokens_per_s"] / results[other]["tokens_per_s"]
                print(f"ours / {other:16s} {ratio:5.2f}x" + (f"   (goal >= {goal}x)" if goal else ""))
    if "ours-bf16" in results:  # the default on CPUs with AVX512-BF16 / AMX (precision auto)
        for other in ("trainer", "trainer-grouped", "trl"):
            if other in results:
                print(f"ours-bf16 / {other:11s} {results['ours-bf16']['tokens_per_s'] / results[other]['tokens_per_s']:5.2f}x")


if __name__ == "__main__":
    main()
