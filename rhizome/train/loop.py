"""The training loop, in one place: ``FineTune.setup()`` builds everything from a TrainConfig,
``train()`` runs the steps, ``evaluate()`` measures the validation loss, ``save_checkpoint()`` writes
what a resume needs, ``finish()`` writes ``final/``.

One optimizer step trains on ``batch_size x grad_accum x processes`` rows of the epoch plan (see
``packing.py``). Its loss is the sum of the cross-entropy over every assistant token of those rows
divided by their number, so micro-batching, packing and the number of processes do not change it.
The LM head runs only at positions that carry loss (about 40% of tokens, vocabulary 49k).

Exact resume: the epoch order comes from (seed, epoch), dropout is reseeded from (seed, step, rank)
at every step, and a checkpoint holds the adapter, AdamW and schedule state, RNG states, theme counts
and metrics; so a run killed at any point and restarted with the same command follows the same
loss curve and ends with the same adapter as one that never stopped.

While it trains, the run reports itself through ``rhizome.train.live`` (run.json, heartbeat.json, metrics.jsonl,
the trackers of --report-to) and stops gracefully on SIGTERM, SIGINT, a STOP file or an observer's request:
it finishes the step, checkpoints, and ``result()["stop_reason"]`` says why; rerunning resumes it.
``FineTune(config, observers=[...])`` takes the observers (see ``live.py``); the plan is cut at
``max_train_tokens`` (see ``config.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rhizome import atomic
from rhizome.config import save_config, to_dict
from rhizome.device import cpu_has_bf16_matmul, detect_device
from rhizome.errors import UserError
from rhizome.log import get_logger, progress
from rhizome.runs import CONFIG_FILE, STOP_FILE
from rhizome.train import checkpoint as ckpt
from rhizome.train import sharding
from rhizome.train.cache import load_or_tokenize
from rhizome.train.compile import compile_for_run
from rhizome.train.config import RESUMABLE_CHANGES, TrainConfig
from rhizome.train.data import IGNORE_INDEX, TokenizedData
from rhizome.train.fused import fuse_lora, linear_cross_entropy
from rhizome.train.live import Observer, RunRecorder, StopRequests, error_line
from rhizome.train.report import check_trackers, open_trackers
from rhizome.train.model import (
    LoraSetup,
    apply_lora,
    choose_quantization,
    count_parameters,
    decoder_and_head,
    load_base_model,
    load_tokenizer,
    resolve_model,
)
from rhizome.train.packing import collate, epoch_rows, padded_efficiency
from rhizome.train.sampler import ThemeWeightedSampler
from rhizome.train.tracker import ThemeTracker

log = get_logger(__name__)


class ResumeError(UserError):
    """The run folder holds a run that this command cannot continue."""


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()


@dataclass(frozen=True)
class Speedups:
    """The step's optimisations, each switchable so that bench/train.py can measure it on its own."""

    bf16_weights: bool = True  # with bf16 precision and plain LoRA: frozen base stored in bf16, no autocast
    fused_lora: bool = True  # LoRA as one autograd function (rhizome.train.fused), not PEFT's op-by-op forward
    fused_loss: bool = True  # chunked LM head + cross-entropy, no [positions x vocabulary] fp32 logits
    compile_layers: bool = True  # decoder layers through torch.compile where --compile says so (rhizome.train.compile)


class CausalLMLoss(nn.Module):
    """Summed next-token cross-entropy over the labelled positions, the LM head computed only there."""

    def __init__(self, model, fused: bool = True):
        super().__init__()
        self.model = model
        self.fused = fused

    def forward(self, input_ids, position_ids, labels):
        decoder, head = decoder_and_head(self.model)
        # No attention mask and no cache: transformers then masks attention block-diagonally per packed sample.
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        keep = labels != IGNORE_INDEX
        if head.bias is not None or not self.fused:
            return F.cross_entropy(head(hidden[keep]).float(), labels[keep], reduction="sum")
        return linear_cross_entropy(hidden[keep], head.weight, labels[keep])


def _data_summary(data: TokenizedData) -> dict:
    lengths = data.lengths
    return {**data.stats, "tokens": int(lengths.sum()), "mean_length": float(lengths.mean()),
            "max_length": int(lengths.max()), "label_tokens": int(data.targets.sum()),
            "themes": len({t for themes in data.themes for t in themes})}


def plan_steps(config: TrainConfig, lay_out_epoch, units_per_step: int) -> list[tuple[int, int, int]]:
    """(epoch, first unit, end unit) of every optimizer step, for SFT (a unit is a packed row) and preference
    training (a micro-batch of pairs) alike: ``units_per_step`` units a step, ``num_train_epochs`` (a fraction
    of the last), ``max_steps`` or ``max_train_tokens``, whichever ends first. ``lay_out_epoch(epoch)`` is called
    once per epoch reached and returns each of its units' real tokens."""
    c = config
    full_epochs = math.floor(c.num_train_epochs)
    fraction = c.num_train_epochs - full_epochs
    schedule: list[tuple[int, int, int]] = []
    epoch = seen_tokens = 0
    while not (c.max_steps and len(schedule) >= c.max_steps
               or not c.max_steps and epoch >= full_epochs + (fraction > 0)
               or c.max_train_tokens and seen_tokens >= c.max_train_tokens):
        tokens = np.asarray(lay_out_epoch(epoch))
        steps = math.ceil(len(tokens) / units_per_step)
        if not c.max_steps and epoch == full_epochs:
            steps = max(1, round(steps * fraction))
        for s in range(steps):
            first, end = s * units_per_step, min(len(tokens), (s + 1) * units_per_step)
            schedule.append((epoch, first, end))
            if c.max_train_tokens:
                seen_tokens += int(tokens[first:end].sum())
                if seen_tokens >= c.max_train_tokens:
                    break
        epoch += 1
    return schedule[: c.max_steps] if c.max_steps else schedule


class FineTune:
    def __init__(self, config: TrainConfig, dist: Dist | None = None, speedups: Speedups = Speedups(),
                 observers: tuple[Observer, ...] | list[Observer] = ()):
        self.config = config
        self.dist = dist or Dist()
        self.speedups = speedups
        self.observers = tuple(observers)
        self.run_dir = config.run_dir
        self.step = 0
        self.elapsed_before = 0.0  # training seconds of the sessions before a resume
        self.stop_reason: str | None = None
        self.recorder: RunRecorder | None = None
        self.history: dict = {"train": [], "eval": []}
        self.best: dict = {"step": None, "loss": None}
        self.summary_lines: list[str] = []

    # ------------------------------------------------------------------------------------------- setup

    def setup(self) -> None:
        c, dist = self.config, self.dist
        self.device = detect_device(c.force_cpu)
        if c.threads:
            torch.set_num_threads(c.threads)
        self.threads = torch.get_num_threads()
        self.torch_device = torch.device(f"cuda:{dist.local_rank}" if self.device.kind == "cuda" else self.device.kind)
        self.compute_dtype = self._compute_dtype()
        if not c.per_device_train_batch_size:
            c.per_device_train_batch_size = 8 if self.device.kind == "cuda" else 2

        self.sharding = sharding.resolve(c.sharding, dist.world)
        if dist.main:
            check_trackers(c.report_to)  # a missing package is named now, not after loading the model
        resume_from = self._prepare_run_dir()

        if dist.main:
            self.model_path = resolve_model(c.model)  # converts the shipped GGUF once
        dist.barrier()
        self.model_path = resolve_model(c.model)
        self.tokenizer = load_tokenizer(c.model, self.model_path)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        if self.sharding == "fsdp" and c.quantization == "nf4":
            raise sharding.ShardingError("--sharding fsdp shards plain weights, not bitsandbytes' 4-bit ones: "
                                         "pass --quantization none (or auto), or --sharding ddp for QLoRA")
        self.quantization, self.quantization_reason = choose_quantization(
            "none" if self.sharding == "fsdp" else c.quantization, self.device.kind, self.model_path)
        # A frozen base in bf16 computes exactly what autocast computes from fp32 weights, without casting
        # every weight at every forward; 4-bit layers dequantise to their compute dtype under autocast.
        bf16_weights = (self.compute_dtype == torch.bfloat16 and self.quantization == "none"
                        and self.speedups.bf16_weights)
        self.autocast_dtype = None if bf16_weights or self.compute_dtype == torch.float32 else self.compute_dtype
        torch.manual_seed(c.seed)  # LoRA init
        base = load_base_model(c.model, self.model_path, self.quantization, str(self.torch_device),
                               torch.bfloat16 if bf16_weights else torch.float32)
        self.model = apply_lora(base, LoraSetup(c.lora_r, c.lora_alpha, c.lora_dropout, tuple(c.lora_target_modules),
                                                c.gradient_checkpointing), self.quantization)
        if self.speedups.fused_lora:
            fuse_lora(self.model)
        self.loss_module: nn.Module = CausalLMLoss(self.model, fused=self.speedups.fused_loss)
        self.loss_module = sharding.wrap(self.loss_module, self.model, self.sharding, self.torch_device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

        self._load_data()
        self._plan()
        # Compiling layers that FSDP2 gathers and frees around each call is untested here: fsdp trains eagerly.
        compile_setting = c.compile if self.speedups.compile_layers and self.sharding != "fsdp" else "off"
        self.compile_seconds, self.compile_label = compile_for_run(
            compile_setting, self.model, self._forward,
            packed=c.use_sequence_packing, rows=c.per_device_train_batch_size)
        if compile_setting != c.compile and self.sharding == "fsdp":
            self.compile_label = "off (not with --sharding fsdp)"

        self.optimizer = torch.optim.AdamW(self.trainable, lr=c.learning_rate, weight_decay=c.weight_decay)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(c.lr_scheduler_type, self.optimizer, num_warmup_steps=c.warmup_steps,
                                       num_training_steps=self.total_steps)
        if resume_from is not None:
            self._resume(resume_from)
        if dist.main:
            save_config(c, self.run_dir / CONFIG_FILE, **self._versions())
        self._describe()

    def _compute_dtype(self) -> torch.dtype:
        precision = self.config.precision
        if precision == "bf16":
            return torch.bfloat16
        if precision == "auto" and self.device.kind == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if precision == "auto" and self.device.kind == "cpu" and cpu_has_bf16_matmul():
            return torch.bfloat16
        return torch.float32

    def _prepare_run_dir(self) -> Path | None:
        """Clear the run for --fresh, else find the checkpoint to resume (checking the settings still match)."""
        c, run_dir = self.config, self.run_dir
        if self.dist.main:
            ckpt.remove_partial(run_dir)
            if c.fresh:
                for _, path in ckpt.checkpoints(run_dir):
                    shutil.rmtree(path)
                for name in ("best", "final"):
                    shutil.rmtree(run_dir / name, ignore_errors=True)
            run_dir.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        if c.fresh:
            return None
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is None:
            return None
        saved_file = run_dir / CONFIG_FILE
        if saved_file.exists():
            saved = json.loads(saved_file.read_text(encoding="utf-8"))
            changed = sorted(k for k, v in to_dict(c).items()
                             if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v)
            if changed:
                raise ResumeError(
                    f"{run_dir} holds a run with different settings ({', '.join(changed)}); rerun with the "
                    "same settings to resume it, --fresh to start over, or --output-dir for a new run"
                )
        world = json.loads((latest / ckpt.STATE_FILE).read_text(encoding="utf-8")).get("world_size", self.dist.world)
        if world != self.dist.world:  # a step's rows are split among the processes: their number is part of the plan
            raise ResumeError(f"{latest} was written by {world} processes and this run has {self.dist.world}; resume "
                              f"it with {world} processes in all (torchrun --nproc-per-node), --fresh to start over, "
                              "or --output-dir for a new run")
        return latest

    def _load_data(self) -> None:
        c, dist = self.config, self.dist
        cache_dir = c.cache_dir if c.use_cache else None

        def load(path: str) -> tuple[TokenizedData, str]:
            if dist.main:
                result = load_or_tokenize(path, self.tokenizer, c.max_seq_length, c.loss_on, cache_dir=cache_dir,
                                          force_rebuild=c.force_rebuild_cache, workers=c.workers)
            dist.barrier()
            if not dist.main:
                result = load_or_tokenize(path, self.tokenizer, c.max_seq_length, c.loss_on, cache_dir=cache_dir)
            return result

        self.train_data, self.cache_source = load(c.train_file)
        self.train_digest = atomic.file_sha256(c.train_file)
        self.val_data = None
        if c.validation_file and Path(c.validation_file).exists():
            self.val_data = load(c.validation_file)[0].subset(c.eval_samples)
        else:
            log.warning("no validation file at %s: evaluation and best-checkpoint selection are skipped",
                        c.validation_file)
        self.sampler = ThemeWeightedSampler(self.train_data.weights, seed=c.seed, weighted=c.use_theme_weighting,
                                            temperature=c.theme_temperature, cap=c.theme_weight_cap)
        if c.use_theme_weighting and self.sampler.is_uniform:
            log.warning("all theme weights are identical: theme-weighted sampling is plain sampling with "
                        "replacement (run data_formatter.py with --enable-semantic-labeling)")
        self.tracker = ThemeTracker(self.train_data.themes)

    def _plan(self) -> None:
        """Every step's rows: epoch orders from the sampler, packed; a step = the next rows_per_step rows."""
        c = self.config
        self.rows_per_step = c.per_device_train_batch_size * c.gradient_accumulation_steps * self.dist.world
        lengths = self.train_data.lengths
        self.epoch_rows: list[list[list[int]]] = []
        self.padded_efficiency: list[float] = []

        def lay_out_epoch(epoch: int) -> list[int]:
            order = self.sampler.epoch_order(epoch)
            rows = epoch_rows(order, lengths, capacity=c.max_seq_length, packing=c.use_sequence_packing,
                              window=c.pack_window)
            self.epoch_rows.append(rows)
            self.padded_efficiency.append(padded_efficiency(order, lengths, c.per_device_train_batch_size))
            return [int(lengths[row].sum()) for row in rows]

        self.schedule = plan_steps(c, lay_out_epoch, self.rows_per_step)  # (epoch, first row, end row)
        self.total_steps = len(self.schedule)
        self.steps_per_epoch = math.ceil(len(self.epoch_rows[0]) / self.rows_per_step)
        self.val_rows = None
        if self.val_data is not None:
            self.val_rows = epoch_rows(np.arange(len(self.val_data)), self.val_data.lengths,
                                       capacity=c.max_seq_length, packing=c.use_sequence_packing,
                                       window=c.pack_window)

    def _resume(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((path / ckpt.STATE_FILE).read_text(encoding="utf-8"))
        if state.get("train_data_sha256") != self.train_digest:
            raise ResumeError(f"{self.config.train_file} changed since {path} was written; "
                              "pass --fresh to train on the new data from the start")
        adapter = load_file(path / "adapter_model.safetensors", device=str(self.torch_device))
        sharding.load_adapter(self.model, adapter, self.sharding)
        sharding.load_optimizer(self.model, self.optimizer, torch.load(path / "optimizer.pt", weights_only=True,
                                                                       map_location=self.torch_device), self.sharding)
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        ckpt.load_rng_state(path / "rng_state.pth")
        self.tracker.load_state_dict(json.loads((path / "theme_tracker_state.json").read_text(encoding="utf-8")))
        metrics = json.loads((path / "training_metrics.json").read_text(encoding="utf-8"))
        self.history = {"train": metrics["train"], "eval": metrics["eval"]}
        self.step = state["step"]
        self.best = state["best"]
        self.elapsed_before = state.get("elapsed", 0.0)
        log.info("resuming from %s (step %d of %d)", path, self.step, self.total_steps)

    def _versions(self) -> dict:
        import peft
        import transformers

        return {"_versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                              "peft": peft.__version__}}

    def _precision_label(self) -> str:
        if self.compute_dtype == torch.float32:
            return "fp32"
        return "bf16 autocast" if self.autocast_dtype else "bf16 (frozen base stored in bf16, LoRA weights fp32)"

    def _describe(self) -> None:
        c = self.config
        trainable, total = count_parameters(self.model)
        data = _data_summary(self.train_data)
        rows = self.epoch_rows[0]
        packing = (f"off (one sample per row, padded to the longest in each batch: "
                   f"{self.padded_efficiency[0]:.1%} of slots are real tokens)")
        if c.use_sequence_packing:
            real = sum(int(self.train_data.lengths[i]) for row in rows for i in row)
            packing = (f"on (best-fit decreasing, window {c.pack_window}): {len(rows):,} rows, "
                       f"{real / (len(rows) * c.max_seq_length):.1%} of slots are real tokens vs "
                       f"{self.padded_efficiency[0]:.1%} with padding only")
        weighting = "off (plain shuffled epochs)"
        if c.use_theme_weighting:
            weighting = (f"on (temperature {c.theme_temperature}, cap {c.theme_weight_cap}x median; effective "
                         f"samples {self.sampler.effective_samples():,.0f} of {self.sampler.size:,})")
        lora_layers = sorted({n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in self.model.named_parameters()
                              if ".lora_A." in n})
        self.summary_lines = [
            f"Model: {c.model_name} ({self.model_path})",
            f"Parameters: {trainable:,} trainable / {total:,} total ({trainable / max(1, total):.2%})",
            f"Quantisation: {self.quantization_reason}",
            f"LoRA: r={c.lora_r} alpha={c.lora_alpha} dropout={c.lora_dropout} on {', '.join(lora_layers)}",
            f"Device: {self.device.describe() if self.device.kind != 'cpu' else f'CPU ({self.threads} threads)'}, "
            f"precision {self._precision_label()}, torch.compile {self.compile_label}",
            f"Batch: {c.per_device_train_batch_size} rows x {c.gradient_accumulation_steps} accumulation"
            + (f" x {self.dist.world} processes ({self.sharding})" if self.dist.world > 1 else "")
            + f" = {self.rows_per_step} rows per step, max_seq_length {c.max_seq_length}",
            f"Data: {data['samples']:,} samples ({data.get('context_trimmed', 0)} with old context dropped to fit, "
            f"{data['truncated']} truncated, {data['dropped_no_target']} dropped), "
            f"mean {data['mean_length']:.1f} tokens, {data['themes']:,} themes"
            + (f"; validation {len(self.val_data):,} samples" if self.val_data is not None else "; no validation"),
            f"Packing: {packing}",
            f"Cache: {self.cache_source} ({c.cache_dir})" if c.use_cache else "Cache: off",
            f"Theme weighting: {weighting}",
            f"Steps: {self.total_steps:,} ({self.steps_per_epoch:,} per epoch), checkpoint every {c.save_steps}, "
            f"eval every {c.eval_every}; output {self.run_dir}",
        ]
        if self.dist.main:
            for line in self.summary_lines:
                log.info(line)

    # ------------------------------------------------------------------------------------------- steps

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=self.autocast_dtype)

    def _forward(self, batch: dict) -> torch.Tensor:
        with self._autocast():
            return self.loss_module(batch["input_ids"].to(self.torch_device),
                                    batch["position_ids"].to(self.torch_device),
                                    batch["labels"].to(self.torch_device))

    def _dummy_batch(self) -> dict:
        one = torch.zeros(1, 1, dtype=torch.long)
        return {"input_ids": one + self.pad_id, "position_ids": one, "labels": one + IGNORE_INDEX,
                "real_tokens": 0, "slots": 0, "label_tokens": 0}

    def _my_batches(self, rows: list) -> list:
        """This process's share of ``rows`` in batches, padded with None (a dummy batch) to as many batches as the
        busiest process has: FSDP gathers each layer's weights in every forward, so all processes run as many."""
        batch_size, world = self.config.per_device_train_batch_size, self.dist.world
        mine = rows[self.dist.rank::world]
        batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
        return batches + [None] * (max(1, math.ceil(math.ceil(len(rows) / world) / batch_size)) - len(batches))

    def train_step(self, index: int) -> dict:
        """One optimizer step over the rows the schedule assigns to step ``index`` (0-based)."""
        c, dist = self.config, self.dist
        started = time.perf_counter()
        epoch, first, end = self.schedule[index]
        rows = self.epoch_rows[epoch][first:end]
        label_total = sum(self.train_data.label_count(i) for row in rows for i in row)
        micro = self._my_batches(rows)
        torch.manual_seed(c.seed * 1_000_003 + index * 7_919 + dist.rank)  # dropout: same after a resume
        self.loss_module.train()
        loss_sum = real = slots = 0.0
        for j, micro_rows in enumerate(micro):
            batch = self._dummy_batch() if micro_rows is None else collate(self.train_data, micro_rows, self.pad_id)
            with sharding.grad_sync(self.loss_module, self.sharding, sync=j == len(micro) - 1):
                loss = self._forward(batch)
                (loss * dist.world / label_total).backward()
            loss_sum += loss.item()
            real += batch["real_tokens"]
            slots += batch["slots"]
        loss_sum, real, slots = dist.sum([loss_sum, real, slots])
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, c.max_grad_norm if c.max_grad_norm > 0 else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tracker.observe(self.train_data.themes[i] for row in rows for i in row)
        seconds = time.perf_counter() - started
        return {
            "step": index + 1, "epoch": round(epoch + (first + len(rows)) / len(self.epoch_rows[epoch]), 4),
            "loss": loss_sum / label_total, "lr": lr, "grad_norm": sharding.grad_norm(grad_norm), "seconds": seconds,
            "tokens_per_s": real / seconds, "real_tokens": int(real), "label_tokens": label_total,
            "packing_efficiency": real / max(1.0, slots), "padded_efficiency": self.padded_efficiency[epoch],
            "coverage": self.tracker.coverage, "entropy": self.tracker.entropy,
        }

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Token-weighted loss and perplexity on the validation samples (all processes share the rows)."""
        dist = self.dist
        self.loss_module.eval()
        loss_sum = tokens = 0.0
        for batch_rows in self._my_batches(self.val_rows):
            batch = self._dummy_batch() if batch_rows is None else collate(self.val_data, batch_rows, self.pad_id)
            loss_sum += self._forward(batch).item()
            tokens += batch["label_tokens"]
        loss_sum, tokens = dist.sum([loss_sum, tokens])
        self.loss_module.train()
        self.tracker.observe_eval(self.val_data.themes)
        loss = loss_sum / max(1.0, tokens)
        summary = self.tracker.summary()
        return {"step": self.step, "loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                "eval_themes": summary["eval_themes"], "eval_entropy": summary["eval_entropy"]}

    # ------------------------------------------------------------------------------------------- the loop

    def train(self) -> dict:
        """Run the remaining steps; returns :meth:`result`. The main process records the run as it goes."""
        if self.dist.main:
            trackers = open_trackers(self.config.report_to, self.run_dir, self.step, to_dict(self.config))
            self.recorder = RunRecorder(self.run_dir, self._run_fields(), resumed_step=self.step, trackers=trackers,
                                        observers=self.observers)
        try:
            with StopRequests(self.run_dir / STOP_FILE if self.dist.main else None) as stops:
                result = self._train(stops)
        except BaseException as exc:
            if self.recorder is not None:
                error = ("KeyboardInterrupt: aborted by a second Ctrl+C; rerun the same command to resume from the "
                         "last checkpoint" if isinstance(exc, KeyboardInterrupt) else error_line(exc))
                self.recorder.close("failed", error=error)
            raise
        if self.recorder is not None:
            self.recorder.close("stopped" if self.stop_reason else "finished", stop_reason=self.stop_reason)
        return result

    def _run_fields(self) -> dict:
        c = self.config
        return {"base_model": c.model, "model_path": str(self.model_path), "quantization": self.quantization,
                "precision": "fp32" if self.compute_dtype == torch.float32 else "bf16",
                "step": self.step, "total_steps": self.total_steps, "best": self.best,
                "last_eval_loss": self.history["eval"][-1]["loss"] if self.history["eval"] else None,
                "tokens_per_s": self._tokens_per_s(), "train_file": c.train_file,
                "validation_file": c.validation_file}

    def _train(self, stops: StopRequests) -> dict:
        c, dist = self.config, self.dist
        if self.step >= self.total_steps:
            log.info("training already complete at step %d (--fresh starts over)", self.step)
            if not (self.run_dir / "final").exists():
                self.finish()
            return self.result()
        self.session_start = time.perf_counter()
        if self.step == 0 and self.val_data is not None:
            baseline = self.evaluate()
            self.history["eval"].append(baseline)
            self._record_eval(baseline)
            if dist.main:
                log.info("step 0: validation loss %.4f (perplexity %.2f) before training",
                         baseline["loss"], baseline["perplexity"])
        rate_start, rate_step = time.perf_counter(), self.step  # the ETA's pace: this session's, evaluations included
        bar = progress(desc="training", total=self.total_steps, unit="step", disable=None if dist.main else True)
        bar.update(self.step)
        window: list[dict] = []
        while self.step < self.total_steps:
            metrics = self.train_step(self.step)
            self.step = metrics["step"]
            self.history["train"].append(metrics)
            window.append(metrics)
            seconds_per_step = (time.perf_counter() - rate_start) / (self.step - rate_step)
            self._record({"kind": "train", "step": self.step, "epoch": metrics["epoch"], "loss": metrics["loss"],
                          "lr": metrics["lr"], "grad_norm": metrics["grad_norm"],
                          "tokens_per_s": metrics["tokens_per_s"], "seconds_per_step": metrics["seconds"],
                          "elapsed": self._elapsed(), "eta_s": seconds_per_step * (self.total_steps - self.step),
                          "coverage": metrics["coverage"], "entropy": metrics["entropy"], "time": time.time()})
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            last = self.step == self.total_steps
            if dist.main and (self.step % c.logging_steps == 0 or last):
                tokens = sum(m["label_tokens"] for m in window)
                log.info("step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tok/s  coverage %.1f%%  entropy %.3f",
                         self.step, self.total_steps, sum(m["loss"] * m["label_tokens"] for m in window) / tokens,
                         metrics["lr"], metrics["grad_norm"],
                         sum(m["real_tokens"] for m in window) / sum(m["seconds"] for m in window),
                         100 * metrics["coverage"], metrics["entropy"])
                window = []
            if self.val_data is not None and (self.step % c.eval_every == 0 or last):
                self._evaluate_and_keep_best()
            saved = self.step % c.save_steps == 0 or last
            if saved:
                self.save_checkpoint()
            if not last and self._stop_requested(stops):
                if not saved:
                    self.save_checkpoint()
                if dist.main:
                    log.info("stopped at step %d of %d (%s); rerun the same command to resume", self.step,
                             self.total_steps, self.stop_reason)
                break
        bar.close()
        if self.stop_reason is None:
            self.finish()
        dist.barrier()
        return self.result()

    def _stop_requested(self, stops: StopRequests) -> bool:
        """Whether any process was asked to stop (a signal, the STOP file, an observer); all agree on it."""
        if self.recorder is not None:
            stops.request(self.recorder.stop_reason)
        reason = stops.poll()
        if self.dist.world > 1 and self.dist.sum([1.0 if reason else 0.0])[0] > 0:
            reason = reason or "signal"  # only signals reach the other processes: STOP and observers are rank 0's
        self.stop_reason = reason
        return reason is not None

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start

    def _tokens_per_s(self) -> float | None:
        train = self.history["train"]
        return sum(m["real_tokens"] for m in train) / sum(m["seconds"] for m in train) if train else None

    def _record(self, record: dict) -> None:
        if self.recorder is not None:
            self.recorder.record(record)

    def _record_eval(self, metrics: dict) -> None:
        epoch = self.history["train"][-1]["epoch"] if self.history["train"] else 0.0
        self._record({"kind": "eval", "step": metrics["step"], "epoch": epoch, "loss": metrics["loss"],
                      "perplexity": metrics["perplexity"], "elapsed": self._elapsed(), "time": time.time()})
        if self.recorder is not None:
            self.recorder.write_state(step=self.step, best=self.best, last_eval_loss=metrics["loss"])

    def _evaluate_and_keep_best(self) -> None:
        metrics = self.evaluate()
        self.history["eval"].append(metrics)
        # Every process keeps the best (the loss is the same on all): under fsdp all take part in gathering it.
        if self.best["loss"] is None or metrics["loss"] < self.best["loss"]:
            self.best = {"step": self.step, "loss": metrics["loss"]}
            adapter = sharding.adapter_state(self.model, self.sharding)

            def write(folder: Path) -> None:
                sharding.save_adapter(self.model, folder, adapter)
                atomic.write_json(folder / "best.json", self.best)

            if self.dist.main:
                atomic.write_dir(self.run_dir / "best", write)
        if not self.dist.main:
            return
        log.info("step %d: validation loss %.4f (perplexity %.2f)", self.step, metrics["loss"], metrics["perplexity"])
        self._record_eval(metrics)

    def save_checkpoint(self) -> None:
        adapter = sharding.adapter_state(self.model, self.sharding)
        optimizer = sharding.optimizer_state(self.model, self.optimizer, self.sharding)
        if self.dist.main:
            state = {"step": self.step, "total_steps": self.total_steps, "epoch": self.schedule[self.step - 1][0],
                     "sampler": {"seed": self.config.seed, "weighted": self.config.use_theme_weighting,
                                 "epoch": self.schedule[self.step - 1][0], "next_row": self.schedule[self.step - 1][2]},
                     "best": self.best, "train_data_sha256": self.train_digest, "elapsed": self._elapsed(),
                     "world_size": self.dist.world}
            tracker_state = self.tracker.state_dict()

            def write(folder: Path) -> None:
                sharding.save_adapter(self.model, folder, adapter)
                torch.save(optimizer, folder / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
                ckpt.save_rng_state(folder / "rng_state.pth")
                atomic.write_json(folder / "theme_tracker_state.json", tracker_state)
                atomic.write_json(folder / "training_metrics.json", self.metrics())
                if self.config.plots:
                    from rhizome.train.plots import plot_training

                    plot_training(self.history, tracker_state, folder)
                atomic.write_json(folder / ckpt.STATE_FILE, state)  # last: marks the checkpoint complete

            path = ckpt.write_checkpoint(self.run_dir, self.step, write)
            for name in ("training_metrics.json", "theme_tracker_state.json", "training_plots.png", "loss_focused.png"):
                if (path / name).exists():
                    atomic.write_bytes(self.run_dir / name, (path / name).read_bytes())
            ckpt.rotate(self.run_dir, self.config.save_total_limit)
            log.info("saved %s", path)
            if self.recorder is not None:
                self.recorder.write_state(step=self.step, best=self.best, tokens_per_s=self._tokens_per_s())
        self.dist.barrier()

    def metrics(self) -> dict:
        return {"train": self.history["train"], "eval": self.history["eval"], "best": self.best,
                "summary": self.tracker.summary()}

    # ------------------------------------------------------------------------------------------- final

    def finish(self) -> None:
        """``final/``: the best adapter by validation loss (else the last), tokenizer, model card; written by the
        main process (every process calls it: under fsdp they gather the last adapter together)."""
        adapter = sharding.adapter_state(self.model, self.sharding)
        if not self.dist.main:
            return
        best_dir = self.run_dir / "best"
        source = None
        if self.best["step"] is not None and (best_dir / "best.json").exists():
            saved = json.loads((best_dir / "best.json").read_text(encoding="utf-8"))
            if saved.get("step") == self.best["step"]:
                source = best_dir

        def write(folder: Path) -> None:
            if source is None:
                sharding.save_adapter(self.model, folder, adapter)
            else:
                for name in ("adapter_model.safetensors", "adapter_config.json"):
                    shutil.copy2(source / name, folder / name)
            self.tokenizer.save_pretrained(folder)
            atomic.write_text(folder / "README.md", self.model_card(source is not None))
            atomic.write_json(folder / "training_metrics.json", self.metrics())

        atomic.write_dir(self.run_dir / "final", write)
        log.info("final adapter (%s) in %s", f"best, step {self.best['step']}" if source else "last step",
                 self.run_dir / "final")

    def model_card(self, is_best: bool) -> str:
        c = self.config
        data = _data_summary(self.train_data)
        evals = self.history["eval"]
        train = self.history["train"]
        lines = [
            f"# {c.model_name} LoRA adapter (RhizomeML)", "",
            f"- Base model: `{c.model}`",
            f"- Adapter: LoRA r={c.lora_r}, alpha={c.lora_alpha}, dropout={c.lora_dropout}; base weights "
            f"{'4-bit NF4 (QLoRA)' if self.quantization == 'nf4' else 'full precision'}",
            f"- Weights: {'best validation loss, step ' + str(self.best['step']) if is_best else 'last step'} "
            f"of {self.total_steps}",
            f"- Training data: `{c.train_file}`: {data['samples']:,} samples, {data['tokens']:,} tokens "
            f"({data['label_tokens']:,} assistant tokens carry the loss), {data['themes']:,} themes; theme-weighted "
            f"sampling {'on' if c.use_theme_weighting else 'off'}, packing {'on' if c.use_sequence_packing else 'off'}, "
            f"max length {c.max_seq_length}",
        ]
        if evals:
            lines.append(f"- Validation loss: {evals[0]['loss']:.4f} before training"
                         + (f", {self.best['loss']:.4f} best (perplexity {math.exp(self.best['loss']):.2f})"
                            if self.best["loss"] is not None else ""))
        if train:
            lines.append(f"- Training loss: {train[0]['loss']:.4f} at step 1, {train[-1]['loss']:.4f} at step "
                         f"{train[-1]['step']}")
        summary = self.tracker.summary()
        lines.append(f"- Theme coverage: {summary['coverage']:.1%} of {summary['dataset_themes']:,} themes, "
                     f"entropy {summary['entropy']:.3f} nats")
        lines += ["", "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM",
                  f"base = AutoModelForCausalLM.from_pretrained({self.model_path!r})",
                  "model = PeftModel.from_pretrained(base, 'final')", "```", ""]
        return "\n".join(lines)

    def result(self) -> dict:
        train, evals = self.history["train"], self.history["eval"]
        return {
            "steps": self.step, "total_steps": self.total_steps, "run_dir": str(self.run_dir),
            "final_dir": str(self.run_dir / "final"), "best": self.best,
            "first_train_loss": train[0]["loss"] if train else None,
            "last_train_loss": train[-1]["loss"] if train else None,
            "first_eval_loss": evals[0]["loss"] if evals else None, "last_eval_loss": evals[-1]["loss"] if evals else None,
            "seconds_per_step": float(np.median([m["seconds"] for m in train])) if train else None,
            "tokens_per_s": self._tokens_per_s(), "stop_reason": self.stop_reason,
        }


def run(config: TrainConfig, observers: tuple[Observer, ...] | list[Observer] = ()) -> tuple[FineTune, dict]:
    """Set up and train (resuming when the output folder holds a checkpoint); returns the recipe and a summary."""
    recipe = FineTune(config, Dist.from_env(), observers=observers)
    try:
        recipe.setup()
        return recipe, recipe.train()
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
