import json
from dataclasses import dataclass

import pytest

from rhizome.config import option, parse_args, save_config


@dataclass
class DemoConfig:
    inputs: list[str] = option(default_factory=list, positional=True, help="files")
    workers: int = option(2, "worker processes")
    strict: bool = option(False, "fail on skipped files")
    output: str = option("out.json", "output file", flag="-o")
    model: str | None = option(None, "model")


def test_defaults_and_flags():
    config, _ = parse_args(DemoConfig, "demo", [])
    assert config == DemoConfig()
    config, _ = parse_args(DemoConfig, "demo", ["a", "b", "--workers", "3", "--strict", "-o", "x.json"])
    assert config == DemoConfig(inputs=["a", "b"], workers=3, strict=True, output="x.json")
    config, _ = parse_args(DemoConfig, "demo", ["--no-strict"])
    assert config.strict is False


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"workers": 7, "model": "m"}))
    config, _ = parse_args(DemoConfig, "demo", ["--config", str(path), "--workers", "1"])
    assert (config.workers, config.model) == (1, "m")


def test_unknown_setting_in_config_file_is_an_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"wokers": 7}))
    with pytest.raises(SystemExit, match="wokers"):
        parse_args(DemoConfig, "demo", ["--config", str(path)])


def test_help_lists_every_setting(capsys):
    with pytest.raises(SystemExit):
        parse_args(DemoConfig, "demo", ["--help"])
    text = capsys.readouterr().out
    for flag in ("--workers", "--strict", "-o", "--model", "worker processes"):
        assert flag in text


def test_saved_config_round_trips(tmp_path):
    config = DemoConfig(inputs=["a"], workers=4)
    save_config(config, tmp_path / "cfg.json", version="x")
    saved = json.loads((tmp_path / "cfg.json").read_text())
    assert saved.pop("version") == "x"
    assert DemoConfig(**saved) == config
