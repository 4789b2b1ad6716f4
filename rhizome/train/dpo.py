"""Preference training (DPO or ORPO) on the pairs ``data_formatter.py`` mined from the person's own choices.

``PreferenceTune`` is the SFT recipe (``rhizome.train.loop.FineTune``) with three parts replaced: the data (pairs
of a chosen and a rejected reply to one prompt), the plan (a micro-batch holds whole pairs) and the step (the DPO
or ORPO loss). Everything else is the trainer's own: model building, LoRA, the fused LoRA kernel, the tokenisation
cache, theme-weighted sampling, checkpoints and exact resume, run.json / metrics.jsonl / heartbeat, stop requests,
best/ and final/.

Why not TRL's ``DPOTrainer``: it is not a dependency here, and through ``transformers.Trainer`` it resumes at
epoch granularity of its own data order, knows neither our theme-weighted sampler nor our run-folder contract
(run.json, metrics.jsonl, STOP), and pads each pair instead of packing. The loss it computes is the same
(``sigmoid`` DPO, Rafailov et al. 2023; ORPO as TRL's ``ORPOTrainer``), and the files are its format, so TRL
can train on them unchanged.

- **Log-probabilities**: of the reply's tokens only (the template's assistant span, as in SFT), summed per
  reply: :func:`reply_logprobs`. Chosen and rejected replies of every pair in a micro-batch are bin-packed into
  rows of ``max_seq_length`` (packing on) with per-sample ``position_ids``, so no reply attends to another;
  the LM head runs only at labelled positions, in checkpointed chunks (no [positions x vocabulary] logits kept).
- **Reference**: the model DPO starts from: ``--init-adapter`` (default: the SFT run's ``final/``, else the
  bare base). With ``--dpo-reference init`` (default) the reference is that starting model; with ``base`` it is
  the same model with LoRA disabled (PEFT's ``disable_adapter()``). Either way the reference's log-probabilities
  are computed once per start, without gradients, by the one model in memory: no second copy of the weights.
  They are deterministic, so a resumed run uses the same values.
- **DPO loss** per pair: ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``; a step's loss is the mean
  over its pairs. Theme weighting acts, as in SFT, through which pairs the sampler draws.
- **RPO** (``--rpo-alpha``, Pang et al. 2024, TRL's ``DPOConfig.rpo_alpha``): DPO alone can lower the chosen
  replies' likelihood along with the rejected ones' (it only widens their gap); alpha x the chosen replies' NLL is
  added to every pair's loss. As in TRL the NLL is one figure per micro-batch, the mean over all its chosen reply
  tokens (a long reply weighs more than a short one). No new state: resume is unchanged.
- **ORPO** (``--method orpo``, Hong et al. 2024) needs no reference (no reference pass). With ``m_c``, ``m_r`` the
  replies' mean log-probability per token: ``-m_c - beta * log sigmoid(log_odds)``, ``log_odds = (m_c - m_r) -
  (log(1 - exp(m_c)) - log(1 - exp(m_r)))``: the chosen reply's NLL plus the odds-ratio term weighted by beta (TRL's
  ``ORPOConfig.beta``, the paper's lambda). Rewards are ``beta * m``, as TRL logs them. The NLL is per pair
  (each reply's own token mean, as in the paper); TRL averages it over all chosen tokens of a batch instead.
- **Metrics** per step and evaluation: reward accuracy and margin, mean chosen / rejected rewards and
  log-probabilities, and the chosen replies' perplexity (which must not drift far from SFT's).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rhizome import atomic
from rhizome.errors import UserError
from rhizome.format.preferences import FILE_PATTERN
from rhizome.log import get_logger
from rhizome.runs import ADAPTER_CONFIG_FILE, FINAL_DIR, resolve_adapter
from rhizome.train.cache import load_or_tokenize
from rhizome.train.config import TrainConfig
from rhizome.train.data import IGNORE_INDEX, ROLES, DatasetFileError, TokenizedData, checked_rows
from rhizome.train.fused import LOSS_CHUNK
from rhizome.train.live import Observer
from rhizome.train.loop import Dist, FineTune, Speedups, plan_steps
from rhizome.train.model import decoder_and_head
from rhizome.train.packing import best_fit_decreasing, collate, padded_efficiency
from rhizome.train.sampler import ThemeWeightedSampler
from rhizome.train.tracker import ThemeTracker

log = get_logger(__name__)

SIDES = ("chosen", "rejected")
SIDE_SEPARATOR = "\x1f"  # between a pair's id and its side in the ids of the tokenised samples
REFERENCES = ("init", "base")
# Per-step and per-evaluation preference figures (DPO or ORPO), beside the SFT ones, in metrics.jsonl and
# training_metrics.json.
DPO_FIELDS = ("reward_accuracy", "reward_margin", "rewards_chosen", "rewards_rejected", "logps_chosen",
              "logps_rejected", "chosen_perplexity")


class PreferenceError(UserError):
    """Preference training cannot start; the message says what to run or pass."""


# ----------------------------------------------------------------------------------------------- data

def preference_file(train_file: str, split: str) -> Path:
    """``dataset_preferences_<split>.jsonl`` in the folder of ``train_file`` (or ``train_file`` itself when it is one)."""
    path = Path(train_file)
    if path.name.startswith(FILE_PATTERN.split("{")[0]):
        return path if split == "train" else path.with_name(FILE_PATTERN.format(split=split))
    return path.with_name(FILE_PATTERN.format(split=split))


def has_pairs(path: str | Path) -> bool:
    """Whether ``path`` exists and holds a line (a split can be written empty when it got no pair)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return any(line.strip() for line in handle)
    except OSError:
        return False


def read_preference_pairs(path: str | Path) -> list[dict]:
    """A preference JSONL file (TRL's conversational format) -> two chat pairs per line, the chosen reply's and the
    rejected reply's, ids ``<id>\\x1fchosen`` / ``<id>\\x1frejected``; errors name the file and line."""
    path = Path(path)
    missing = ("Preference pairs come from `python data_formatter.py` (it writes them when the export holds "
               "regenerated, edited or rated replies), or pass --train-file / --validation-file naming "
               "dataset_preferences_<split>.jsonl files.")
    pairs = []
    for number, row in checked_rows(path, _check_preference_row, missing):
        pair_id = str(row.get("id", f"{path.stem}-{number}"))
        for side in SIDES:
            pairs.append({"id": f"{pair_id}{SIDE_SEPARATOR}{side}", "messages": row["prompt"] + row[side],
                          "themes": [str(t) for t in row.get("themes") or []],
                          "theme_weight": float(row.get("theme_weight", 1.0))})
    if not pairs:
        raise DatasetFileError(f"{path} holds no preference pairs")
    return pairs


def _check_preference_row(row) -> str | None:
    if not isinstance(row, dict):
        return "each line must be a JSON object"
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in prompt):
        return 'missing "prompt": a list of {"role", "content"} messages'
    for side in SIDES:
        reply = row.get(side)
        if not (isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], dict)
                and reply[0].get("role") == "assistant" and isinstance(reply[0].get("content"), str)):
            return f'"{side}" must be a list of one {{"role": "assistant", "content": str}} message'
    weight = row.get("theme_weight", 1.0)
    if not isinstance(weight, (int, float)) or weight < 0:
        return '"theme_weight" must be a non-negative number'
    return None


@dataclass
class PreferenceData:
    """Tokenised pairs: pair k's replies are samples ``chosen[k]`` and ``rejected[k]`` of ``samples``."""

    samples: TokenizedData
    chosen: np.ndarray
    rejected: np.ndarray
    ids: list[str]
    themes: list[list[str]]
    weights: np.ndarray
    incomplete: int  # pairs with a reply that kept no token within max_seq_length, left out

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_samples(cls, samples: TokenizedData) -> PreferenceData:
        where = {sample_id: i for i, sample_id in enumerate(samples.ids)}
        names = list(dict.fromkeys(sample_id.rsplit(SIDE_SEPARATOR, 1)[0] for sample_id in samples.ids))
        complete = [n for n in names if all(f"{n}{SIDE_SEPARATOR}{side}" in where for side in SIDES)]
        chosen = np.array([where[f"{n}{SIDE_SEPARATOR}chosen"] for n in complete], dtype=np.int64)
        rejected = np.array([where[f"{n}{SIDE_SEPARATOR}rejected"] for n in complete], dtype=np.int64)
        incomplete = samples.stats.get("pairs", 2 * len(names)) // 2 - len(complete)
        if not complete:
            raise DatasetFileError("no preference pair keeps both replies within max_seq_length")
        return cls(samples, chosen, rejected, complete, [list(samples.themes[i]) for i in chosen],
                   np.asarray(samples.weights)[chosen], incomplete)

    def subset(self, n: int) -> PreferenceData:
        if n <= 0 or n >= len(self):
            return self
        return PreferenceData(self.samples, self.chosen[:n], self.rejected[:n], self.ids[:n], self.themes[:n],
                              self.weights[:n], self.incomplete)


def load_preferences(path: str | Path, tokenizer, max_seq_length: int, *, cache_dir: str | Path | None,
                     force_rebuild: bool = False) -> tuple[PreferenceData, str]:
    """Tokenised preference pairs of ``path`` (through the SFT tokenisation cache) and where they came from."""
    samples, source = load_or_tokenize(path, tokenizer, max_seq_length, "last", cache_dir=cache_dir,
                                       force_rebuild=force_rebuild, read_pairs=read_preference_pairs)
    return PreferenceData.from_samples(samples), source


def micro_batches(data: PreferenceData, order: np.ndarray, pairs_per_batch: int, capacity: int,
                  packing: bool) -> list[tuple[list[int], list[list[int]]]]:
    """(pair indices, rows of sample indices) per micro-batch: ``pairs_per_batch`` pairs of ``order`` each, their
    chosen and rejected replies bin-packed into rows of ``capacity`` tokens (one reply per row without packing)."""
    lengths = data.samples.lengths
    batches = []
    for start in range(0, len(order), max(1, pairs_per_batch)):
        pairs = [int(k) for k in order[start:start + pairs_per_batch]]
        samples = [int(s) for k in pairs for s in (data.chosen[k], data.rejected[k])]
        if packing:
            rows = [[samples[j] for j in row] for row in best_fit_decreasing(lengths[samples], capacity)]
        else:
            rows = [[s] for s in samples]
        batches.append((pairs, rows))
    return batches


# ----------------------------------------------------------------------------------------------- log-probabilities

def _chunk_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    labels: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(F.linear(hidden, weight, bias).float(), labels, reduction="none")


def reply_logprobs(model, data: TokenizedData, rows: list[list[int]], pad_id: int,
                   device: torch.device | str = "cpu") -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(the sample of each place in ``rows``, row by row; the summed log-probability of its reply tokens; how many
    tokens), one entry per place: weighted sampling can put one pair twice in a batch, and each copy counts.
    Gradients flow when enabled; the LM head runs in checkpointed chunks of labelled positions."""
    batch = collate(data, rows, pad_id)
    segments = np.full(batch["labels"].shape, -1, dtype=np.int64)
    places = [i for row in rows for i in row]
    place = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = int(data.offsets[i + 1] - data.offsets[i])
            segments[r, at:at + n] = place
            at += n
            place += 1
    decoder, head = decoder_and_head(model)
    # No attention mask and no cache: transformers then masks attention block-diagonally per packed sample.
    hidden = decoder(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                     use_cache=False).last_hidden_state
    labels = batch["labels"].to(device)
    keep = labels != IGNORE_INDEX
    positions, targets = hidden[keep], labels[keep]
    chunks = []
    for start in range(0, len(targets), LOSS_CHUNK):
        args = (positions[start:start + LOSS_CHUNK], head.weight, head.bias, targets[start:start + LOSS_CHUNK])
        chunks.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False) if torch.is_grad_enabled()
                      else _chunk_logprobs(*args))
    token_logprobs = torch.cat(chunks)
    local = torch.from_numpy(segments[keep.cpu().numpy()]).to(device)
    sums = torch.zeros(len(places), dtype=torch.float32, device=device).index_add(0, local, token_logprobs)
    counts = torch.bincount(local, minlength=len(places))
    return places, sums, counts


def orpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
              beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair ORPO loss, chosen rewards, rejected rewards) from the replies' mean log-probabilities per token."""
    log_odds = (policy_chosen - policy_rejected) - (_log1mexp(policy_chosen) - _log1mexp(policy_rejected))
    losses = -policy_chosen - beta * F.logsigmoid(log_odds)
    return losses, beta * policy_chosen.detach(), beta * policy_rejected.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012); a mean log-prob of exactly 0 (every token
    certain) is held just below it, where the odds are finite."""
    x = x.clamp(max=-1e-6)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float, *, rpo_alpha: float = 0.0,
             chosen_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair sigmoid DPO loss, chosen rewards, rejected rewards); rewards are beta x log-ratio to the reference.
    With ``rpo_alpha`` each pair's loss gains alpha x the mean NLL per token of all the chosen replies given
    (``chosen_tokens``: their token counts), as TRL's ``rpo_alpha``."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    if rpo_alpha:
        losses = losses + rpo_alpha * (-policy_chosen.sum() / chosen_tokens.sum())
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


@torch.no_grad()
def pair_logprobs(model, data: PreferenceData, pad_id: int, *, pairs_per_batch: int, capacity: int,
                  packing: bool = True, device: torch.device | str = "cpu",
                  autocast=contextlib.nullcontext) -> dict[str, np.ndarray]:
    """Summed reply log-probabilities of every pair (``chosen``, ``rejected``) and the replies' token counts
    (``chosen_tokens``, ``rejected_tokens``), in pair order, with the model in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    values = np.zeros(len(data.samples), dtype=np.float64)
    counts = np.zeros(len(data.samples), dtype=np.int64)
    try:
        for _, rows in micro_batches(data, np.arange(len(data)), pairs_per_batch, capacity, packing):
            with autocast():
                samples, sums, tokens = reply_logprobs(model, data.samples, rows, pad_id, device)
            values[samples] = sums.double().cpu().numpy()
            counts[samples] = tokens.cpu().numpy()
    finally:
        model.train(was_training)
    return {"chosen": values[data.chosen], "rejected": values[data.rejected],
            "chosen_tokens": counts[data.chosen], "rejected_tokens": counts[data.rejected]}


# ----------------------------------------------------------------------------------------------- the recipe

class PreferenceTune(FineTune):
    """The SFT recipe with preference data, a pair-wise plan and the DPO or ORPO step (see the module docstring)."""

    def __init__(self, config: TrainConfig, dist: Dist | None = None, observers: tuple[Observer, ...] | list = ()):
        if config.dpo_reference not in REFERENCES:
            raise PreferenceError(f"--dpo-reference must be one of {', '.join(REFERENCES)}, got {config.dpo_reference}")
        if config.rpo_alpha < 0:
            raise PreferenceError(f"--rpo-alpha must be 0 (plain DPO) or positive, got {config.rpo_alpha}")
        if config.rpo_alpha and config.method != "dpo":
            raise PreferenceError(f"--rpo-alpha adds an NLL term to DPO; --method {config.method} has none to add "
                                  "(ORPO has its own): drop --rpo-alpha or use --method dpo")
        config.train_file = str(preference_file(config.train_file, "train"))
        if config.validation_file:
            config.validation_file = str(preference_file(config.validation_file, "validation"))
        # Compiled decoder layers are warmed up and tested on the SFT forward only: preference passes run eagerly.
        super().__init__(config, dist, Speedups(compile_layers=False), observers=observers)
        if self.dist.world > 1:
            raise PreferenceError(f"--method {config.method} trains in one process; run it without torchrun")
        self.init_adapter = self._init_adapter()

    def _init_adapter(self) -> Path | None:
        """The adapter training starts from, its LoRA shape adopted so that its weights load into the new LoRA."""
        c = self.config
        if c.init_adapter == "none":
            return None
        if c.init_adapter:
            path = resolve_adapter(c.init_adapter)[0]
        else:
            sft_final = Path(f"{c.model_name}-finetuned") / FINAL_DIR
            if not (sft_final / ADAPTER_CONFIG_FILE).exists():
                log.warning("no SFT adapter at %s: %s starts from the bare base model (train SFT first, or pass "
                            "--init-adapter)", sft_final, c.method.upper())
                return None
            path = sft_final
        saved = json.loads((path / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
        c.lora_r, c.lora_alpha = int(saved["r"]), int(saved["lora_alpha"])
        targets = saved.get("target_modules") or []
        c.lora_target_modules = sorted(targets) if isinstance(targets, list) else [targets]
        return path

    def _load_data(self) -> None:
        # Called by setup() after the LoRA is built and before the optimizer and a resume: the starting adapter's
        # weights go in first, so that the reference is computed from them.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        c = self.config
        if self.init_adapter is not None:
            set_peft_model_state_dict(self.model, load_file(self.init_adapter / "adapter_model.safetensors",
                                                            device=str(self.torch_device)))
        cache_dir = c.cache_dir if c.use_cache else None
        self.pairs, self.cache_source = load_preferences(c.train_file, self.tokenizer, c.max_seq_length,
                                                         cache_dir=cache_dir, force_rebuild=c.force_rebuild_cache)
        self.train_data = self.pairs.samples
        self.train_digest = atomic.file_sha256(c.train_file)
        self.val_pairs = None
        if c.validation_file and has_pairs(c.validation_file):
            self.val_pairs = load_preferences(c.validation_file, self.tokenizer, c.max_seq_length,
                                              cache_dir=cache_dir)[0].subset(c.eval_samples)
        else:
            log.warning("no validation pairs in %s: evaluation and best-checkpoint selection are skipped",
                        c.validation_file)
        self.val_data = self.val_pairs.samples if self.val_pairs is not None else None
        self.sampler = ThemeWeightedSampler(self.pairs.weights, seed=c.seed, weighted=c.use_theme_weighting,
                                            temperature=c.theme_temperature, cap=c.theme_weight_cap)
        self.tracker = ThemeTracker(self.pairs.themes)
        self.reference = self.val_reference = None
        if c.method != "dpo":
            return
        started = time.perf_counter()
        self.reference = self._reference(self.pairs)
        self.val_reference = self._reference(self.val_pairs) if self.val_pairs is not None else None
        log.info("reference log-probabilities (%s) of %d + %d pairs in %.1f s", self._reference_label(),
                 len(self.pairs), len(self.val_pairs or ()), time.perf_counter() - started)

    def _reference_note(self) -> str:
        if self.config.method != "dpo":
            return "; no reference (ORPO)"
        rpo = f"; RPO: + {self.config.rpo_alpha} x the chosen replies' NLL" if self.config.rpo_alpha else ""
        return f"; reference: {self._reference_label()}{rpo}"

    def _reference_label(self) -> str:
        if self.config.dpo_reference == "base" or self.init_adapter is None:
            return "base model, LoRA disabled"
        return f"the starting adapter {self.init_adapter}"

    def _reference(self, data: PreferenceData) -> dict[str, torch.Tensor]:
        c = self.config
        disabled = self.model.disable_adapter() if c.dpo_reference == "base" else contextlib.nullcontext()
        with disabled:
            values = pair_logprobs(self.model, data, self.pad_id, pairs_per_batch=c.per_device_train_batch_size,
                                   capacity=c.max_seq_length, packing=c.use_sequence_packing,
                                   device=self.torch_device, autocast=self._autocast)
        return {side: torch.from_numpy(values[side]).float() for side in SIDES}

    def _plan(self) -> None:
        """Every step's micro-batches: the sampler's epoch order of pairs, ``batch_size`` pairs per micro-batch."""
        c = self.config
        self.rows_per_step = c.per_device_train_batch_size * c.gradient_accumulation_steps  # pairs per step
        lengths = self.train_data.lengths
        self.epoch_batches: list[list] = []
        self.epoch_rows = []
        self.padded_efficiency = []

        def lay_out_epoch(epoch: int) -> list[int]:
            order = self.sampler.epoch_order(epoch)
            batches = micro_batches(self.pairs, order, c.per_device_train_batch_size, c.max_seq_length,
                                    c.use_sequence_packing)
            self.epoch_batches.append(batches)
            self.epoch_rows.append([row for _, rows in batches for row in rows])
            samples = np.array([s for k in order for s in (self.pairs.chosen[k], self.pairs.rejected[k])])
            self.padded_efficiency.append(padded_efficiency(samples, lengths, 2 * c.per_device_train_batch_size))
            return [int(sum(lengths[row].sum() for row in rows)) for _, rows in batches]

        # (epoch, first micro-batch, end micro-batch)
        self.schedule = plan_steps(c, lay_out_epoch, c.gradient_accumulation_steps)
        self.total_steps = len(self.schedule)
        self.steps_per_epoch = math.ceil(len(self.epoch_batches[0]) / c.gradient_accumulation_steps)
        self.val_batches = None
        if self.val_pairs is not None:
            self.val_batches = micro_batches(self.val_pairs, np.arange(len(self.val_pairs)),
                                             c.per_device_train_batch_size, c.max_seq_length, c.use_sequence_packing)

    def _describe(self) -> None:
        super()._describe()
        c = self.config
        line = (f"{c.method.upper()}: beta {c.dpo_beta}, {len(self.pairs):,} pairs ({self.pairs.incomplete} left out: "
                f"a reply kept no token within max_seq_length), {c.per_device_train_batch_size} pairs x "
                f"{c.gradient_accumulation_steps} = {self.rows_per_step} pairs per step; starts from "
                f"{self.init_adapter or 'the base model'}" + self._reference_note())
        self.summary_lines.append(line)
        log.info(line)

    def _pass(self, data: PreferenceData, reference: dict | None, batches, scale: float | None) -> dict:
        """Policy log-probs, the DPO or ORPO loss and its figures over ``batches``; backward (loss x ``scale``) when
        given."""
        totals = dict(loss=0.0, correct=0.0, margin=0.0, rewards_chosen=0.0, rewards_rejected=0.0,
                      logps_chosen=0.0, logps_rejected=0.0, chosen_nll=0.0, chosen_tokens=0.0, real=0.0, slots=0.0,
                      label_tokens=0.0, pairs=0)
        for pairs, rows in batches:
            with self._autocast():
                samples, sums, counts = reply_logprobs(self.model, data.samples, rows, self.pad_id, self.torch_device)
            free: dict[int, list[int]] = {}
            for j, sample in enumerate(samples):
                free.setdefault(sample, []).append(j)
            chosen = torch.tensor([free[int(data.chosen[k])].pop() for k in pairs], device=sums.device)
            rejected = torch.tensor([free[int(data.rejected[k])].pop() for k in pairs], device=sums.device)
            if reference is None:
                losses, chosen_rewards, rejected_rewards = orpo_loss(
                    sums[chosen] / counts[chosen], sums[rejected] / counts[rejected], self.config.dpo_beta)
            else:
                index = torch.tensor(pairs)
                losses, chosen_rewards, rejected_rewards = dpo_loss(
                    sums[chosen], sums[rejected], reference["chosen"][index].to(sums.device),
                    reference["rejected"][index].to(sums.device), self.config.dpo_beta,
                    rpo_alpha=self.config.rpo_alpha, chosen_tokens=counts[chosen])
            if scale is not None:
                (losses.sum() * scale).backward()
            margins = chosen_rewards - rejected_rewards
            totals["loss"] += float(losses.detach().sum())
            totals["correct"] += float((margins > 0).sum())
            totals["margin"] += float(margins.sum())
            totals["rewards_chosen"] += float(chosen_rewards.sum())
            totals["rewards_rejected"] += float(rejected_rewards.sum())
            totals["logps_chosen"] += float(sums[chosen].detach().sum())
            totals["logps_rejected"] += float(sums[rejected].detach().sum())
            totals["chosen_nll"] -= float(sums[chosen].detach().sum())
            totals["chosen_tokens"] += float(counts[chosen].sum())
            totals["label_tokens"] += float(counts.sum())
            width = max(sum(int(data.samples.offsets[i + 1] - data.samples.offsets[i]) for i in row) for row in rows)
            real = sum(int(data.samples.offsets[i + 1] - data.samples.offsets[i]) for row in rows for i in row)
            totals["real"] += real
            totals["slots"] += width * len(rows)
            totals["pairs"] += len(pairs)
        return totals

    @staticmethod
    def _figures(totals: dict) -> dict:
        n = max(1, totals["pairs"])
        return {"loss": totals["loss"] / n, "reward_accuracy": totals["correct"] / n,
                "reward_margin": totals["margin"] / n, "rewards_chosen": totals["rewards_chosen"] / n,
                "rewards_rejected": totals["rewards_rejected"] / n, "logps_chosen": totals["logps_chosen"] / n,
                "logps_rejected": totals["logps_rejected"] / n,
                "chosen_perplexity": math.exp(min(totals["chosen_nll"] / max(1.0, totals["chosen_tokens"]), 50.0))}

    def train_step(self, index: int) -> dict:
        """One optimizer step over the pairs the schedule assigns to step ``index`` (0-based)."""
        c = self.config
        started = time.perf_counter()
        epoch, first, end = self.schedule[index]
        batches = self.epoch_batches[epoch][first:end]
        pair_count = sum(len(pairs) for pairs, _ in batches)
        torch.manual_seed(c.seed * 1_000_003 + index * 7_919)  # dropout: same after a resume
        self.model.train()
        totals = self._pass(self.pairs, self.reference, batches, scale=1.0 / pair_count)
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, c.max_grad_norm if c.max_grad_norm > 0 else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tracker.observe(self.pairs.themes[k] for pairs, _ in batches for k in pairs)
        seconds = time.perf_counter() - started
        return {
            "step": index + 1, "epoch": round(epoch + end / len(self.epoch_batches[epoch]), 4), **self._figures(totals),
            "lr": lr, "grad_norm": float(grad_norm), "seconds": seconds, "tokens_per_s": totals["real"] / seconds,
            "real_tokens": int(totals["real"]), "label_tokens": int(totals["label_tokens"]),
            "packing_efficiency": totals["real"] / max(1.0, totals["slots"]),
            "padded_efficiency": self.padded_efficiency[epoch], "coverage": self.tracker.coverage,
            "entropy": self.tracker.entropy,
        }

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The loss, reward accuracy and margin, and the chosen replies' perplexity on the validation pairs."""
        self.model.eval()
        figures = self._figures(self._pass(self.val_pairs, self.val_reference, self.val_batches, scale=None))
        self.model.train()
        self.tracker.observe_eval(self.val_pairs.themes)
        summary = self.tracker.summary()
        return {"step": self.step, **figures, "perplexity": figures["chosen_perplexity"],
                "eval_themes": summary["eval_themes"], "eval_entropy": summary["eval_entropy"]}

    def _record(self, record: dict) -> None:
        history = self.history["train" if record.get("kind") == "train" else "eval"]
        if history and history[-1]["step"] == record.get("step"):
            record = {**record, **{k: history[-1][k] for k in DPO_FIELDS if k in history[-1]}}
        super()._record(record)

    def save_checkpoint(self) -> None:
        super().save_checkpoint()
        if self.config.plots:
            from rhizome.train.dpo_plots import plot_preferences

            plot_preferences(self.history, self.run_dir, self.config.method)

    def model_card(self, is_best: bool) -> str:
        c = self.config
        evals = self.history["eval"]
        lines = [f"- Preference training ({c.method.upper()}, beta {c.dpo_beta}) on `{c.train_file}`: "
                 f"{len(self.pairs):,} pairs; started from {self.init_adapter or 'the base model'}"
                 + self._reference_note()]
        if evals:
            lines.append(f"- Validation reward accuracy: {evals[0]['reward_accuracy']:.1%} before training, "
                         f"{evals[-1]['reward_accuracy']:.1%} at step {evals[-1]['step']}")
        card = super().model_card(is_best)
        head, _, tail = card.partition("\n```python")
        return head.rstrip("\n") + "\n" + "\n".join(lines) + "\n\n```python" + tail


def run(config: TrainConfig, observers: tuple[Observer, ...] | list[Observer] = ()) -> tuple[PreferenceTune, dict]:
    """Set up and train with DPO or ORPO (``config.method``; resuming when the output folder holds a checkpoint);
    as ``loop.run``."""
    recipe = PreferenceTune(config, Dist.from_env(), observers=observers)
    recipe.setup()
    return recipe, recipe.train()
