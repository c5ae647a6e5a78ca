"""SPACE configuration: frozen dataclasses from a per-game yaml, with dotted-key overrides.

A config is passed explicitly to everything that needs it (there is no global config object).
``load_config(path, overrides)`` reads the yaml, applies overrides such as
``{"train.max_steps": 2000, "device": "cuda:0"}`` (from ``diffses.cli.parse_overrides``) and checks every
key and type, so a typo or a wrong value is a :class:`UserError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from diffses.errors import UserError
from diffses.io import read_yaml_mapping


@dataclass(frozen=True)
class Anneal:
    """A value that moves linearly from ``start`` (up to step ``begin``) to ``end`` (from step
    ``finish`` on)."""

    start: float
    end: float
    begin: int = 0
    finish: int = 0

    def at(self, step: int) -> float:
        if step <= self.begin or self.finish <= self.begin:
            return self.start if step <= self.begin else self.end
        if step >= self.finish:
            return self.end
        frac = (step - self.begin) / (self.finish - self.begin)
        return self.start + frac * (self.end - self.start)


@dataclass(frozen=True)
class DataConfig:
    """How a native frame becomes the model's input: crop (native pixels), then resize."""

    #: rows top..bottom and columns left..right of the native frame kept (None: all)
    crop: tuple[int, int, int, int] | None = None
    #: model input (height, width) after the crop
    image_size: tuple[int, int] = (128, 128)


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes. The image encoder halves the resolution once per entry of
    ``enc_channels``, so a grid cell is ``2 ** len(enc_channels)`` pixels wide and high."""

    grid: tuple[int, int] = (16, 16)
    enc_channels: tuple[int, ...] = (16, 32, 64)
    feat_channels: int = 64
    glimpse: int = 8
    #: a glimpse is sampled at this many points per glimpse pixel and axis, then averaged
    #: (anti-aliasing: a large box does not skip a small object)
    glimpse_supersample: int = 2
    glimpse_hidden: int = 128
    z_what: int = 16
    #: a cell's object may move its centre by up to this many cells from the cell centre
    shift_range: float = 0.5
    #: an object is drawn into a window of this many cells (odd) around its cell
    render_cells: int = 3
    #: cells whose z_pres sample is below this are neither encoded nor drawn (faster, but a
    #: cell switched off early gets no gradient to switch back on); 0 draws every cell
    render_threshold: float = 0.0
    bg_components: int = 3
    z_mask: int = 4
    z_comp: int = 4
    bg_channels: int = 16
    #: resolution (height, width) the background masks and components are decoded at
    bg_decode_size: tuple[int, int] = (32, 32)
    fg_sigma: float = 0.2
    bg_sigma: float = 0.1


@dataclass(frozen=True)
class LossConfig:
    """ELBO priors and annealed schedules. Box size is ``sigmoid(z_scale)`` of the image side."""

    pres_prior: Anneal = Anneal(0.1, 0.01, 0, 1000)
    tau: Anneal = Anneal(2.5, 0.5, 0, 1000)
    scale_mean: Anneal = Anneal(-3.3, -3.3)
    scale_std: float = 0.5
    #: during the first steps the foreground alpha is this constant everywhere
    fix_alpha_steps: int = 0
    fix_alpha_value: float = 0.2
    #: penalty on an object's alpha beyond its cell (grown by ``boundary_margin`` cells)
    boundary_weight: float = 0.0
    boundary_until: int = 0
    boundary_margin: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, checkpoints and logging."""

    max_steps: int = 3000
    batch_size: int = 16
    lr_fg: float = 1e-3
    lr_bg: float = 1e-3
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 25
    image_every: int = 500
    progress: bool = True


@dataclass(frozen=True)
class DetectConfig:
    """Detection and the z_what types (k-means fitted after training)."""

    threshold: float = 0.5
    batch_size: int = 256
    #: report the centre and size of each object's decoded alpha mask (its moments) rather
    #: than its glimpse box, which may be larger than the object
    alpha_boxes: bool = True
    #: k for the k-means over z_what; None: chosen by silhouette in 2..max_types
    types: int | None = None
    max_types: int = 8
    #: training frames the types are fitted on
    type_frames: int = 1000


@dataclass(frozen=True)
class EvalConfig:
    """Scoring against the OCAtari ground truth stored with the frames."""

    split: str = "test"
    gate: float = 6.0
    hud: bool = False
    #: frames scored (0: all of the split)
    max_frames: int = 0
    #: frames drawn in the PNG grid
    grid_frames: int = 16


@dataclass(frozen=True)
class SpaceConfig:
    """Everything a SPACE training or evaluation run needs."""

    name: str = "space"
    seed: int = 0
    device: str = "auto"
    #: torch CPU threads (0: torch's default)
    num_threads: int = 0
    resume: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_config(self)


def check_config(cfg: SpaceConfig) -> None:
    """Refuse settings the model cannot be built with."""
    m, (h, w) = cfg.model, cfg.data.image_size
    cell = 2 ** len(m.enc_channels)
    if h != m.grid[0] * cell or w != m.grid[1] * cell:
        raise UserError(f"data.image_size {list(cfg.data.image_size)} must be model.grid "
                        f"{list(m.grid)} times the cell size {cell} (2 ** len(model.enc_channels))")
    if m.render_cells < 1 or m.render_cells % 2 == 0:
        raise UserError("model.render_cells must be a positive odd number")
    if not 0 < m.shift_range <= m.render_cells / 2:
        raise UserError("model.shift_range must be in (0, render_cells / 2]")
    if not 0 <= m.render_threshold < 1:
        raise UserError("model.render_threshold must be in [0, 1)")
    if m.glimpse < 2 or m.glimpse_supersample < 1:
        raise UserError("model.glimpse must be at least 2 and model.glimpse_supersample at least 1")
    if m.bg_components < 1:
        raise UserError("model.bg_components must be at least 1")
    if cfg.data.crop is not None:
        top, bottom, left, right = cfg.data.crop
        if not (0 <= top < bottom and 0 <= left < right):
            raise UserError(f"data.crop {list(cfg.data.crop)} is not top < bottom, left < right")
    if cfg.train.max_steps < 0 or cfg.train.batch_size <= 0 or cfg.train.checkpoint_every <= 0:
        raise UserError("train.max_steps, train.batch_size and train.checkpoint_every must be "
                        "positive")
    if cfg.eval.split not in ("train", "validation", "test"):
        raise UserError(f"eval.split '{cfg.eval.split}' is not train, validation or test")
    if cfg.detect.types is not None and cfg.detect.types < 1:
        raise UserError("detect.types must be at least 1 (or null for silhouette)")


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` as type ``hint``; a mismatch is a UserError naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if _is_dataclass_type(hint):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' needs a mapping, got {value!r}")
        return from_dict(hint, value, f"{key}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' needs a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise UserError(f"config key '{key}' needs {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key '{key}' needs True or False, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise UserError(f"config key '{key}' needs an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key '{key}' needs a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"config key '{key}' needs a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def _unknown(key: str, known: Sequence[str]) -> UserError:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return UserError(f"unknown config key '{key}'{hint}")


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass (sections and leaves)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if _is_dataclass_type(hints[f.name]):
            keys += all_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from nested dicts, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise _unknown(prefix + str(key), all_keys(cls, prefix))
    return cls(**{k: _convert(v, hints[k], prefix + k) for k, v in data.items()})


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as nested plain dicts and lists (yaml and JSON friendly)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); unknown keys are refused."""
    known = all_keys(SpaceConfig)
    out = yaml.safe_load(yaml.safe_dump(data))
    for key, value in overrides.items():
        if key not in known:
            raise _unknown(key, known)
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"config key '{key}': '{part}' is not a section")
        node[leaf] = value
    return out


def config_from(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> SpaceConfig:
    """A checked config from nested dicts (e.g. one stored in a checkpoint) and overrides."""
    return from_dict(SpaceConfig, apply_overrides(data, overrides or {}))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SpaceConfig:
    """Read a yaml config file and apply overrides."""
    data = read_yaml_mapping(path, " (see space/configs/)")
    try:
        from_dict(SpaceConfig, data)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    return config_from(data, overrides)
