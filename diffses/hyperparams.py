"""PPO hyperparameters in the rl-zoo yaml format, with ``key:value`` overrides and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from diffses.errors import UserError

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


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["n_steps:64", "learning_rate:lin_1e-4"]`` -> a dict; values are parsed as yaml."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise UserError(f"hyperparameter override '{item}' is not of the form key:value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_hyperparams(env_id: str, backend: str, overrides: dict[str, Any] | None = None,
                     path: str | Path = DEFAULT_FILE) -> dict[str, Any]:
    """The entry for ``env_id`` (else ``atari``/``retro``, else ``default``) with overrides."""
    with open(path) as fh:
        table = yaml.safe_load(fh)
    key = next(k for k in (env_id, "atari" if backend == "ale" else "retro", "default")
               if k in table)
    params = dict(table[key])
    params.update(overrides or {})
    return params


def split_hyperparams(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split into (zoo extras, PPO keyword arguments) with schedules and numbers resolved."""
    from stable_baselines3 import PPO
    import inspect
    allowed = set(inspect.signature(PPO.__init__).parameters) - {"self", "env", "policy"}
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
        ppo_kwargs[key] = value
    if "n_timesteps" in extras:
        extras["n_timesteps"] = int(float(extras["n_timesteps"]))
    return extras, ppo_kwargs
