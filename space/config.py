"""SPACE configuration: frozen dataclasses from a per-game yaml, with dotted-key overrides.

A config is passed explicitly to everything that needs it (there is no global config object).
``load_config(path, overrides)`` reads the yaml, applies overrides such as
``{"train.max_steps": 2000, "device": "cuda:0"}`` (from ``diffses.cli.parse_overrides``) and checks every
key and type, so a typo or a wrong value is a :class:`UserError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from diffses.errors import UserError
from diffses.io import read_yaml_mapping
from diffses.utils import DEVICE


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
    """Network sizes. The image encoder divides the resolution by each entry of
    ``enc_strides`` in turn (2 for every entry of ``enc_channels`` unless given), so a grid
    cell is their product of pixels wide and high."""

    grid: tuple[int, int] = (16, 16)
    enc_channels: tuple[int, ...] = (16, 32, 64)
    #: stride of each ``enc_channels`` layer, 2 or 4 (None: 2 each); a stride-4 first layer
    #: makes a lighter, faster encoder
    enc_strides: tuple[int, ...] | None = None
    feat_channels: int = 64
    #: 3x3 convolutions at cell resolution after the strided layers
    feat_layers: int = 2
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
    #: share of training frames shown under one random change of the picture, the kinds
    #: ``evaluate_transfer.py`` tests (a repainted background, Gaussian noise, a shift), so
    #: detection survives them (0: every frame as it is)
    augment: float = 0.0
    #: largest std of the noise of an augmented frame (native pixel values)
    augment_noise: float = 25.0
    #: largest shift of an augmented frame in x and y (native pixels)
    augment_shift: int = 6


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
    #: what the types cluster: ``z_what`` (the glimpse's code), or ``appearance`` (each box's
    #: width and height and the mean colour of its pixels that differ from the frame's most
    #: common colour), which a repainted background or a moved picture leaves alone
    type_by: str = "z_what"
    #: move each object's centre (after snapping) by its type's offset from the ground truth,
    #: where the checkpoint holds offsets (``eval.calibrate``): the emulator's RAM and the
    #: drawn sprite may disagree on where an object is by a fraction of a pixel
    calibrate: bool = True
    #: steps the tracker keeps reporting an object the detector missed, at its predicted
    #: place (see ``diffses.tracking``)
    coast: int = 1
    #: objects whose z_pres probability is above this but not above ``threshold`` are weak:
    #: they only continue a track the tracker already holds, never start one (null, or not
    #: below ``threshold``: none are weak)
    track_threshold: float | None = 0.2
    #: round each object's centre to whole native pixels, where the emulator draws sprites:
    #: sub-pixel noise in the centres would become noise in the tracker's velocities
    snap: bool = True
    #: detect through the checkpoint's fast student (``--task fast``) when it holds one
    fast: bool = True
    #: project every pixel onto the palette of the frames the detector learned from before
    #: detecting (``space/palette.py``): pixel noise and colours the game never drew (a
    #: repainted background) go back to the game's own; needs a checkpoint holding a palette
    palette: bool = False
    #: find how far each frame's picture was moved against the layout of the frames the
    #: detector learned from and move it back before detecting (``space/register.py``), so
    #: a moved picture gives the objects' places in the game; after ``palette``; needs a
    #: checkpoint holding that layout's profiles
    register: bool = False


@dataclass(frozen=True)
class FastConfig:
    """``--task fast``: a small convolutional student trained to give, per grid cell, the
    presence probability, box and type the SPACE model gives there (see ``space/fast.py``)."""

    #: channels of the first layer (its stride 2, 3, 4 or 5, as the cell size allows)
    channels: int = 16
    #: channels of the stride-2 layers down to the cell size and of the layers after them
    feat_channels: int = 32
    #: 3x3 convolutions at cell resolution before the output layer
    feat_layers: int = 1
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    #: training frames the student learns from (0: all)
    frames: int = 0
    #: weight of the box error against the presence and type cross-entropies
    box_weight: float = 10.0
    #: share of the student's frames shown under one of the transfer shifts (as
    #: ``train.augment``, sized by ``train.augment_noise`` and ``train.augment_shift``), its
    #: targets SPACE's on the clean frame, moved with the picture (0: every frame as it is)
    augment: float = 0.0


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
    #: record in the checkpoint the class each learned type matched, so policies distilled on
    #: ocatari objects play through this detector
    name_types: bool = False
    #: record in the checkpoint the palette of the scored frames (for ``detect.palette``;
    #: checkpoints trained now hold their training frames' palette already)
    palette: bool = False
    #: record in the checkpoint the row and column profiles of the scored frames (for
    #: ``detect.register``; checkpoints trained now hold their training frames' already)
    register: bool = False
    #: refit the types (``detect.type_by``, ``detect.types``) on the frames run's training
    #: frames and record them in the checkpoint before scoring
    fit_types: bool = False
    #: record in the checkpoint each type's mean centre offset from the ground truth on the
    #: scored frames (for ``detect.calibrate``)
    calibrate: bool = False


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
    fast: FastConfig = field(default_factory=FastConfig)

    def __post_init__(self) -> None:
        check_config(self)


#: what the object types can cluster (``detect.type_by``)
TYPE_BY = ("z_what", "appearance")
#: smallest value of integer settings (counts, sizes, step intervals)
INT_AT_LEAST = {
    "seed": 0, "num_threads": 0,
    "model.feat_channels": 1, "model.feat_layers": 0, "model.glimpse": 2, "model.glimpse_supersample": 1,
    "model.glimpse_hidden": 1, "model.z_what": 1, "model.bg_components": 1, "model.z_mask": 1,
    "model.z_comp": 1, "model.bg_channels": 1,
    "loss.pres_prior.begin": 0, "loss.pres_prior.finish": 0, "loss.tau.begin": 0,
    "loss.tau.finish": 0, "loss.scale_mean.begin": 0, "loss.scale_mean.finish": 0,
    "loss.fix_alpha_steps": 0, "loss.boundary_until": 0,
    "train.max_steps": 0, "train.batch_size": 1, "train.checkpoint_every": 1,
    "train.keep_checkpoints": 1, "train.log_every": 1, "train.image_every": 1,
    "train.augment_shift": 0,
    "detect.batch_size": 1, "detect.max_types": 1, "detect.type_frames": 0,
    "detect.coast": 0,
    "fast.channels": 1, "fast.feat_channels": 1, "fast.feat_layers": 0, "fast.steps": 1,
    "fast.batch_size": 1, "fast.frames": 0,
    "eval.max_frames": 0, "eval.grid_frames": 1,
}
#: integer lists whose every entry must be at least this
INTS_AT_LEAST = {"data.image_size": 16, "model.grid": 1, "model.enc_channels": 1,
                 "model.bg_decode_size": 1}
#: why a bound is what it is, where that is not obvious
WHY = {"data.image_size": "the background encoder halves it four times",
       "model.glimpse": "a glimpse has at least 2x2 pixels"}
#: number settings: (low, high, low included, high included); None is unbounded
FLOAT_RANGE: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "model.fg_sigma": (0, None, False, False), "model.bg_sigma": (0, None, False, False),
    "loss.pres_prior.start": (0, 1, False, False), "loss.pres_prior.end": (0, 1, False, False),
    "loss.tau.start": (0, None, False, False), "loss.tau.end": (0, None, False, False),
    "loss.scale_std": (0, None, False, False), "loss.fix_alpha_value": (0, 1, True, True),
    "loss.boundary_weight": (0, None, True, False), "loss.boundary_margin": (0, None, True, False),
    "train.lr_fg": (0, None, False, False), "train.lr_bg": (0, None, False, False),
    "train.grad_clip": (0, None, True, False), "train.augment": (0, 1, True, True),
    "train.augment_noise": (0, None, True, False),
    "detect.threshold": (0, 1, True, True), "eval.gate": (0, None, False, False),
    "fast.lr": (0, None, False, False), "fast.box_weight": (0, None, True, False),
    "fast.augment": (0, 1, True, True),
}
#: what 0 means, where it is allowed and means something special
ZERO_MEANS = {"num_threads": "torch's default", "train.grad_clip": "no clipping",
              "detect.type_frames": "all training frames", "eval.max_frames": "all of the split",
              "fast.frames": "all training frames"}


def _value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _shown(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def _note(key: str) -> str:
    if key in ZERO_MEANS:
        return f" (0: {ZERO_MEANS[key]})"
    return f" ({WHY[key]})" if key in WHY else ""


def _range_text(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    if high is None:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _leaves(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, value) of a config (nested sections flattened)."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _leaves(value, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, value))
    return out


def check_ranges(cfg: SpaceConfig) -> None:
    """Refuse numbers out of their range, naming the key as it is written."""
    for key, value in _leaves(cfg):
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise UserError(f"{key} must be a finite number, got {_shown(value)}")
    for key, low in INT_AT_LEAST.items():
        value = _value(cfg, key)
        if value < low:
            raise UserError(f"{key} must be >= {low}{_note(key)}, got {value}")
    for key, low in INTS_AT_LEAST.items():
        value = _value(cfg, key)
        if any(v < low for v in value):
            raise UserError(f"every entry of {key} must be >= {low}{_note(key)}, got "
                            f"{_shown(value)}")
    for key, (low, high, low_in, high_in) in FLOAT_RANGE.items():
        value = _value(cfg, key)
        above = value >= low if low_in else value > low
        below = high is None or (value <= high if high_in else value < high)
        if not (above and below):
            raise UserError(f"{key} must be {_range_text(low, high, low_in, high_in)}"
                            f"{_note(key)}, got {value:g}")
    if not cfg.name or any(c in cfg.name for c in "/\\\0"):
        raise UserError(f"name must be a non-empty run name without '/' or '\\', got "
                        f"{cfg.name!r}")
    if not DEVICE.fullmatch(cfg.device):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    weak = cfg.detect.track_threshold
    if weak is not None and not 0 < weak <= 1:
        raise UserError(f"detect.track_threshold must be in (0, 1] or null, got {weak:g}")
    if cfg.detect.types is not None and cfg.detect.types < 1:
        raise UserError("detect.types must be at least 1 (or null for silhouette)")
    if cfg.detect.type_by not in TYPE_BY:
        raise UserError(f"detect.type_by '{cfg.detect.type_by}' is not one of "
                        f"{', '.join(TYPE_BY)}")
    if cfg.eval.split not in ("train", "validation", "test"):
        raise UserError(f"eval.split '{cfg.eval.split}' is not train, validation or test")


def encoder_strides(m: ModelConfig) -> tuple[int, ...]:
    """The stride of each encoder layer: ``enc_strides``, or 2 for each of ``enc_channels``."""
    return m.enc_strides if m.enc_strides is not None else (2,) * len(m.enc_channels)


def check_config(cfg: SpaceConfig) -> None:
    """Refuse settings the model cannot be built with, and values out of their range."""
    check_ranges(cfg)
    m, (h, w) = cfg.model, cfg.data.image_size
    strides = encoder_strides(m)
    if len(strides) != len(m.enc_channels) or any(s not in (2, 4) for s in strides):
        raise UserError(f"model.enc_strides {list(strides)} must give a stride of 2 or 4 for "
                        f"each of the {len(m.enc_channels)} entries of model.enc_channels")
    cell = math.prod(strides)
    if h != m.grid[0] * cell or w != m.grid[1] * cell:
        raise UserError(f"data.image_size {list(cfg.data.image_size)} must be model.grid "
                        f"{list(m.grid)} times the cell size {cell} (the product of "
                        f"model.enc_strides)")
    if m.render_cells < 1 or m.render_cells % 2 == 0:
        raise UserError("model.render_cells must be a positive odd number")
    if not 0 < m.shift_range <= m.render_cells / 2:
        raise UserError("model.shift_range must be in (0, render_cells / 2]")
    if not 0 <= m.render_threshold < 1:
        raise UserError("model.render_threshold must be in [0, 1)")
    if cfg.data.crop is not None:
        top, bottom, left, right = cfg.data.crop
        if not (0 <= top < bottom and 0 <= left < right):
            raise UserError(f"data.crop {list(cfg.data.crop)} is not top < bottom, left < right")


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


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                flag: str | None = None) -> SpaceConfig:
    """Read a yaml config file and apply overrides; ``flag`` (e.g. ``--config``) names where
    the path came from in the errors about the file."""
    try:
        data = read_yaml_mapping(path, " (see space/configs/)")
    except UserError as err:
        raise UserError(f"{flag}: {err}" if flag else str(err)) from None
    try:
        from_dict(SpaceConfig, data)
    except UserError as err:
        raise UserError(f"{flag + ' ' if flag else ''}{path}: {err}") from None
    return config_from(data, overrides)
