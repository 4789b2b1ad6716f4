"""EvalConfig: every setting of the evaluation stage, its flag, default and help, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from rhizome.config import option

DEFAULT_RARE_MAX_PAIRS = 2
DEFAULT_QA_QUESTIONS = 40


@dataclass
class EvalConfig:
    adapters: list[str] = option(
        default_factory=list, positional=True, metavar="ADAPTER",
        help="adapters to compare with the base model: a run folder of train_script.py (its final/ is used) or "
             "a final/, best/ or checkpoint-N/ folder; default: the run of the newest final/ adapter here trained "
             "on --base-model, or on the shipped model when none is given (see README, Which adapter is used)")
    test_file: str = option("data_finetune/dataset_test.jsonl", "test pairs (chat JSONL from data_formatter.py)")
    train_file: str = option("data_finetune/dataset_train.jsonl",
                             "training pairs, read only to count how many pairs carry each theme (rare themes)")
    base_model: str = option("", "base model (Hugging Face id, local folder or .gguf); default: the one the "
                                 "adapters were trained on (run.json or training_config.json, else adapter_config.json)")
    output_dir: str = option("", "where eval_report.{json,md} and the plots go; default: the first adapter's folder",
                             flag="-o")
    preference_file: str = option("", "held-out preference pairs scored for preference accuracy; default: "
                                      "dataset_preferences_test.jsonl beside --test-file, when it exists")
    max_samples: int = option(0, "evaluate the first N test pairs only (0 = all)")
    rare_max_pairs: int = option(DEFAULT_RARE_MAX_PAIRS,
                                 "a theme is rare when at most this many training pairs carry it "
                                 "(themes absent from training are always rare)")
    rare_rule: str = option("all", "a test pair counts as rare when all of its themes are rare, or when any is",
                            choices=["all", "any"])
    max_seq_length: int = option(512, "tokens per pair, as in training; longer pairs are truncated")
    loss_on: str = option("last", "assistant turns scored: the pair's reply only, or every assistant turn",
                          choices=["last", "all"])
    batch_size: int = option(8, "pairs per forward pass")
    plot_themes: int = option(12, "themes per panel in per_theme_perplexity.png")
    plots: bool = option(True, "write per_theme_perplexity.png and rare_vs_common.png")
    force_cpu: bool = option(False, "evaluate on the CPU even when a GPU is available")
    threads: int = option(0, "CPU threads (0 = physical cores)")
    qa: bool = option(False, "also ask the chat questions with known answers from the test split's PDF chunks and "
                             "replies, with and without memories (see rhizome/evaluate/qa_run.py)")
    qa_validation_file: str = option("data_finetune/dataset_validation.jsonl",
                                     "QA questions also come from this held-out split (never trained on); "
                                     "empty = from the test split only")
    pdf_texts: str = option("pdf_texts.json", "PDF chunks the QA questions are made from (from pdf_to_json.py)")
    memory_dir: str = option(".", "the chat's memory for the QA questions (from batch_embedder.py)")
    qa_max_questions: int = option(DEFAULT_QA_QUESTIONS, "QA questions asked, half from PDFs, half from "
                                                          "conversations where there are enough (0 = all)")
    qa_max_new_tokens: int = option(32, "longest QA answer, in tokens")
    qa_extra_models: list[str] = option(default_factory=list, help="more base models to ask, with and without "
                                                                   "memories (e.g. a larger one you have locally)")
    verbose: bool = option(False, "debug logging")
