"""Build an argparse CLI from a frozen config dataclass and run a stage with clean errors.

Each field is declared with :func:`arg`, which carries its help text, short aliases and
argparse details; the dataclass docstring becomes the description. A field declared with
:func:`part` holds a parameter part declared once elsewhere (GP, PPO or CMA-ES parameters):
its documented fields become options of their own (flat) names, which are the flags, the
yaml keys and the keys of a manifest's config. Tests build the dataclass directly (flat
names work there too, see :func:`composed`) and call the stage's ``run(cfg)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml

from diffses.errors import UserError
from diffses.io import read_yaml_mapping

T = TypeVar("T")


def arg(default: Any = dataclasses.MISSING, help: str = "", aliases: Sequence[str] = (),
        choices: Sequence[Any] | None = None, negative: str | None = None,
        default_factory: Any = dataclasses.MISSING) -> Any:
    """A documented config field. ``negative`` names the flag that sets a bool to False."""
    meta = {"help": help, "aliases": tuple(aliases), "choices": choices, "negative": negative}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def part(default: Any, rename: dict[str, str] | None = None,
         help: dict[str, str] | None = None) -> Any:
    """A config field holding a parameter part (a frozen dataclass whose fields carry
    ``metadata["help"]``). Each documented field of the part is an option named as the field
    (or as ``rename`` says); ``default`` holds this stage's defaults and ``help`` replaces a
    field's help text here."""
    return dataclasses.field(default=default, metadata={
        "part": True, "rename": rename or {}, "part_help": help or {}})


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a config: a field of its own (``part`` None) or a field of a part."""

    name: str
    part: str | None
    attr: str
    hint: Any
    default: Any
    required: bool
    help: str
    aliases: tuple[str, ...] = ()
    choices: Sequence[Any] | None = None
    negative: str | None = None


@functools.cache
def options(cls: type) -> tuple[Option, ...]:
    """The options of the config dataclass ``cls``, parts' options in the place of the part."""
    hints = typing.get_type_hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("part"):
            sub_hints = typing.get_type_hints(type(f.default))
            out += [Option(meta["rename"].get(sub.name, sub.name), f.name, sub.name,
                           sub_hints[sub.name], getattr(f.default, sub.name), False,
                           meta["part_help"].get(sub.name, sub.metadata["help"]),
                           choices=sub.metadata.get("choices"))
                    for sub in dataclasses.fields(f.default) if "help" in sub.metadata]
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(Option(f.name, None, f.name, hints[f.name], default, required,
                          meta.get("help", ""), meta.get("aliases", ()), meta.get("choices"),
                          meta.get("negative")))
    names = [o.name for o in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise TypeError(f"{cls.__name__}: option(s) {', '.join(clash)} declared twice")
    return tuple(out)


def nest(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from option names: a part's options replace fields of the
    part (the one given in ``values``, else the stage's default); a bad value is a UserError."""
    out = dict(values)
    changes: dict[str, dict[str, Any]] = {}
    for o in options(cls):
        if o.part is not None and o.name in out:
            changes.setdefault(o.part, {})[o.attr] = out.pop(o.name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, change in changes.items():
        try:
            out[name] = dataclasses.replace(out.get(name, defaults[name]), **change)
        except ValueError as err:
            raise UserError(str(err)) from None
    return out


def composed(cls: type[T]) -> type[T]:
    """Let a config dataclass with parts be built from option names as well:
    ``DistillConfig(population_size=200)`` sets ``gp.population_size``."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, **values: Any) -> None:
        init(self, **nest(cls, values))

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


_KEY = re.compile(r"[A-Za-z_][\w.-]*")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Overrides of a stage's settings file: ``key=value`` items, values read as yaml.

    One grammar for the teacher's hyperparameters and SPACE's config (dotted keys reach into
    sections): ``n_steps=64``, ``train.max_steps=2000``. rl-zoo's ``key:value`` and SPACE's
    ``key value`` pairs are read too, so published commands keep working.
    """
    out: dict[str, Any] = {}
    tokens = list(items)
    i = 0
    while i < len(tokens):
        item = tokens[i]
        match = _KEY.match(item)
        if match is None:
            raise UserError(f"override '{item}' is not of the form key=value")
        key, rest = match.group(), item[match.end():]
        if rest[:1] in ("=", ":"):
            text = rest[1:]
        elif rest:
            raise UserError(f"override '{item}' is not of the form key=value")
        elif i + 1 < len(tokens):
            i += 1
            text = tokens[i]
        else:
            raise UserError(f"override '{item}' has no value: write {item}=VALUE")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"cannot read the value {text!r} of '{key}': {err}") from None
        i += 1
    return out


def flat_values(cfg: Any) -> dict[str, Any]:
    """The config's option values by option name (a manifest's config, a yaml file)."""
    return {o.name: getattr(getattr(cfg, o.part), o.attr) if o.part else getattr(cfg, o.name)
            for o in options(type(cfg))}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(cls: type, prog: str | None = None,
                 docs: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per option of the config dataclass ``cls``; ``docs``
    (the stage's page, e.g. ``docs/teacher.md``) closes the ``--help`` text."""
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip(),
                                     epilog=f"docs: {docs}" if docs else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for o in options(cls):
        names = [*o.aliases, _flag(o.name)]
        text = o.help
        if not o.required and o.default not in (None, ()) and "default" not in text:
            text += f" (default: {o.default})"
        kwargs: dict[str, Any] = {"help": text, "dest": o.name}
        if o.hint is bool:
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*names, action="store_true", default=o.default, **kwargs)
            negative = o.negative or "--no-" + o.name.replace("_", "-")
            group.add_argument(negative, action="store_false", dest=o.name,
                               help=f"set {_flag(o.name)} off")
            continue
        origin = typing.get_origin(o.hint)
        args = [a for a in typing.get_args(o.hint) if a is not type(None)]
        if origin in (tuple, list):
            kwargs["nargs"] = "*"
            kwargs["type"] = args[0] if args else str
        elif args:
            kwargs["type"] = args[0]
        else:
            kwargs["type"] = o.hint
        if o.choices:
            kwargs["choices"] = o.choices
        parser.add_argument(*names, default=o.default, required=o.required, **kwargs)
    return parser


def known_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The options of ``cls`` in ``values`` (such as a manifest's stored config), lists given
    for tuple options turned into tuples."""
    hints = {o.name: o.hint for o in options(cls)}
    return {k: tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v
            for k, v in values.items() if k in hints}


#: How a value of each kind is named in messages: one value, and a list of them.
_KIND_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
               float: ("a number", "numbers"), str: ("a string", "strings")}


def _scalar(kind: Any, value: Any) -> Any:
    """``value`` as ``kind`` (what the flag's type would make of it; ``1e6``, which yaml
    reads as a string, is a number), or ValueError."""
    if kind not in _KIND_NAMES:
        return kind(value)
    if isinstance(value, bool) != (kind is bool) or isinstance(value, (list, dict)) or \
            value is None:
        raise ValueError(value)
    if kind in (int, float) and isinstance(value, str):
        value = float(value)
    if kind is int and not float(value).is_integer():
        raise ValueError(value)
    return kind(value)


def option_value(o: Option, value: Any) -> Any:
    """A value for option ``o`` from a yaml file, checked as its flag checks a value given on
    the command line (type, list or single value, choices); a bad one is a ValueError whose
    message says what the option takes."""
    args = typing.get_args(o.hint)
    if value is None and (type(None) in args or o.default is None):
        return None
    kinds = [a for a in args if a not in (type(None), Ellipsis)]
    listed = typing.get_origin(o.hint) in (tuple, list)
    kind = kinds[0] if kinds else (str if listed else o.hint)
    one, many = _KIND_NAMES.get(kind, (kind.__name__, kind.__name__ + " values"))
    try:
        if listed:
            if not isinstance(value, (list, tuple)):
                raise TypeError(value)
            out: Any = tuple(_scalar(kind, v) for v in value)
        else:
            out = _scalar(kind, value)
    except (TypeError, ValueError):
        taken = f"takes a list of {many}" if listed else f"must be {one}"
        raise ValueError(f"{taken}, not {value!r}") from None
    items = out if listed else (out,)
    if o.choices and any(v not in o.choices for v in items):
        raise ValueError(f"must be one of {', '.join(map(str, o.choices))}, not {value!r}")
    return out


def yaml_values(cls: type, path: str | Path) -> dict[str, Any]:
    """Option values from a yaml file for the config dataclass ``cls`` (keys as option names,
    dashes allowed), checked as flags are; an unknown key, a bad value or a file that is not
    a yaml mapping is a UserError naming the file."""
    data = read_yaml_mapping(path)
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    by_name = {o.name: o for o in options(cls)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = option_value(by_name[name], value)
        except ValueError as err:
            raise UserError(f"config file {path}: {name} {err}") from None
    return checked


def from_yaml(cls: type[T], path: str | Path, **overrides: Any) -> T:
    """The config from a yaml file, with ``overrides`` winning (for use from Python)."""
    return cls(**{**yaml_values(cls, path), "config": str(path), **overrides})


def parse(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None,
          docs: str | None = None) -> T:
    """Parse ``argv`` into an instance of the config dataclass ``cls``.

    A config with a ``config`` field takes ``--config FILE.yaml``: its values become the
    defaults, so flags given on the command line win.
    """
    parser = build_parser(cls, prog, docs)
    if "config" in {o.name for o in options(cls)}:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(argv)
        if known.config:
            parser.set_defaults(**yaml_values(cls, known.config))
    return cls(**known_values(cls, vars(parser.parse_args(argv))))


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
         prog: str | None = None, docs: str | None = None) -> int:
    """Parse the config and run the stage (``docs``: the stage's page, named by ``--help``);
    a :class:`UserError` prints one line, exit 2."""
    return guarded(lambda: run(parse(cls, argv, prog, docs)))
