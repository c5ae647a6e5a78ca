"""Build an argparse CLI from a frozen config dataclass and run a stage with clean errors.

Each field is declared with :func:`arg`, which carries its help text, short aliases and
argparse details; the dataclass docstring becomes the description. Tests build the
dataclass directly and call the stage's ``run(cfg)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml

from diffses.errors import UserError

T = TypeVar("T")


def arg(default: Any = dataclasses.MISSING, help: str = "", aliases: Sequence[str] = (),
        choices: Sequence[Any] | None = None, negative: str | None = None,
        default_factory: Any = dataclasses.MISSING) -> Any:
    """A documented config field. ``negative`` names the flag that sets a bool to False."""
    meta = {"help": help, "aliases": tuple(aliases), "choices": choices, "negative": negative}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cls: type, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        hint = hints[f.name]
        names = [*meta.get("aliases", ()), _flag(f.name)]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        text = meta.get("help", "")
        if not required and default not in (None, ()) and "default" not in text:
            text += f" (default: {default})"
        kwargs: dict[str, Any] = {"help": text, "dest": f.name}
        if hint is bool:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*names, action="store_true", default=default, **kwargs)
            negative = meta.get("negative") or "--no-" + f.name.replace("_", "-")
            group.add_argument(negative, action="store_false", dest=f.name,
                               help=f"set {_flag(f.name)} off")
            continue
        origin = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if origin in (tuple, list):
            kwargs["nargs"] = "*"
            kwargs["type"] = args[0] if args else str
        elif args:
            kwargs["type"] = args[0]
        else:
            kwargs["type"] = hint
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        parser.add_argument(*names, default=default, required=required, **kwargs)
    return parser


def yaml_values(cls: type, path: str | Path) -> dict[str, Any]:
    """Field values from a yaml file for the config dataclass ``cls`` (keys as field names,
    dashes allowed); an unknown key or a file that is not a yaml mapping is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid yaml: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of option: value")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return {k: tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v
            for k, v in values.items()}


def from_yaml(cls: type[T], path: str | Path, **overrides: Any) -> T:
    """The config from a yaml file, with ``overrides`` winning (for use from Python)."""
    return cls(**{**yaml_values(cls, path), "config": str(path), **overrides})


def parse(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """Parse ``argv`` into an instance of the config dataclass ``cls``.

    A config with a ``config`` field takes ``--config FILE.yaml``: its values become the
    defaults, so flags given on the command line win.
    """
    parser = build_parser(cls, prog)
    if "config" in {f.name for f in dataclasses.fields(cls)}:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(argv)
        if known.config:
            parser.set_defaults(**yaml_values(cls, known.config))
    ns = parser.parse_args(argv)
    values = vars(ns)
    hints = typing.get_type_hints(cls)
    for name, hint in hints.items():
        if typing.get_origin(hint) is tuple and values.get(name) is not None:
            values[name] = tuple(values[name])
    return cls(**values)


def guarded(action: Callable[[], Any]) -> int:
    """Run ``action``; a :class:`UserError` prints one line (exit 2), Ctrl-C exits 130."""
    try:
        action()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main(cls: type[T], run: Callable[[T], Any], argv: Sequence[str] | None = None,
         prog: str | None = None) -> int:
    """Parse the config and run the stage; a :class:`UserError` prints one line, exit 2."""
    return guarded(lambda: run(parse(cls, argv, prog)))
