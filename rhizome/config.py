"""One dataclass per stage is the single source of its flags, defaults, ``--help`` and saved config.

A stage declares its settings with :func:`option`; :func:`parse_args` turns the
dataclass into an ``argparse`` parser (optionally seeded from ``--config FILE``,
a JSON file of the same fields) and :func:`save_config` writes the effective
settings next to the stage's outputs so an output folder explains itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from rhizome import atomic

C = TypeVar("C")


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           positional: bool = False, choices: Sequence[Any] | None = None, metavar: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that also describes its command-line flag."""
    metadata = {"help": help, "flag": flag, "positional": positional, "choices": choices, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, is_list) for the annotations we use: T, T | None, list[T]."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple):
        return (args[0] if args else str), True
    if args and origin is not None:
        return _base_type(args[0])
    return annotation, False


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help; the description's own line breaks (usage examples) kept."""


def build_parser(config_cls: type, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        kind, is_list = _base_type(hints[field.name])
        default = _field_default(field)
        kwargs: dict[str, Any] = {"help": meta.get("help") or " ", "default": default}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if is_list:
                kwargs["nargs"] = "*"
        if meta.get("positional"):
            kwargs.pop("default")
            if is_list:
                kwargs["nargs"] = "*"
                kwargs["default"] = default
            else:
                kwargs["nargs"] = "?"
                kwargs["default"] = default
            parser.add_argument(field.name, **kwargs)
        else:
            flags = [f"--{field.name.replace('_', '-')}"]
            if meta.get("flag"):
                flags.insert(0, meta["flag"])
            parser.add_argument(*flags, dest=field.name, **kwargs)
    parser.add_argument("--config", dest="_config_file", metavar="FILE", default=None,
                        help="JSON file of settings (same names as the flags, with underscores); flags override it")
    return parser


def parse_args(config_cls: type[C], description: str, argv: Sequence[str] | None = None,
               epilog: str | None = None, extra: typing.Callable[[argparse.ArgumentParser], None] | None = None,
               ) -> tuple[C, argparse.Namespace]:
    """Parse ``argv`` into ``config_cls``; returns the config and the raw namespace (for ``extra`` flags)."""
    parser = build_parser(config_cls, description, epilog)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    names = {f.name for f in dataclasses.fields(config_cls)}
    if args._config_file:
        file_values = load_config_file(args._config_file, names)
        parser.set_defaults(**file_values)
        args = parser.parse_args(argv)
    values = {name: getattr(args, name) for name in names}
    return config_cls(**values), args


def load_config_file(path: str | os.PathLike, allowed: set[str]) -> dict[str, Any]:
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read config file {path}: {exc}")
    if not isinstance(values, dict):
        raise SystemExit(f"error: config file {path} must hold a JSON object of settings")
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise SystemExit(f"error: config file {path} has unknown settings: {', '.join(unknown)}")
    return values


def to_dict(config: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def save_config(config: Any, path: str | os.PathLike, **extra: Any) -> None:
    """Write the effective settings (plus e.g. library versions) as JSON, atomically."""
    atomic.write_json(path, {**to_dict(config), **extra})
