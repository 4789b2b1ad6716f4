"""The Start form is TrainConfig itself: same fields, defaults, help and choices; its command parses back to it."""

import dataclasses
import os
import shlex

import pytest

from rhizome.config import build_parser, parse_args
from rhizome.studio.form import (FormError, check_paths, command_line, config_from_argv, config_from_values,
                                 form_fields, form_values, shown_command, train_args)
from rhizome.train.config import TrainConfig


def test_every_trainconfig_field_is_on_the_form_with_its_default_help_and_choices():
    parser = build_parser(TrainConfig, "")
    actions = {action.dest: action for action in parser._actions}
    fields = form_fields()
    assert [f.name for f in fields] == [f.name for f in dataclasses.fields(TrainConfig)]
    for field in fields:
        action = actions[field.name]
        assert field.flag in action.option_strings
        assert field.default == action.default and field.help == action.help
        assert field.choices == (tuple(action.choices) if action.choices else None)
    assert form_values(TrainConfig()) == [shlex.join(f.default) if f.is_list else f.default for f in fields]


def test_a_filled_form_is_the_command_line_that_parses_back_to_the_same_settings():
    config = dataclasses.replace(TrainConfig(), model="tiny", output_dir="runs/a", use_sequence_packing=False,
                                 max_steps=12, learning_rate=1e-4, lr_scheduler_type="cosine",
                                 lora_target_modules=["q_proj", "v_proj"], fresh=True)
    values = form_values(config)
    assert config_from_values(values) == config
    argv = command_line(config)
    assert argv[1].endswith("train_script.py") and "--no-packing" in argv
    parsed, _ = parse_args(TrainConfig, "", argv[2:])
    assert parsed == config
    assert config_from_argv(argv[2:]) == config
    assert train_args(TrainConfig()) == []  # only what differs from the defaults is spelled out
    assert shown_command(argv).startswith("python train_script.py --model tiny -o runs/a")
    assert os.sep + "work" not in shown_command(argv)


def test_wrong_types_and_choices_are_refused_with_the_flag_named():
    values = form_values(TrainConfig())
    names = [f.name for f in form_fields()]
    bad = list(values)
    bad[names.index("max_steps")] = 2.5
    with pytest.raises(FormError, match="--max-steps"):
        config_from_values(bad)
    bad = list(values)
    bad[names.index("quantization")] = "int3"
    with pytest.raises(FormError, match="--quantization"):
        config_from_values(bad)
    with pytest.raises(FormError, match="--config"):
        config_from_argv(["--config", "elsewhere.json"])
    with pytest.raises(FormError, match="--unknown"):
        config_from_argv(["--unknown", "1"])


@pytest.mark.parametrize("field, value", [("train_file", "../secret.jsonl"), ("validation_file", "/etc/passwd"),
                                          ("output_dir", "../../elsewhere"), ("cache_dir", "link/cache"),
                                          ("init_adapter", "/home/x/final"), ("output_dir", ".")])
def test_paths_outside_the_working_folder_are_refused(tmp_path, field, value):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "link").symlink_to(tmp_path)
    with pytest.raises(FormError, match=field):
        check_paths(dataclasses.replace(TrainConfig(), **{field: value}), tmp_path / "work")


def test_paths_inside_the_working_folder_are_accepted(tmp_path):
    check_paths(dataclasses.replace(TrainConfig(), train_file="data/a.jsonl", output_dir="runs/one"), tmp_path)
    check_paths(TrainConfig(), tmp_path)
