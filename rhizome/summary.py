"""What a pipeline run made and where, read back from the files each stage wrote.

    python -m rhizome.summary                     # after make demo: files, counts, base vs adapter perplexity, QA
    python -m rhizome.summary --run-dir my-run --seconds 612
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rhizome.memory.store import CONFIG_FILE as MEMORY_CONFIG_FILE
from rhizome.memory.store import VECTORS_FILE
from rhizome.runs import Run
from rhizome.train.config import DEFAULT_MODEL


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    for unit in ("B", "KB", "MB"):
        if total < 1024:
            return f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GB"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _rows(root: Path, run_dir: Path) -> list[tuple[str, Path, str]]:
    rows = []
    pdf = _json(root / "pdf_texts.json")
    if pdf is not None:
        rows.append(("PDF chunks", root / "pdf_texts.json",
                     f"{len(pdf.get('chunks', []))} chunks from {len(pdf.get('files', []))} PDFs"))
    memory = _json(root / MEMORY_CONFIG_FILE)
    if memory is not None:
        summary = memory.get("summary", {})
        rows.append(("memory", root / VECTORS_FILE,
                     f"{summary.get('items', '?')} items x {summary.get('dim', '?')} dims, FAISS index beside it"))
    meta = _json(root / "data_finetune" / "dataset_metadata.json")
    if meta is not None:
        splits = meta.get("splits", {})
        rows.append(("training set", root / "data_finetune",
                     f"{splits.get('train', 0)} train / {splits.get('validation', 0)} validation / "
                     f"{splits.get('test', 0)} test pairs, {meta.get('unique_themes', '?')} themes"))
    final = Run.load(run_dir).final
    if final is not None:
        rows.append(("LoRA adapter", final, f"{_size(final)}; plots in {run_dir / 'training_plots.png'}"))
    report = run_dir / "eval_report.md"
    if report.exists():
        rows.append(("evaluation", report, "base vs adapter, overall and per theme; plots beside it"))
    return rows


def perplexity_line(report: dict) -> str | None:
    models = report.get("models", {})
    base = models.get("base", {}).get("overall")
    tuned = [(name, m["overall"]) for name, m in models.items() if name != "base"]
    if not base or not tuned:
        return None
    name, overall = tuned[-1]
    change = overall["perplexity"] / base["perplexity"] - 1
    return (f"Test perplexity on assistant tokens ({overall['pairs']} held-out pairs, {overall['tokens']} tokens): "
            f"base {base['perplexity']:.2f} -> {name} {overall['perplexity']:.2f} ({change:+.1%})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".", help="project folder the stages wrote into")
    parser.add_argument("--run-dir", default=f"{DEFAULT_MODEL.split('/')[-1]}-finetuned", help="training output")
    parser.add_argument("--seconds", type=float, help="wall time of the run, to print")
    args = parser.parse_args(argv)
    root = Path(args.root)
    run_dir = root / args.run_dir
    rows = _rows(root, run_dir)
    if not rows:
        print("nothing made yet: run make demo", file=sys.stderr)
        return 1
    width = max(len(what) for what, _, _ in rows)
    print("\nWhat was made:")
    for what, path, detail in rows:
        print(f"  {what:<{width}}  {path}  ({detail})")
    report = Run.load(run_dir).eval_report()
    line = perplexity_line(report) if report else None
    if line:
        print(f"\n{line}")
    if report and "qa" in report:
        # Imported here: rhizome.evaluate loads torch, which a summary without a QA report does not need.
        from rhizome.evaluate.qa_report import headline

        qa_line = headline(report["qa"])
        if qa_line:
            print(qa_line)
    if args.seconds is not None:
        print(f"\nFinished in {args.seconds / 60:.1f} min.")
    print("\nTalk to it: .venv/bin/python gradio_chat_tts.py   (then open http://127.0.0.1:7860)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
