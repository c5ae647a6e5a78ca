"""PPO hyperparameters in the rl-zoo yaml format, with overrides and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffses.errors import UserError
from diffses.io import read_yaml_mapping
from diffses.networks import resolve_policy_kwargs

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "hyperparams" / "ppo.yml"
#: Keys the zoo format allows beside PPO's own keyword arguments.
EXTRA_KEYS = ("n_envs", "n_timesteps", "policy", "frame_stack", "env_kwargs")


class LinearSchedule:
    """Decay linearly from ``initial`` to 0 as SB3's progress_remaining goes from 1 to 0."""

    def __init__(self, initial: float):
        self.initial = float(initial)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial:g}"


def preset_key(table: dict[str, Any], env_id: str, backend: str, preset: str = "auto",
               device: str = "cpu") -> str:
    """The entry of ``table`` to use.

    ``preset`` names an entry, or is ``auto``: the exact env id, else the family's CPU preset
    (``atari-cpu``/``retro-cpu``) on a CPU device, else the family (``atari``/``retro``), else
    ``default``.
    """
    if preset != "auto":
        if preset not in table:
            raise UserError(f"unknown hyperparameter preset '{preset}': the file has "
                            f"{', '.join(map(str, table))}")
        return preset
    family = "atari" if backend == "ale" else "retro"
    cpu = [f"{family}-cpu"] if not device.startswith("cuda") else []
    for key in (env_id, *cpu, family, "default"):
        if key in table:
            return key
    raise UserError(f"the hyperparameters file has no entry for {env_id}, {family} or default")


def load_hyperparams(env_id: str, backend: str, overrides: dict[str, Any] | None = None,
                     path: str | Path = DEFAULT_FILE, preset: str = "auto",
                     device: str = "cpu") -> tuple[str, dict[str, Any]]:
    """(preset key, its entry with overrides applied); see :func:`preset_key`."""
    table = read_yaml_mapping(path, " (--hyperparams-file)")
    key = preset_key(table, env_id, backend, preset, device)
    if not isinstance(table[key], dict):
        raise UserError(f"--hyperparams-file {path}: entry '{key}' must be a mapping of "
                        f"hyperparameters")
    params = dict(table[key])
    params.update(overrides or {})
    return key, params


#: Hyperparameters with a required kind of value: int, float (an int will do), bool, or
#: "schedule" (a number or ``lin_<number>``); None is allowed where PPO takes it.
KINDS = {"n_steps": int, "batch_size": int, "n_epochs": int, "n_envs": int, "frame_stack": int,
         "sde_sample_freq": int, "stats_window_size": int, "n_timesteps": float,
         "gamma": float, "gae_lambda": float, "ent_coef": float, "vf_coef": float,
         "max_grad_norm": float, "target_kl": float, "normalize_advantage": bool,
         "use_sde": bool, "learning_rate": "schedule", "clip_range": "schedule",
         "clip_range_vf": "schedule"}
NULLABLE = {"target_kl", "clip_range_vf"}


#: The values PPO takes for a key: a test of the number (a schedule's initial value) and how
#: the message says it.
RANGES = {
    **{k: (lambda v: v >= 1, "at least 1") for k in (
        "n_steps", "n_epochs", "n_envs", "frame_stack", "stats_window_size",
        "n_timesteps")},
    **{k: (lambda v: v > 0, "> 0") for k in (
        "learning_rate", "clip_range", "clip_range_vf", "max_grad_norm", "target_kl")},
    **{k: (lambda v: v >= 0, ">= 0") for k in ("ent_coef", "vf_coef")},
    "batch_size": (lambda v: v >= 2, "at least 2"),
    "gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def _in_range(key: str, number: float, value: Any) -> None:
    test, text = RANGES.get(key, (lambda v: True, ""))
    if not test(number):
        raise UserError(f"hyperparameter {key} must be {text}, not {value!r}")


def _number(value: Any) -> float | None:
    """A number, or a string that reads as one (PyYAML reads ``1e-3`` as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def checked_value(key: str, value: Any) -> Any:
    """``value`` as the kind PPO takes for ``key`` (numeric strings read as numbers), or a
    :class:`UserError` naming the key."""
    kind = KINDS.get(key)
    if kind is None or (value is None and key in NULLABLE):
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"hyperparameter {key} must be true or false, not {value!r}")
    if kind == "schedule" and isinstance(value, str) and value.startswith("lin_") and \
            _number(value[4:]) is not None:
        _in_range(key, float(value[4:]), value)
        return value
    number = _number(value)
    if kind is int:
        if number is None or float(number) != int(number):
            raise UserError(f"hyperparameter {key} must be an integer, not {value!r}")
        _in_range(key, number, value)
        return int(number)
    if number is None:
        what = "a number or lin_<number>" if kind == "schedule" else "a number"
        raise UserError(f"hyperparameter {key} must be {what}, not {value!r}")
    _in_range(key, number, value)
    return number


def split_hyperparams(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split into (zoo extras, PPO keyword arguments) with schedules and numbers resolved."""
    from stable_baselines3 import PPO
    import inspect
    allowed = set(inspect.signature(PPO.__init__).parameters) - {"self", "env", "policy"}
    params = {key: checked_value(key, value) for key, value in params.items()}
    extras = {k: params[k] for k in EXTRA_KEYS if k in params}
    ppo_kwargs = {}
    for key, value in params.items():
        if key in EXTRA_KEYS:
            continue
        if key not in allowed:
            raise UserError(f"unknown PPO hyperparameter '{key}'")
        if isinstance(value, str) and value.startswith("lin_"):
            try:
                value = LinearSchedule(float(value[4:]))
            except ValueError:
                raise UserError(f"bad schedule '{value}' for {key}: use lin_<number>") from None
        if key == "policy_kwargs":
            value = resolve_policy_kwargs(value)
        ppo_kwargs[key] = value
    if "n_timesteps" in extras:
        extras["n_timesteps"] = int(float(extras["n_timesteps"]))
    return extras, ppo_kwargs
