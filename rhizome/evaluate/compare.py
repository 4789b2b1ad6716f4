"""``run(EvalConfig)``: score the base model and each adapter on the test split, write the report.

The base model is loaded once; each adapter is attached to it with ``PeftModel.from_pretrained``,
scored, and removed again with ``unload()``, so comparing N adapters costs one base load. The base is
evaluated in fp32 (also for adapters trained with NF4 QLoRA): the comparison is between weights, not
between numeric formats. With ``qa``, the chat is then asked questions with known answers (``qa_run.py``).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from rhizome.config import save_config
from rhizome.device import detect_device
from rhizome.evaluate.adapters import (
    EvalInputError, choose_base_model, default_adapter, resolve_adapters, trained_on,
)
from rhizome.evaluate.config import EvalConfig
from rhizome.evaluate import preferences
from rhizome.evaluate.metrics import score_pairs
from rhizome.evaluate.report import build_report, write_report
from rhizome.evaluate.themes import pair_groups, rare_themes, theme_members, training_theme_counts
from rhizome.log import get_logger
from rhizome.train.config import DEFAULT_MODEL
from rhizome.train.data import load_pairs, tokenize_pairs
from rhizome.train.model import load_base_model, load_tokenizer, resolve_model

log = get_logger(__name__)

CONFIG_FILE = "eval_config.json"


def _check_inputs(config: EvalConfig) -> None:
    for path, flag in ((config.test_file, "--test-file"), (config.train_file, "--train-file")):
        if not Path(path).is_file():
            raise EvalInputError(f"{path} not found. Create the dataset splits with `python data_formatter.py` "
                                 f"or pass {flag}.")


def run(config: EvalConfig) -> dict:
    """Evaluate and write eval_report.json / eval_report.md / plots; returns the report (see ``report.py``)."""
    started = time.perf_counter()
    _check_inputs(config)
    given = list(config.adapters) or [default_adapter(config.base_model or DEFAULT_MODEL)]
    adapters = resolve_adapters(given)
    base_name = choose_base_model(config.base_model, adapters)
    output_dir = Path(config.output_dir or given[0])

    device = detect_device(config.force_cpu)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch_device = torch.device(device.torch_device)
    model_path = resolve_model(base_name)
    tokenizer = load_tokenizer(base_name, model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    pairs = load_pairs(config.test_file)
    if config.max_samples > 0:
        pairs = pairs[:config.max_samples]
    data = tokenize_pairs(pairs, tokenizer, config.max_seq_length, config.loss_on)
    train_counts = training_theme_counts(p["themes"] for p in load_pairs(config.train_file))
    rare = rare_themes(data.themes, train_counts, config.rare_max_pairs)
    groups = pair_groups(data.themes, rare, config.rare_rule)
    members = theme_members(data.themes)
    log.info("%d test pairs (%d assistant tokens) on %s; %d of %d test themes rare (<= %d training pairs): "
             "%d rare pairs, %d common", len(data), int(data.targets.sum()), device.describe(), len(rare),
             len(members), config.rare_max_pairs, len(groups["rare"]), len(groups["common"]))

    preference_path = preferences.test_file(config)
    preference_data = None
    if preference_path is not None:
        preference_data, kinds = preferences.load(preference_path, tokenizer, config.max_seq_length,
                                                  config.max_samples)
    preference_scores = {}

    base = load_base_model(base_name, model_path, "none", str(torch_device), torch.float32)
    scores = {}
    timings = {}
    for adapter in [None, *adapters]:
        name = "base" if adapter is None else adapter.name
        model = base
        if adapter is not None:
            from peft import PeftModel

            try:
                with warnings.catch_warnings():
                    # peft calls a transformers 5 property deprecated for v6: nothing a user can act on.
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                    model = PeftModel.from_pretrained(base, str(adapter.path))
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise EvalInputError(f"cannot load the adapter {adapter.path} onto {base_name}: {exc}") from exc
        clock = time.perf_counter()
        scores[name] = score_pairs(model, data, pad_id, torch_device, config.batch_size, desc=f"evaluating {name}")
        timings[name] = time.perf_counter() - clock
        overall = scores[name].summarize()
        log.info("%s: loss %.4f, perplexity %.2f, token accuracy %.1f%% (%.1f s)", name, overall["loss"],
                 overall["perplexity"], 100 * overall["token_accuracy"], timings[name])
        if preference_data is not None:
            preference_scores[name] = preferences.score(model, preference_data, kinds, pad_id, torch_device,
                                                        config.batch_size, config.max_seq_length)
            log.info("%s: preference accuracy %.1f%%, mean margin %.3f nats (%d pairs)", name,
                     100 * preference_scores[name]["accuracy"], preference_scores[name]["mean_margin"],
                     len(preference_data))
        if adapter is not None:
            base = model.unload()

    report = build_report(
        config, base_model=base_name, adapters=adapters, scores=scores, groups=groups, members=members,
        rare=rare, train_counts=train_counts, trained_on={a.name: trained_on(a) for a in adapters},
        pair_ids=data.ids, data_stats=data.stats, device=device.describe(), timings=timings,
    )
    if preference_data is not None:
        report["preferences"] = {"file": str(preference_path), "pairs": len(preference_data),
                                 "models": preference_scores}
    if config.qa:
        from rhizome.evaluate.qa_run import run_qa

        report["qa"] = run_qa(config, base_name, adapters)
    report["seconds"] = time.perf_counter() - started
    write_report(report, output_dir, plots=config.plots, plot_themes=config.plot_themes)
    save_config(config, output_dir / CONFIG_FILE)
    return report
