"""Training throughput: our trainer vs what a user would write by hand, side by side in one run.

Same model (SmolLM2-135M-Instruct, or a random model of SmolLM2-360M's / Llama-3.2-1B's shape with
--shape), LoRA r=16 on all 7 projections, same chat data (synthetic pairs, loss on the assistant reply
only), same rows per step, same steps and max length:

  ours                  rhizome.train in fp32 (packed rows, fused LoRA, chunked LM-head loss at labelled positions)
  ours-bf16             the same in bf16: frozen base stored in bf16, LoRA weights and optimizer fp32 (the default
                        on CPUs with AVX512-BF16 / AMX)
  ours-qlora            ours on a 4-bit NF4 base (bitsandbytes); ours-bf16-qlora the same with bf16 autocast
  ours-fullhead         ours with the LM head over every position (what computing it at labelled positions saves)
  ours-compile, ours-bf16-compile   ours with --compile on (torch.compile of the decoder layers); the compilation,
                        paid once per run in setup, is reported on its own with the steps it takes to repay
  trainer               Hugging Face Trainer + PEFT, dynamic padding to the longest in the batch
  trainer-grouped       the same with train_sampling_strategy="group_by_length" (the fair anchor)
  trainer-grouped-bf16  the same with bf16=True (what a user of this CPU would run)
  trl, trl-bf16         TRL SFTTrainer, packing=True (best-fit decreasing, padding-free), fp32 / bf16=True
  trainer-grouped-qlora, trainer-grouped-bf16-qlora   the grouped Trainer + PEFT on the same 4-bit NF4 base as
                        ours-qlora (rhizome's loader), fp32 / bf16=True: the QLoRA anchors

Each runs in its own process (so peak memory is its own); the first step is a warm-up and not timed.
Prints the median over steps of real (non-padding) tokens per second and of seconds per step (the
machine may be shared), nominal FLOP/s (4 x parameters x real tokens: forward + activation gradients
of a frozen base) against the measured matmul peak *of the dtype used* on the model's own shapes
(fp32 peak for fp32 rows, bf16 peak for bf16 rows), peak RSS, and ratios in the same precision.
Goals: ours-bf16 >= 2.5x trainer-grouped-bf16, ours >= 1.5x trainer-grouped.

    python bench/train.py                                   # the default configs (about 15 minutes on 2 cores)
    python bench/train.py --configs ours-bf16 trainer-grouped-bf16 --shape 360m --steps 2
    python bench/train.py --profile [--before] [--precision fp32] [--profile-top 30]   # where one step's time goes
    python bench/train.py --ablate --batch-size 2           # each optimisation of the step on its own
    python bench/train.py --openmp --steps 3                # thread counts and OpenMP settings, alternating processes
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

CONFIGS = ("ours", "ours-bf16", "ours-compile", "ours-bf16-compile", "trainer-grouped", "trainer-grouped-bf16",
           "ours-qlora", "ours-bf16-qlora", "trainer-grouped-qlora", "trainer-grouped-bf16-qlora", "ours-fullhead",
           "trainer", "trl", "trl-bf16")
# The default run: ours with and without compilation and the fair anchor (HF Trainer with length grouping) in both
# precisions, and TRL in bf16.
DEFAULT_CONFIGS = ("ours", "ours-compile", "ours-bf16", "ours-bf16-compile", "trainer-grouped", "trainer-grouped-bf16",
                   "trl-bf16")
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


def _recipe(name: str, args, speedups=None, tag: str = "", attention: str = "sdpa"):
    """Our trainer, set up for config ``name`` on the bench data (not yet stepped)."""
    from rhizome.train.config import TrainConfig
    from rhizome.train.loop import CausalLMLoss, FineTune, Speedups

    if name == "ours-fullhead":
        import torch.nn.functional as F

        def forward(self, input_ids, position_ids, labels):
            causal_lm = self.model.get_base_model()
            hidden = causal_lm.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
            logits = causal_lm.lm_head(hidden)
            return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum", ignore_index=-100)

        CausalLMLoss.forward = forward
    config = TrainConfig(
        model=args.model, train_file=args.data, validation_file="", output_dir=str(Path(args.tmp) / (name + tag)),
        cache_dir=str(Path(args.tmp) / "cache"), max_seq_length=args.max_seq_length, use_theme_weighting=False,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1, max_steps=args.steps + 1,
        learning_rate=1e-4, warmup_steps=0, quantization="nf4" if "qlora" in name else "none",
        precision="bf16" if "bf16" in name else "fp32", plots=False, threads=args.threads,
        compile="on" if "compile" in name else "off", report_to=["none"],
    )
    recipe = FineTune(config, speedups=speedups or Speedups())
    recipe.setup()
    if attention != "sdpa":  # after setup, so only for variants that are not compiled (ABLATION says which)
        recipe.model.get_base_model().set_attn_implementation(attention)
    return recipe


def _ours(name: str, args) -> tuple[list[tuple[float, int, float]], dict]:
    recipe = _recipe(name, args)
    timings = []
    for index in range(args.steps + 1):
        started = time.process_time()
        metrics = recipe.train_step(index)
        timings.append((metrics["seconds"], metrics["real_tokens"], time.process_time() - started))
    return timings, {"compile_s": recipe.compile_seconds}


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
                timer.started = time.perf_counter(), time.process_time()

            def on_step_end(self, *a, **k):
                timer.seconds.append(time.perf_counter() - timer.started[0])
                timer.cpu.append(time.process_time() - timer.started[1])

        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.callback = Callback()


def _counting(collator, counts: list[int], key_real):
    def collate(features):
        batch = collator(features)
        counts.append(key_real(batch))
        return batch

    return collate


def hf_model(name: str, path: str):
    """(model, LoRA config for the anchor to apply) for anchor ``name``. The -qlora anchors get the very 4-bit NF4
    base and adapters ours-qlora trains (rhizome's loader; fp32 compute, bf16 by the Trainer's autocast) and no
    config; the others fp32 weights and PEFT's LoRA r=16 on the same projections as ours."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from rhizome.train.model import LoraSetup, apply_lora, load_base_model, lora_target_modules

    torch.manual_seed(0)
    if name.endswith("-qlora"):
        return apply_lora(load_base_model("bench", path, "nf4", "cpu", torch.float32), LoraSetup(), "nf4"), None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=lora_target_modules(model),
                             task_type="CAUSAL_LM")


def _hf(name: str, args) -> list[tuple[float, int]]:
    from peft import get_peft_model
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    path = args.model
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = _hf_dataset(args, tokenizer)
    model, lora = hf_model(name, path)
    timer, counts = _StepTimer(), []
    common = {"output_dir": str(Path(args.tmp) / name), "per_device_train_batch_size": args.batch_size,
              "gradient_accumulation_steps": 1, "max_steps": args.steps + 1, "learning_rate": 1e-4,
              "save_strategy": "no", "report_to": [], "logging_steps": 10_000, "use_cpu": True,
              "dataloader_num_workers": 0, "seed": 0, "bf16": "-bf16" in name}
    if name.startswith("trl"):
        from trl import SFTConfig, SFTTrainer

        config = SFTConfig(**common, packing=True, packing_strategy="bfd", max_length=args.max_seq_length,
                           fp16=False, gradient_checkpointing=False)
        trainer = SFTTrainer(model=model, args=config,
                             train_dataset=dataset.remove_columns(["labels", "attention_mask"]),
                             processing_class=tokenizer, peft_config=lora, callbacks=[timer.callback])
        trainer.data_collator = _counting(trainer.data_collator, counts, lambda b: int(b["input_ids"].numel()))
    else:
        grouped = {"train_sampling_strategy": "group_by_length"} if name.startswith("trainer-grouped") else {}
        config = TrainingArguments(**common, remove_unused_columns=False, **grouped)
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        trainer = Trainer(model=get_peft_model(model, lora) if lora else model, args=config,
                          callbacks=[timer.callback], train_dataset=dataset.remove_columns(["assistant_masks"]),
                          data_collator=_counting(collator, counts, lambda b: int(b["attention_mask"].sum())))
    trainer.train()
    return list(zip(timer.seconds, counts, timer.cpu)), {}


def run_one(name: str, args) -> dict:
    import torch

    from rhizome.device import physical_cores

    torch.set_num_threads(args.threads or physical_cores())
    timings, extra = (_ours if name.startswith("ours") else _hf)(name, args)
    timings = timings[1:]  # first step: warm-up
    # Medians: the machine may be shared, and one slow step should not decide a ratio.
    # CPU seconds too: on a shared machine wall time also counts time spent waiting for a core.
    return {"config": name, "steps": len(timings), "seconds_per_step": float(np.median([t for t, _, _ in timings])),
            "tokens_per_s": float(np.median([n / t for t, n, _ in timings])),
            "spread": [float(min(n / t for t, n, _ in timings)), float(max(n / t for t, n, _ in timings))],
            "tokens_per_cpu_s": float(np.median([n / c for _, n, c in timings])),
            "tokens_per_row": float(np.median([n for _, n, _ in timings])) / args.batch_size,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **extra}


# ------------------------------------------------------------------------------------------- ablation

# Each optimisation of the step added one at a time (rhizome.train.loop.Speedups), bf16 precision; then the
# fused step with eager attention instead of SDPA. (Threads are compared by separate runs with --threads: the
# compiled kernels fix their thread count when generated.)
ABLATION = {
    "bf16 autocast, PEFT LoRA (before)": {"bf16_weights": False, "fused_lora": False, "fused_loss": False},
    "+ frozen base stored in bf16": {"bf16_weights": True, "fused_lora": False, "fused_loss": False},
    "+ fused LoRA": {"bf16_weights": True, "fused_lora": True, "fused_loss": False},
    "+ chunked fused loss": {"bf16_weights": True, "fused_lora": True, "fused_loss": True},
    "+ torch.compile of the decoder layers": {"compile": True},
    "chunked fused loss, eager attention (not SDPA)": {"attention": "eager"},
}


def ablate(args) -> None:
    """Every ABLATION variant in this one process, stepping them in turn (so load changes hit all alike)."""
    import torch

    from rhizome.train.loop import Speedups

    torch.set_num_threads(args.threads)
    recipes = {}
    for label, variant in ABLATION.items():
        if args.variants and list(ABLATION).index(label) not in args.variants:
            continue
        flags = {key: value for key, value in variant.items() if key in Speedups.__dataclass_fields__}
        recipes[label] = _recipe("ours-bf16-compile" if variant.get("compile") else "ours-bf16", args,
                                 Speedups(**flags), label, variant.get("attention", "sdpa"))
        if recipes[label].compile_seconds is not None:
            print(f"  {label}: compiled in {recipes[label].compile_seconds:.0f} s", file=sys.stderr, flush=True)
    seconds: dict = {label: [] for label in recipes}
    cpu: dict = {label: [] for label in recipes}
    tokens: dict = {label: [] for label in recipes}
    for index in range(args.steps + 1):
        for label, recipe in recipes.items():
            # CPU seconds as well as wall: on a shared machine, wall time also counts time spent descheduled.
            started = time.process_time()
            metrics = recipe.train_step(index)
            if index:  # the first step of each is a warm-up
                seconds[label].append(metrics["seconds"])
                cpu[label].append(time.process_time() - started)
                tokens[label].append(metrics["real_tokens"])
            print(f"  step {index} {label}: {metrics['seconds']:.2f} s, loss {metrics['loss']:.4f}", file=sys.stderr,
                  flush=True)
    print(f"{args.model_label}, batch {args.batch_size} x {args.max_seq_length}, {args.steps} timed steps each, "
          f"interleaved, {args.threads} threads, torch {torch.__version__}, "
          f"1-minute load average {os.getloadavg()[0]:.1f}")
    print("| variant | median s/step (min-max) | real tok/s | CPU s/step (min-max) | vs before, CPU |\n"
          "|---|---|---|---|---|")
    first = float(np.median(cpu[next(iter(recipes))]))  # "vs before" is against the first variant run
    for label in recipes:
        median, median_cpu = float(np.median(seconds[label])), float(np.median(cpu[label]))
        print(f"| {label} | {median:.2f} ({min(seconds[label]):.2f}-{max(seconds[label]):.2f}) | "
              f"{float(np.median(tokens[label])) / median:.0f} | {median_cpu:.2f} ({min(cpu[label]):.2f}-"
              f"{max(cpu[label]):.2f}) | {first / median_cpu:.2f}x |")


# ------------------------------------------------------------------------------------------- threads and OpenMP

# Thread counts and OpenMP settings, each in its own process (the OpenMP runtime reads its variables at start-up).
# torch's Linux wheels use GNU libgomp, so Intel's KMP_AFFINITY / KMP_BLOCKTIME do nothing; libgomp's own
# equivalents are OMP_PROC_BIND / OMP_PLACES (pinning) and OMP_WAIT_POLICY (spin or sleep between parallel regions).
# None: the physical cores, what rhizome.device picks.
OPENMP = {
    "physical cores, no OpenMP variables (the default)": (None, {}),
    "1 thread": (1, {}),
    "physical cores, OMP_PROC_BIND=close OMP_PLACES=cores": (None, {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}),
    "physical cores, OMP_WAIT_POLICY=passive": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "physical cores, OMP_WAIT_POLICY=active": (None, {"OMP_WAIT_POLICY": "ACTIVE"}),
}


def openmp(args) -> None:
    """ours-bf16 under each OPENMP setting, one process per setting and round, the settings alternating."""
    tokens_per_s: dict = {label: [] for label in OPENMP}
    cpu: dict = {label: [] for label in OPENMP}
    for round_ in range(args.rounds):
        for label, (threads, variables) in OPENMP.items():
            command = [sys.executable, __file__, "--only", "ours-bf16", "--data", args.data, "--tmp", args.tmp,
                       "--model", args.model, "--shape", args.shape, "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--max-seq-length", str(args.max_seq_length),
                       "--threads", str(threads or args.threads)]
            result = _subprocess_result(command, {**os.environ, **variables})
            if result is None:
                print(f"{label}: failed", file=sys.stderr)
                continue
            tokens_per_s[label].append(result["tokens_per_s"])
            cpu[label].append(result["tokens_per_cpu_s"])
            print(f"  round {round_} {label}: {result['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    print(f"{args.model_label}, ours-bf16, batch {args.batch_size} x {args.max_seq_length}, {args.steps} timed steps "
          f"per process, {args.rounds} processes per setting, alternating; 1-minute load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("| setting | real tok/s, median of processes (min-max) | real tok per CPU-s | vs the default |\n"
          "|---|---|---|---|")
    default = float(np.median(tokens_per_s[next(iter(OPENMP))]))
    for label, values in tokens_per_s.items():
        if values:
            print(f"| {label} | {np.median(values):.0f} ({min(values):.0f}-{max(values):.0f}) | "
                  f"{np.median(cpu[label]):.0f} | {np.median(values) / default:.2f}x |")


def _subprocess_result(command: list[str], env: dict | None = None) -> dict | None:
    """The RESULT line of a ``--only`` child process, or None (with its error output) if it failed."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------------- loss check


def loss_check(args) -> None:
    """fp32 and bf16 trained side by side on the demo's data_finetune/ (the demo's learning rate, 2 rows per
    step): training loss per step and test perplexity after training."""
    import torch

    from rhizome.train.config import TrainConfig
    from rhizome.train.loop import FineTune

    torch.set_num_threads(args.threads)
    folder = ROOT / "data_finetune"
    if not (folder / "dataset_train.jsonl").exists():
        sys.exit(f"{folder}/dataset_train.jsonl is missing: run bash scripts/demo.sh (or data_formatter.py) first")
    variants = {"fp32": "fp32", "bf16": "bf16"}
    recipes = {}
    for label, precision in variants.items():
        config = TrainConfig(train_file=str(folder / "dataset_train.jsonl"),
                             validation_file=str(folder / "dataset_test.jsonl"), eval_samples=0,
                             output_dir=str(Path(args.tmp) / label), cache_dir=str(Path(args.tmp) / "cache"),
                             max_steps=args.steps, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                             learning_rate=4e-4, warmup_steps=1, precision=precision, plots=False, threads=args.threads)
        recipes[label] = FineTune(config)
        recipes[label].setup()
    losses: dict = {label: [] for label in recipes}
    for index in range(args.steps):
        for label, recipe in recipes.items():
            losses[label].append(recipe.train_step(index)["loss"])
    print(f"demo data, {args.steps} steps of 2 rows x 512, lr 4e-4; test split: "
          f"{len(recipes['fp32'].val_data)} pairs")
    print("| run | loss at step 1 | mean loss, last 5 steps | test loss | test perplexity | vs fp32 |\n"
          "|---|---|---|---|---|---|")
    reference = None
    for label, recipe in recipes.items():
        test = recipe.evaluate()
        last = float(np.mean(losses[label][-5:]))
        reference = reference or (last, test["perplexity"])
        print(f"| {label} | {losses[label][0]:.4f} | {last:.4f} | {test['loss']:.4f} | {test['perplexity']:.2f} | "
              f"loss {100 * (last / reference[0] - 1):+.2f}%, "
              f"perplexity {100 * (test['perplexity'] / reference[1] - 1):+.2f}% |")


# ------------------------------------------------------------------------------------------- profile

PROFILE_ORDER = ("base matmuls", "LoRA matmuls", "LM head matmul", "attention", "elementwise, norms, RoPE, SiLU",
                 "casts and copies", "loss (log-softmax, NLL)", "optimizer and clipping", "Python and framework")


def _category(event, rank: int, vocab: int, optimizer_ids: set) -> str:
    name = event.name
    if event.id in optimizer_ids or name.startswith(("aten::_foreach", "aten::_fused_adam")):
        return "optimizer and clipping"
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"):
        dims = {d for shape in event.input_shapes for d in shape}
        if vocab in dims:
            return "LM head matmul"
        return "LoRA matmuls" if rank in dims else "base matmuls"
    if "attention" in name:
        return "attention"
    if any(key in name for key in ("log_softmax", "nll_loss", "cross_entropy", "logsumexp", "fused_linear_ce")):
        return "loss (log-softmax, NLL)"
    if name in ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"):
        return "casts and copies"
    return "elementwise, norms, RoPE, SiLU"


def profile(args) -> None:
    """One training step of our loop under torch.profiler, self time grouped by what it is spent on."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from rhizome.device import physical_cores

    torch.set_num_threads(args.threads or physical_cores())
    from rhizome.train.loop import Speedups

    name = "ours-bf16" if args.precision == "bf16" else "ours"
    before = Speedups(bf16_weights=False, fused_lora=False, fused_loss=False)
    recipe = _recipe(name, args, before if args.before else Speedups())
    for index in range(args.steps):  # warm-up (and the plain timing the profiled step is compared with)
        plain = recipe.train_step(index)["seconds"]
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        metrics = recipe.train_step(args.steps)
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    optimizer_ids: set = set()
    for event in events:  # every op below an optimizer / grad-clipping range
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith(("Optimizer.", "clip_grad")):
                optimizer_ids.add(event.id)
                break
            parent = parent.cpu_parent
    vocab = recipe.model.get_output_embeddings().weight.shape[0]
    seconds = dict.fromkeys(PROFILE_ORDER, 0.0)
    for event in events:
        seconds[_category(event, recipe.config.lora_r, vocab, optimizer_ids)] += event.self_cpu_time_total / 1e6
    wall = metrics["seconds"]
    seconds["Python and framework"] = max(0.0, wall - sum(seconds.values()))
    print(f"{args.model_label}, {name}{' before the fused step' if args.before else ''}, "
          f"batch {args.batch_size} x {args.max_seq_length}, {metrics['real_tokens']} real "
          f"tokens, {recipe.threads} threads, torch {torch.__version__}: profiled step {wall:.2f} s "
          f"(unprofiled {plain:.2f} s, {metrics['real_tokens'] / plain:.0f} tok/s)")
    print("| part of the step | seconds | share |\n|---|---|---|")
    for key in PROFILE_ORDER:
        print(f"| {key} | {seconds[key]:.2f} | {100 * seconds[key] / wall:.0f}% |")
    if args.profile_top:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_top))


# ------------------------------------------------------------------------------------------- the table


# Random models of other shapes (SmolLM2's vocabulary, rope and tokenizer), so that a speed-up is not a 135M artefact.
SHAPES = {
    "135m": None,  # the shipped SmolLM2-135M-Instruct
    "360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 15,
             "num_key_value_heads": 5, "head_dim": 64},  # SmolLM2-360M
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256},  # Llama-3.2-1B
}


def model_folder(shape: str, tmp: str) -> str:
    """The shipped model for 135m, else a randomly initialised model of ``shape`` saved under ``tmp``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import resolve_model

    path = resolve_model(DEFAULT_MODEL)
    if SHAPES[shape] is None:
        return path
    config = AutoConfig.from_pretrained(path)
    config.update(SHAPES[shape])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # bf16 on disk: half the bytes to write
    folder = Path(tmp) / f"random-{shape}"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return str(folder)


def matmul_peak(threads: int, dtype: str, shapes: list[tuple[int, int, int]]) -> float:
    """Best FLOP/s of ``torch.matmul`` in ``dtype`` over the model's own linear-layer shapes (tokens x in x out)."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k).to(getattr(torch, dtype)), torch.randn(k, n).to(getattr(torch, dtype))
        for _ in range(2):
            a @ b
        fastest = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            fastest = min(fastest, time.perf_counter() - start)
        best = max(best, 2 * m * k * n / fastest)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per config (plus one warm-up)")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per step")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = physical cores)")
    parser.add_argument("--shape", choices=list(SHAPES), default="135m",
                        help="the shipped SmolLM2-135M, or a random model of SmolLM2-360M's or Llama-3.2-1B's shape")
    parser.add_argument("--configs", nargs="*", default=list(DEFAULT_CONFIGS), choices=CONFIGS)
    parser.add_argument("--profile", action="store_true",
                        help="profile one step of ours (after --steps warm-up steps) instead of the comparison")
    parser.add_argument("--ablate", action="store_true",
                        help="time each optimisation of our step on its own (bf16, interleaved in one process)")
    parser.add_argument("--variants", type=int, nargs="*", default=[],
                        help="with --ablate: only these variants, by their 0-based place in the table (default all)")
    parser.add_argument("--openmp", action="store_true",
                        help="ours-bf16 under each thread count and OpenMP setting, a process each, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="with --openmp: processes per setting")
    parser.add_argument("--loss-check", action="store_true",
                        help="train --steps steps on data_finetune/ in fp32 and bf16 side by side; "
                             "compare losses and test perplexity")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="with --profile")
    parser.add_argument("--before", action="store_true", help="with --profile: the step without rhizome's speed-ups")
    parser.add_argument("--profile-top", type=int, default=0, help="with --profile: also print the top N ops")
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model_label = "SmolLM2-135M-Instruct" if args.shape == "135m" else f"random {args.shape}-shaped model"
    if args.only:
        print("RESULT " + json.dumps(run_one(args.only, args)), flush=True)
        return

    import torch

    from rhizome.device import physical_cores
    from rhizome.train.model import parameter_count

    threads = args.threads or physical_cores()
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp, args.threads = tmp, threads
        args.model = model_folder(args.shape, tmp)
        data = Path(tmp) / "dataset_train.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(args.pairs)))
        args.data = str(data)
        if args.profile:
            profile(args)
            return
        if args.ablate:
            ablate(args)
            return
        if args.loss_check:
            loss_check(args)
            return
        if args.openmp:
            openmp(args)
            return
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.model)
        tokens = args.batch_size * args.max_seq_length
        shapes = [(tokens, config.hidden_size, config.intermediate_size), (tokens, config.intermediate_size,
                                                                              config.hidden_size)]
        peaks = {dtype: matmul_peak(threads, dtype, shapes) for dtype in ("float32", "bfloat16")}
        params = parameter_count(args.model)
        for name in args.configs:
            command = [sys.executable, __file__, "--only", name, "--data", str(data), "--tmp", tmp,
                       "--model", args.model, "--shape", args.shape, "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--max-seq-length", str(args.max_seq_length),
                       "--threads", str(threads)]
            result = _subprocess_result(command)
            if result is None:
                print(f"{name}: failed", file=sys.stderr)
                continue
            results[name] = result
            print(f"  {name:20s} {results[name]['tokens_per_s']:7.0f} tok/s", file=sys.stderr, flush=True)

    print(f"{args.model_label} ({params / 1e6:.1f}M parameters), {args.pairs} pairs, batch {args.batch_size} rows, "
          f"max length {args.max_seq_length}, {args.steps} timed steps, {threads} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, 1-minute load average {load_before:.1f} at the "
          f"start, {os.getloadavg()[0]:.1f} at the end")
    print(f"matmul peak on the model's shapes ({tokens} x {config.hidden_size} x {config.intermediate_size} and back): "
          f"fp32 {peaks['float32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
    print("| config | real tok/s (min-max) | s/step | real tok per CPU-s | GFLOP/s | % of its dtype's matmul peak "
          "| peak RSS |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        flops = 4 * params * r["tokens_per_s"]
        peak = peaks["bfloat16" if "bf16" in name else "float32"]
        print(f"| {name} | {r['tokens_per_s']:.0f} ({r['spread'][0]:.0f}-{r['spread'][1]:.0f}) | "
              f"{r['seconds_per_step']:.2f} | {r['tokens_per_cpu_s']:.0f} | {flops / 1e9:.1f} | "
              f"{100 * flops / peak:.0f}% | {r['peak_rss_gb']:.2f} GB |")
    goals_by_precision = {"fp32": {"trainer-grouped": 1.5}, "bf16": {"trainer-grouped-bf16": 2.5}}
    for ours in ("ours", "ours-compile", "ours-bf16", "ours-bf16-compile"):
        goals = goals_by_precision["bf16" if "bf16" in ours else "fp32"]
        for other in ("trainer", "trainer-grouped", "trl", "trainer-grouped-bf16", "trl-bf16", "ours", "ours-qlora",
                      "ours-fullhead", "ours-bf16-qlora"):
            same_precision = ("bf16" in other) == ("bf16" in ours)
            if ours in results and other in results and other != ours and same_precision:
                ratio = results[ours]["tokens_per_s"] / results[other]["tokens_per_s"]
                cpu_ratio = results[ours]["tokens_per_cpu_s"] / results[other]["tokens_per_cpu_s"]
                goal = goals.get(other)
                print(f"{ours} / {other}: {ratio:.2f}x wall, {cpu_ratio:.2f}x per CPU-second"
                      + (f" (goal >= {goal}x)" if goal else ""))
    for ours, anchor in (("ours-qlora", "trainer-grouped-qlora"), ("ours-bf16-qlora", "trainer-grouped-bf16-qlora")):
        if ours in results and anchor in results:
            print(f"{ours} / {anchor}: {results[ours]['tokens_per_s'] / results[anchor]['tokens_per_s']:.2f}x wall, "
                  f"{results[ours]['tokens_per_cpu_s'] / results[anchor]['tokens_per_cpu_s']:.2f}x per CPU-second")
    if "ours-bf16" in results and "ours" in results:
        print(f"ours-bf16 / ours: {results['ours-bf16']['tokens_per_s'] / results['ours']['tokens_per_s']:.2f}x")
    for plain in ("ours", "ours-bf16"):
        compiled = results.get(plain + "-compile")
        if plain in results and compiled and compiled.get("compile_s"):
            print(compile_payback(plain, results[plain], compiled))


def compile_payback(plain: str, eager: dict, compiled: dict) -> str:
    """How many rows of training repay the compilation, in the units a user runs: the demo (12 steps of 4 x 2 rows)
    and the default step (batch 2 x accumulation 8 = 16 rows)."""
    saved_per_token = 1 / eager["tokens_per_s"] - 1 / compiled["tokens_per_s"]
    line = (f"{plain}-compile / {plain}: {compiled['tokens_per_s'] / eager['tokens_per_s']:.2f}x; compiled in "
            f"{compiled['compile_s']:.0f} s (once per run, in setup)")
    if saved_per_token <= 0:
        return line + ", never repaid: compiled steps are not faster"
    rows = compiled["compile_s"] / saved_per_token / compiled["tokens_per_row"]
    eager_run = 1000 * 16 * eager["tokens_per_row"] / eager["tokens_per_s"]  # seconds of a 1,000-step run
    compiled_run = 1000 * 16 * compiled["tokens_per_row"] / compiled["tokens_per_s"] + compiled["compile_s"]
    return (line + f", repaid after {rows:,.0f} rows = {rows / 16:,.0f} default steps of 16 rows (the demo trains 96 "
            f"rows); a 1,000-step run ends {100 * (1 - compiled_run / eager_run):.0f}% sooner, compilation included "
            f"({100 * compiled['compile_s'] / compiled_run:.1f}% of it)")


if __name__ == "__main__":
    main()
