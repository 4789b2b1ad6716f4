"""The search space: its names are TrainConfig fields, a file narrows or extends it, and a trial's values
reach the model (rank and alpha change the adapter's shapes and scale)."""

import json

import optuna
import torch
import pytest

from rhizome.train.config import TrainConfig
from rhizome.train.model import LoraSetup, apply_lora, load_base_model
from rhizome.tune.config import parse_tune_args
from rhizome.tune.space import SearchSpaceError, default_space, load_space, suggest, trial_config


def test_train_flags_fix_settings_and_tune_flags_configure_the_study():
    tune, train = parse_tune_args(["-o", "study", "--trials", "5", "--pruner", "hyperband", "--lr", "1e-4",
                                   "--no-packing", "--batch-size", "4"], "test")
    assert (tune.tune_dir, tune.trials, tune.pruner) == ("study", 5, "hyperband")
    assert (train.learning_rate, train.use_sequence_packing, train.per_device_train_batch_size) == (1e-4, False, 4)
    assert train.output_dir == "" and train.max_train_tokens == 0  # the study sets them per trial
    with pytest.raises(SystemExit):
        parse_tune_args(["--max-train-tokens", "10"], "test")  # --trial-tokens is the study's budget


def test_a_trial_maps_to_a_train_config_and_its_budget():
    base = TrainConfig()
    space = default_space(base, 40_000)
    assert set(space) <= {f for f in TrainConfig.__dataclass_fields__}
    trial = optuna.trial.FixedTrial({"learning_rate": 2e-4, "lora_r": 8, "lora_alpha": 64, "lora_dropout": 0.1,
                                     "warmup_steps": 1, "weight_decay": 0.01, "theme_temperature": 2.0,
                                     "use_sequence_packing": False})
    config = trial_config(base, suggest(trial, space), output_dir="t/trial-0003", max_train_tokens=40_000)
    assert isinstance(config, TrainConfig)
    assert (config.learning_rate, config.lora_r, config.lora_alpha, config.use_sequence_packing) == (2e-4, 8, 64, False)
    assert (config.output_dir, config.max_train_tokens, base.lora_r) == ("t/trial-0003", 40_000, 16)


def test_a_search_space_file_narrows_extends_and_removes(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"lora_r": {"choices": [8, 16]}, "lora_dropout": None,
                                "max_grad_norm": {"low": 0.3, "high": 3.0, "log": True}}))
    space = load_space(str(path), TrainConfig(), 40_000)
    assert space["lora_r"] == {"choices": [8, 16]} and "lora_dropout" not in space
    assert space["max_grad_norm"]["log"] and "learning_rate" in space
    path.write_text(json.dumps({"lora_rank": {"choices": [8]}}))
    with pytest.raises(SearchSpaceError, match=r"space\.json: 'lora_rank' is not a TrainConfig field"):
        load_space(str(path), TrainConfig(), 40_000)
    path.write_text(json.dumps({"learning_rate": {"low": 0, "high": 1e-3, "log": True}}))
    with pytest.raises(SearchSpaceError, match="log scale"):
        load_space(str(path), TrainConfig(), 40_000)


def test_rank_and_alpha_change_the_adapter_shapes_and_scale(tiny_model_dir):
    space = default_space(TrainConfig(), 40_000)
    adapters = {}
    for r, alpha in ((4, 8), (32, 128)):
        trial = optuna.trial.FixedTrial({**{k: v["choices"][0] if "choices" in v else v["low"]
                                            for k, v in space.items()}, "lora_r": r, "lora_alpha": alpha})
        config = trial_config(TrainConfig(model=str(tiny_model_dir)), suggest(trial, space))
        base = load_base_model(config.model, str(tiny_model_dir), "none", "cpu", torch.float32)
        model = apply_lora(base, LoraSetup(config.lora_r, config.lora_alpha, config.lora_dropout,
                                           tuple(config.lora_target_modules), False), "none")
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        adapters[r] = (tuple(layer.lora_A["default"].weight.shape), tuple(layer.lora_B["default"].weight.shape),
                       layer.scaling["default"])
    assert adapters[4] == ((4, 64), (64, 4), 2.0)
    assert adapters[32] == ((32, 64), (64, 32), 4.0)
