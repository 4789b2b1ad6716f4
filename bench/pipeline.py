"""How long will my data take: stages 1-3 on the generated heavy-user corpus at two scales.

    python bench/pipeline.py [--scales 0.1 1] [--work DIR] [--seed 0]

For each scale: bench/heavy_corpus.py writes the corpus (not timed), then each stage runs in a process
of its own, with empty caches, as a user runs it:
    1 pdf_to_json      the corpus's PDFs -> pdf_texts.json
    2 batch_embedder   both exports + pdf_texts.json -> the memory
    3 data_formatter   the same, reusing the memory's vectors, --enable-semantic-labeling --extract-keyphrases
Each stage reports its wall time and its peak RSS (the process's own ``ru_maxrss``); the formatter also
its steps (from the same StepLog records the console table shows). Then per stage and step the growth
exponent between the two scales, log(t2 / t1) / log(scale2 / scale1): 1 is linear.

Checks on every run: every generated conversation is imported (against the generator's truth.json)
and no hidden / system / tool / reasoning / off-branch text (the generator's marker) is in any output.
The tokenisation of stage 4 is not run here: the training package is being rewritten.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")

STAGES = ("pdf_to_json", "batch_embedder", "data_formatter")


def run_stage(stage: str, folder: Path) -> dict:
    """Run one stage in this process (the child); returns its times and peak RSS."""
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
    else:
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
                      embeddings=metadata["embeddings"])
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _inputs(folder: Path) -> list[str]:
    return [str(folder / "conversations.json"), str(folder / "conversations2.json"), str(folder / "pdf_texts.json")]


def leaked(folder: Path, marker: str) -> list[str]:
    """Output files that contain the generator's marker."""
    outputs = [folder / "pdf_texts.json", *(folder / "memory").iterdir(), *(folder / "data_finetune").iterdir()]
    return [str(p) for p in outputs if p.is_file() and marker.encode() in p.read_bytes()]


def bench_scale(scale: float, work: Path, seed: int) -> dict:
    from bench.heavy_corpus import TRUTH_FILE, generate

    folder = work / f"scale-{scale:g}"
    truth_path = folder / TRUTH_FILE
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else generate(folder, scale, seed)
    for stale in ("pdf_texts.json", "memory", "data_finetune", "cache", "semantic.pkl"):
        subprocess.run(["rm", "-rf", str(folder / stale)], check=True)
    results = {}
    for stage in STAGES:
        completed = subprocess.run([sys.executable, __file__, "--child", stage, str(folder)], capture_output=True,
                                   text=True)
        if completed.returncode != 0:
            raise SystemExit(f"error: {stage} at scale {scale} failed:\n{completed.stderr[-3000:]}")
        results[stage] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(f"  scale {scale:g}: {stage} {results[stage]['seconds']:.1f} s, "
              f"{results[stage]['peak_rss_mb']:.0f} MB", flush=True)
    for stage in ("batch_embedder", "data_formatter"):
        if results[stage]["conversations"] != truth["conversations"]:
            raise SystemExit(f"error: {stage} imported {results[stage]['conversations']} conversations at scale "
                             f"{scale}, the generator wrote {truth['conversations']}")
    found = leaked(folder, truth["marker"])
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
    print(f"| stages 1-3 | {total[0]:.1f} | {total[1]:.1f} | {growth(total[0], total[1], ratio):.2f} | | |")
    for scale, run in sorted(runs.items()):
        embed = run["stages"]["data_formatter"]["steps"]["embed"]
        from_memory = run["stages"]["data_formatter"]["embeddings"]["texts_from_memory"]
        print(f"scale {scale:g}: the formatter took {from_memory}"
              f" texts' vectors from the memory and embedded {embed.get('newly_embedded', 0)} new ones")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(run_stage(sys.argv[2], Path(sys.argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs=2, default=[0.1, 1.0])
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "pipeline"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(args.work)
    runs = {}
    for scale in args.scales:
        runs[scale] = bench_scale(scale, work, args.seed)
    (work / "results.json").write_text(json.dumps({str(k): v for k, v in runs.items()}, indent=1))
    print(f"{os.cpu_count()} CPUs; every conversation imported, no hidden text in any output\n")
    print_table(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
