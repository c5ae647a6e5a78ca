"""Play a symbolic policy in its env through the detect -> track -> features path, and
evaluate it beside the teacher on the same seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from diffses.detection import Detector, detector_for, load_detector
from diffses.envs import require_same_game, resolve_env
from diffses.errors import UserError
from diffses.perception import Perception
from diffses.policy import POLICY, SymbolicPolicy
from diffses.rollout import rollout
from diffses.runs import MANIFEST, Run, resolve_run
from diffses.teacher import load_teacher, teacher_env


class SymbolicAgent:
    """Acts from native frames: perception gives objects, the layout features, the forest
    the action. The same perception path built the dataset the forest was distilled on."""

    def __init__(self, policy: SymbolicPolicy, perception: Perception):
        self.policy, self.perception = policy, perception
        self._episode_start = True
        self.state: list[dict[str, Any]] = []   # the objects perceived at the latest step

    def reset(self) -> None:
        self._episode_start = True

    def features(self, info: dict[str, Any]) -> np.ndarray:
        """This step's feature vector (F,), tracking from the previous step."""
        self.state = self.perception.observe(info["native_frame"][None], [info],
                                             [self._episode_start])[0]
        self._episode_start = False
        return self.policy.layout.vector(self.state)

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return int(self.policy.act(self.features(info)[None])[0])


def load_policy(ref: str, runs_dir: str) -> tuple[SymbolicPolicy, Path]:
    """A policy from a distill/finetune run folder, 'latest' (newest distill run) or a file."""
    if ref == "latest":
        path = resolve_run("latest", "distill", runs_dir).path / POLICY
    else:
        path = Path(ref)
        if not path.exists():
            raise UserError(f"policy {ref} does not exist (pass a distill or finetune run "
                            f"folder, 'latest', or a policy.json file)")
        if path.is_dir():
            if (path / MANIFEST).is_file():
                stage = Run.load(path).manifest.get("stage")
                if stage not in ("distill", "finetune"):
                    raise UserError(f"{path} is a '{stage}' run; a policy comes from a "
                                    f"distill or finetune run")
            path = path / POLICY
    return SymbolicPolicy.load(path), path


def load_player(ref: str, runs_dir: str, teacher: str | None = None,
                detector: str | None = None, overrides: dict[str, Any] | None = None
                ) -> tuple[SymbolicPolicy, Run, Detector]:
    """A policy with the teacher run and the detector it plays with: ``teacher`` and
    ``detector`` when given, else the ones its provenance names; ``overrides`` change a SPACE
    detector's detection settings."""
    policy, path = load_policy(ref, runs_dir)
    teacher = teacher or policy.provenance.get("teacher_run")
    detector = detector or policy.provenance.get("detector")
    if not teacher or not detector:
        raise UserError(f"policy {path} does not name its teacher and detector; pass "
                        f"--teacher and --detector")
    teacher_run = resolve_run(teacher, "teacher", runs_dir)
    require_same_game(f"teacher {teacher_run.path}", teacher_run.env_id, f"policy {path}",
                      policy.env_id)
    return policy, teacher_run, detector_for(policy.layout.type_names, load_detector(
        detector, env_id=teacher_run.env_id, runs_dir=runs_dir, device="cpu",
        overrides=overrides), str(path),
        detector)


def sticky_kwargs(env_id: str, sticky: float) -> dict[str, Any]:
    """Env keyword arguments for games under sticky actions: each agent step repeats the
    previous action with probability ``sticky`` (the ALE's ``repeat_action_probability``, the
    evaluation protocol its maintainers recommend); nothing for 0."""
    if not sticky:
        return {}
    if not 0 < sticky < 1:
        raise UserError(f"a sticky-action probability must be in [0, 1), not {sticky}")
    if resolve_env(env_id).backend != "ale":
        raise UserError(f"sticky actions exist for Atari games, not {env_id}")
    return {"env_kwargs": {"repeat_action_probability": float(sticky)}}


def play_episodes(teacher_run: Run, seeds: Sequence[int],
                  make_actor: Callable[[], Callable[[np.ndarray, dict[str, Any]], int]],
                  env_kwargs: dict[str, Any], max_steps: int | None = None,
                  sticky: float = 0.0, lengths: list[int] | None = None,
                  frames: bool = True) -> list[float]:
    """One game per seed with a fresh actor (under sticky actions with ``sticky``); the real
    (unclipped) return of each (and its agent steps appended to ``lengths``). Without
    ``frames`` the actor reads only ``info`` and the teacher's stacked frames are not made."""
    returns = []
    env_kwargs = dict(env_kwargs, **sticky_kwargs(teacher_run.env_id, sticky))
    for seed in seeds:
        venv = teacher_env(teacher_run, seed, clip_reward=False, frames=frames, **env_kwargs)
        total = 0.0
        try:
            for i, t in enumerate(rollout(venv, make_actor())):
                total += t.reward
                if t.game_over or (max_steps is not None and i + 1 >= max_steps):
                    break
        finally:
            venv.close()
        returns.append(total)
        if lengths is not None:
            lengths.append(i + 1)
    return returns


def greedy_teacher(model: Any) -> Callable[[], Callable[[np.ndarray, dict[str, Any]], int]]:
    """A ``make_actor`` for :func:`play_episodes`: the teacher's greedy action."""
    return lambda: lambda obs, info: int(model.predict(obs, deterministic=True)[0][0])


def returns_summary(returns: Sequence[float]) -> dict[str, Any]:
    """Returns of seeded games with their mean and std."""
    return {"returns": list(returns), "mean": float(np.mean(returns)),
            "std": float(np.std(returns))}


def play_symbolic(policy: SymbolicPolicy, perception: Perception, teacher_run: Run,
                  seeds: Sequence[int], max_steps: int | None = None, sticky: float = 0.0,
                  lengths: list[int] | None = None) -> list[float]:
    """The symbolic policy's real return on one game per seed, through ``perception``."""
    return play_episodes(teacher_run, seeds, lambda: SymbolicAgent(policy, perception),
                         perception.env_kwargs, max_steps, sticky, lengths, frames=False)


def evaluate_side_by_side(policy: SymbolicPolicy, perception: Perception, teacher_run: Run,
                          episodes: int, seed: int = 0, max_steps: int | None = None,
                          device: str = "cpu", model: Any | None = None, sticky: float = 0.0
                          ) -> dict[str, Any]:
    """Returns of the symbolic policy and the teacher (greedy) on the same seeded games (under
    sticky actions with ``sticky``); ``model`` is the teacher's loaded model (default: loaded
    from the run onto ``device``)."""
    seeds = [seed + i for i in range(episodes)]
    if model is None:
        model = load_teacher(teacher_run, device)
    symbolic = play_symbolic(policy, perception, teacher_run, seeds, max_steps, sticky)
    teacher = play_episodes(teacher_run, seeds, greedy_teacher(model), perception.env_kwargs,
                            max_steps, sticky)
    return {"seeds": seeds, "max_steps": max_steps, "symbolic": returns_summary(symbolic),
            "teacher": returns_summary(teacher)}
