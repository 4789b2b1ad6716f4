"""The training settings as a form, generated from :class:`~rhizome.train.config.TrainConfig`.

Every field's flag, default, help, choices and type come from the dataclass and its :func:`rhizome.config.option`
metadata, so the form cannot drift from ``train_script.py --help``. A filled form becomes the exact command line
that runs (:func:`command_line`), and a recorded command line becomes a form again (:func:`config_from_argv`),
which is how a run is resumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

from rhizome.config import _base_type, _field_default, build_parser
from rhizome.errors import UserError
from rhizome.train.config import TrainConfig

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train_script.py"
# Fields naming files or folders: the page may only point them inside the working folder.
PATH_FIELDS = ("train_file", "validation_file", "output_dir", "cache_dir", "init_adapter")


class FormError(UserError):
    """A setting the page cannot run: wrong type, a path outside the working folder."""


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    flag: str               # the long flag train_script.py takes (its first spelling)
    kind: type              # bool, int, float or str (a list is str items)
    is_list: bool
    default: Any
    help: str
    choices: tuple | None


def form_fields(config_cls: type = TrainConfig) -> list[Field]:
    """The form's fields, in the dataclass's order, read from the same metadata as the command line."""
    hints = typing.get_type_hints(config_cls)
    fields = []
    for field in dataclasses.fields(config_cls):
        kind, is_list = _base_type(hints[field.name])
        flag = field.metadata.get("flag") or f"--{field.name.replace('_', '-')}"
        choices = field.metadata.get("choices")
        fields.append(Field(field.name, flag, kind, is_list, _field_default(field), field.metadata.get("help", ""),
                            tuple(choices) if choices else None))
    return fields


def config_from_values(values: Sequence[Any], fields: Sequence[Field] | None = None) -> TrainConfig:
    """The form's values (one per field, as the widgets return them) as a TrainConfig; wrong types raise FormError."""
    fields = form_fields() if fields is None else fields
    settings = {}
    for field, value in zip(fields, values, strict=True):
        settings[field.name] = _typed(field, value)
    return TrainConfig(**settings)


def _typed(field: Field, value: Any) -> Any:
    if field.is_list:
        return shlex.split(value or "") if isinstance(value, str) else [str(v) for v in value or ()]
    if field.kind is bool:
        return bool(value)
    if field.kind in (int, float):
        if value is None or value == "":
            raise FormError(f"{field.flag} needs a number")
        number = float(value)
        if field.kind is int and number != int(number):
            raise FormError(f"{field.flag} needs a whole number (got {value})")
        return field.kind(number)
    text = "" if value is None else str(value).strip()
    if field.choices and text not in field.choices:
        raise FormError(f"{field.flag} must be one of {', '.join(map(str, field.choices))} (got {text!r})")
    return text


def form_values(config: TrainConfig, fields: Sequence[Field] | None = None) -> list[Any]:
    """What the widgets show for ``config`` (the inverse of :func:`config_from_values`)."""
    fields = form_fields() if fields is None else fields
    return [shlex.join(getattr(config, f.name)) if f.is_list else getattr(config, f.name) for f in fields]


def train_args(config: TrainConfig, fields: Sequence[Field] | None = None) -> list[str]:
    """``train_script.py``'s arguments for ``config``: only the settings that differ from the defaults."""
    args: list[str] = []
    for field in form_fields() if fields is None else fields:
        value = getattr(config, field.name)
        if value == field.default:
            continue
        if field.kind is bool:
            args.append(field.flag if value else f"--no-{field.flag[2:]}")
        elif field.is_list:
            args += [field.flag, *value]
        else:
            args += [field.flag, str(value)]
    return args


def command_line(config: TrainConfig) -> list[str]:
    """The argv the page runs (never through a shell)."""
    return [sys.executable, str(TRAIN_SCRIPT), *train_args(config)]


def shown_command(argv: Sequence[str]) -> str:
    """The command as the page shows it: ``python train_script.py ...`` with no folder of the machine in it."""
    from rhizome.chat.app import hide_paths

    program = ["python", Path(argv[1]).name] if len(argv) > 1 and argv[1].endswith(".py") else list(argv[:2])
    return hide_paths(shlex.join([*program, *argv[2:]]))


def config_from_argv(args: Sequence[str]) -> TrainConfig:
    """A TrainConfig from ``train_script.py``'s arguments (a run's recorded command); bad ones raise FormError."""
    parser = build_parser(TrainConfig, "train_script.py")
    parser.exit_on_error = False
    try:
        namespace, unknown = parser.parse_known_args(list(args))
    except argparse.ArgumentError as exc:
        raise FormError(f"cannot read the recorded command line: {exc}") from None
    if unknown or namespace._config_file:
        raise FormError(f"the recorded command line has arguments the page cannot rerun: "
                        f"{shlex.join(unknown or ['--config', namespace._config_file])}")
    return TrainConfig(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(TrainConfig)})


def check_paths(config: TrainConfig, root: str | Path = ".") -> None:
    """Refuse a file or folder setting that leaves the working folder (``..``, an absolute path elsewhere, a link)."""
    root = Path(root).resolve()
    for name in PATH_FIELDS:
        value = getattr(config, name)
        if name == "output_dir" and not value:
            value = str(config.run_dir)
        if not (root / value).resolve().is_relative_to(root):
            raise FormError(f"{name} {value!r} is outside the working folder; the page only reads and writes inside "
                            "it: give a path relative to it")
    if (root / config.run_dir).resolve() == root:
        raise FormError("output_dir must be a folder inside the working folder, not the working folder itself")
