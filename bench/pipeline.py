"""How long will my data take: stages 1-3 and stage 4's tokenisation on the generated heavy-user corpus at two scales.

    python bench/pipeline.py [--scales 0.1 1] [--work DIR] [--seed 0]
    python bench/pipeline.py --compare-workers 1 2 [--scale 1] [--rounds 3]   (after a run at that scale)

For each scale: bench/heavy_corpus.py writes the corpus (not timed), then each stage runs in a process
of its own, with empty caches, as a user runs it:
    1 pdf_to_json      the corpus's PDFs -> pdf_texts.json
    2 batch_embedder   both exports + pdf_texts.json -> the memory
    3 data_formatter   the same, reusing the memory's vectors, --enable-semantic-labeling --extract-keyphrases
    4 tokenise         train_script.py's tokenisation cache of the train and validation files (the default model's
                       chat template, --max-seq-length and --workers), not training
Each stage reports its wall time and its peak RSS (``ru_maxrss`` of the process, or of its largest worker process
when that is larger); the formatter also
its steps (from the same StepLog records the console table shows). Then per stage and step the growth
exponent between the two scales, log(t2 / t1) / log(scale2 / scale1): 1 is linear.

Checks on every run: every generated conversation is imported (against the generator's truth.json)
and no hidden / system / tool / reasoning text (the generator's marker) is in any output, nor text of an
abandoned branch (its branch marker) in any output but the preference pairs.
``--compare-workers A B`` times stage 4 alone on a scale's formatted data, alternating the two --workers
settings, and prints the median and spread of each.

Then the time of the issue's reference export (2,000 conversations) through stages 2-3 and of each stage at 10x,
on the straight line through the two measurements (a fixed cost plus a cost per conversation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

STAGES = ("pdf_to_json", "batch_embedder", "data_formatter", "tokenise")
REFERENCE_CONVERSATIONS = 2000  # the baseline export: 14.7 min through stages 2-3, goal 5


def run_stage(stage: str, folder: Path, workers: int = 0) -> dict:
    """Run one stage in this process (the child); returns its times and peak RSS. ``workers``: stage 4's --workers
    (0 = its default)."""
    start = time.perf_counter()
    result: dict = {}
    if stage == "pdf_to_json":
        from rhizome.pdf import PdfConfig, run

        report = run(PdfConfig(pdf_dir=str(folder / "PDFs"), output=str(folder / "pdf_texts.json")))
        result["items"] = len(json.loads((folder / "pdf_texts.json").read_text())["chunks"])
        del report
    elif stage == "batch_embedder":
        from rhizome.memory.build import EmbedConfig, build_memory

        summary = build_memory(EmbedConfig(inputs=_inputs(folder), output_dir=str(folder / "memory"),
                                           cache_dir=str(folder / "cache")))
        result.update(items=summary["items"], conversations=summary["conversations"],
                      newly_embedded=summary["newly_embedded"])
    elif stage == "data_formatter":
        from rhizome.format.pipeline import FormatConfig, run
        from rhizome.format.steps import StepLog

        steps = StepLog()
        metadata = run(FormatConfig(
            inputs=_inputs(folder), output_dir=str(folder / "data_finetune"), cache_dir=str(folder / "cache"),
            input_memory_texts=str(folder / "memory" / "memory_texts.npy"), enable_semantic_labeling=True,
            extract_keyphrases=True, semantic_mode="normal", semantic_memory_path=str(folder / "semantic.pkl")), steps)
        result.update(items=metadata["total_pairs"], conversations=metadata["import"]["conversations"],
                      steps={r.name: {"seconds": r.seconds, "in": r.count_in, "out": r.count_out, **r.varying}
                             for r in steps.records},
                      embeddings=metadata["embeddings"], pdf_pairs=metadata["pairs"]["pdf_pairs"])
    else:
        from rhizome.train.cache import load_or_tokenize
        from rhizome.train.config import TrainConfig
        from rhizome.train.data import default_workers
        from rhizome.train.model import load_tokenizer, resolve_model

        config = TrainConfig(workers=workers)
        tokenizer = load_tokenizer(config.model, resolve_model(config.model))
        samples = tokens = 0
        for split in ("train", "validation"):
            data, source = load_or_tokenize(folder / "data_finetune" / f"dataset_{split}.jsonl", tokenizer,
                                            config.max_seq_length, config.loss_on, cache_dir=folder / "tokenized_cache",
                                            workers=config.workers)
            assert source == "tokenized and cached", source
            samples, tokens = samples + len(data), tokens + len(data.tokens)
        result.update(items=samples, tokens=tokens, workers=config.workers or default_workers())
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = max(resource.getrusage(who).ru_maxrss
                                for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    return result


def _inputs(folder: Path) -> list[str]:
    return [str(folder / "conversations.json"), str(folder / "conversations2.json"), str(folder / "pdf_texts.json")]


def child(stage: str, folder: Path, workers: int = 0) -> dict:
    """Run one stage in a fresh process, as a user runs it; its result."""
    completed = subprocess.run([sys.executable, __file__, "--child", stage, str(folder), str(workers)],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"error: {stage} in {folder} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare_workers(folder: Path, settings: list[int], rounds: int) -> None:
    """Stage 4 alone on ``folder``'s formatted data, the --workers settings alternating, a fresh cache each time."""
    if not (folder / "data_finetune" / "dataset_train.jsonl").exists():
        raise SystemExit(f"error: no formatted data in {folder}: run bench/pipeline.py at that scale first")
    times: dict[int, list[float]] = {n: [] for n in settings}
    peaks: dict[int, list[float]] = {n: [] for n in settings}
    for _ in range(rounds):
        for workers in settings:
            subprocess.run(["rm", "-rf", str(folder / "tokenized_cache")], check=True)
            result = child("tokenise", folder, workers)
            times[workers].append(result["seconds"])
            peaks[workers].append(result["peak_rss_mb"])
    print(f"stage 4 on {folder.name}: {result['items']} samples, {result['tokens']:,} tokens, {rounds} rounds")
    for workers in settings:
        print(f"  --workers {workers}: median {statistics.median(times[workers]):.1f} s "
              f"({min(times[workers]):.1f}-{max(times[workers]):.1f}), peak RSS {max(peaks[workers]):.0f} MB")
    first, second = (statistics.median(times[n]) for n in settings)
    print(f"  --workers {settings[1]} is {first / second:.2f}x --workers {settings[0]}")


def leaked(folder: Path, truth: dict) -> list[str]:
    """Output files that contain the generator's hidden-text marker, or its abandoned-branch marker outside the
    preference pairs (whose rejected alternatives come from abandoned branches on purpose)."""
    outputs = [folder / "pdf_texts.json", *(folder / "memory").iterdir(), *(folder / "data_finetune").iterdir()]
    found = []
    for path in (p for p in outputs if p.is_file()):
        content = path.read_bytes()
        if truth["marker"].encode() in content or (
                truth["branch_marker"].encode() in content and not path.name.startswith("dataset_preferences_")):
            found.append(str(path))
    return found


def bench_scale(scale: float, work: Path, seed: int) -> dict:
    from bench.heavy_corpus import TRUTH_FILE, TRUTH_VERSION, generate

    folder = work / f"scale-{scale:g}"
    truth_path = folder / TRUTH_FILE
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else None
    if not truth or truth.get("version") != TRUTH_VERSION or truth.get("seed") != seed:
        truth = generate(folder, scale, seed)
    for stale in ("pdf_texts.json", "memory", "data_finetune", "cache", "semantic.pkl", "tokenized_cache"):
        subprocess.run(["rm", "-rf", str(folder / stale)], check=True)
    results = {}
    for stage in STAGES:
        results[stage] = child(stage, folder)
        print(f"  scale {scale:g}: {stage} {results[stage]['seconds']:.1f} s, "
              f"{results[stage]['peak_rss_mb']:.0f} MB", flush=True)
    for stage in ("batch_embedder", "data_formatter"):
        if results[stage]["conversations"] != truth["conversations"]:
            raise SystemExit(f"error: {stage} imported {results[stage]['conversations']} conversations at scale "
                             f"{scale}, the generator wrote {truth['conversations']}")
    found = leaked(folder, truth)
    if found:
        raise SystemExit(f"error: hidden text reached {', '.join(found)}")
    return {"truth": {k: v for k, v in truth.items() if k != "ids"}, "stages": results}


def growth(small: float, large: float, scale_ratio: float) -> float:
    return math.log(large / small) / math.log(scale_ratio) if small > 0 and large > 0 else float("nan")


def print_table(runs: dict[float, dict]) -> None:
    (s1, r1), (s2, r2) = sorted(runs.items())
    ratio = s2 / s1
    for scale, run in sorted(runs.items()):
        t = run["truth"]
        print(f"scale {scale:g}: {t['conversations']} conversations, {t['visible_messages']} messages, "
              f"{t['bytes'] / 1e6:.1f} MB of JSON, {t['pdfs']} PDFs")
    print(f"\n| stage / step | {s1:g}x s | {s2:g}x s | growth exponent | peak RSS {s1:g}x | peak RSS {s2:g}x |")
    print("|---|---:|---:|---:|---:|---:|")
    for stage in STAGES:
        a, b = r1["stages"][stage], r2["stages"][stage]
        print(f"| {stage} | {a['seconds']:.1f} | {b['seconds']:.1f} | {growth(a['seconds'], b['seconds'], ratio):.2f}"
              f" | {a['peak_rss_mb']:.0f} MB | {b['peak_rss_mb']:.0f} MB |")
        for step, record in a.get("steps", {}).items():
            other = b["steps"][step]
            print(f"| &nbsp; {step} | {record['seconds']:.1f} | {other['seconds']:.1f} | "
                  f"{growth(record['seconds'], other['seconds'], ratio):.2f} | | |")
    total = [sum(r["stages"][s]["seconds"] for s in STAGES) for r in (r1, r2)]
    print(f"| stages 1-4 | {total[0]:.1f} | {total[1]:.1f} | {growth(total[0], total[1], ratio):.2f} | | |")
    for scale, run in sorted(runs.items()):
        formatter = run["stages"]["data_formatter"]
        print(f"scale {scale:g}: the formatter took {formatter['embeddings']['texts_from_memory']} texts' vectors "
              f"from the memory and embedded {formatter['steps']['embed'].get('newly_embedded', 0)} new ones "
              f"({formatter['pdf_pairs']} PDF pairs, whose questions it writes itself); tokenised "
              f"{run['stages']['tokenise']['items']} samples, {run['stages']['tokenise']['tokens']:,} tokens "
              f"with {run['stages']['tokenise']['workers']} worker(s)")
    stages_2_3 = [sum(r["stages"][s]["seconds"] for s in ("batch_embedder", "data_formatter")) for r in (r1, r2)]
    sizes = [r["truth"]["conversations"] for r in (r1, r2)]
    estimate = on_the_line(sizes, stages_2_3, REFERENCE_CONVERSATIONS)
    print(f"stages 2-3 for {REFERENCE_CONVERSATIONS:,} conversations: {estimate / 60:.1f} min (goal 5 min; on the "
          f"line through {sizes[0]:,} conversations in {stages_2_3[0] / 60:.1f} min and {sizes[1]:,} in "
          f"{stages_2_3[1] / 60:.1f} min)")
    at_10x = {stage: on_the_line((s1, s2), [r["stages"][stage]["seconds"] for r in (r1, r2)], 10.0) for stage in STAGES}
    print("estimated at 10x on the same lines: " + ", ".join(f"{stage} {t / 60:.0f} min" for stage, t in at_10x.items())
          + f"; stages 1-4 {sum(at_10x.values()) / 3600:.1f} h")


def on_the_line(sizes, seconds, size: float) -> float:
    """The time at ``size`` on the straight line through two measurements: a fixed cost (loading models) plus a
    cost per unit, which the growth exponent mixes up at small sizes."""
    (x1, x2), (t1, t2) = sizes, seconds
    per_unit = (t2 - t1) / (x2 - x1)
    return t1 + per_unit * (size - x1)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(run_stage(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs=2, default=[0.1, 1.0])
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "pipeline"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-workers", type=int, nargs=2, metavar="N",
                        help="time only stage 4 with these two --workers settings, alternating")
    parser.add_argument("--scale", type=float, default=1.0, help="with --compare-workers: whose formatted data")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare-workers: runs of each setting")
    args = parser.parse_args()
    work = Path(args.work)
    if args.compare_workers:
        compare_workers(work / f"scale-{args.scale:g}", args.compare_workers, args.rounds)
        return 0
    from rhizome.train.config import DEFAULT_MODEL
    from rhizome.train.model import resolve_model

    resolve_model(DEFAULT_MODEL)  # converts the shipped model once, before any stage is timed
    runs = {}
    for scale in args.scales:
        runs[scale] = bench_scale(scale, work, args.seed)
    (work / "results.json").write_text(json.dumps({str(k): v for k, v in runs.items()}, indent=1))
    print(f"{os.cpu_count()} CPUs; every conversation imported, no hidden text in any output\n")
    print_table(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
