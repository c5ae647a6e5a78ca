"""Stage II-B: the teacher's behaviour as tracked objects, in the sample.json schema.

Roll out a teacher, detect objects in every frame (a SPACE run or OCAtari), track them for
velocities and write one record per agent step: the objects, the teacher's action and its
action probabilities. Records are written as they come, so memory stays flat on long runs.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from diffses.cli import arg
from diffses.detection import load_detector
from diffses.envs import env_info, require_same_game
from diffses.errors import UserError
from diffses.io import JsonListWriter, atomic_write_json, check_file_path, read_json
from diffses.perception import Perception
from diffses.play import SymbolicAgent, load_policy, sticky_kwargs
from diffses.rollout import Transition, games
from diffses.runs import Run, resolve_run, resume_config
from diffses.schema import DATASET, meta_path, validate_record
from diffses.teacher import STAGE as TEACHER_STAGE
from diffses.teacher import load_teacher, teacher_env
from diffses.utils import resolve_device, seed_everything
from gplearn_custom.params import at_least, require

STAGE = "dataset"
#: Written after every whole game of a build, removed when it completes.
PROGRESS = "progress.json"


@dataclass(frozen=True)
class DatasetConfig:
    """Roll out a teacher, detect and track objects in every frame, and write dataset.json
    (records in the sample.json schema) with dataset.meta.json for distillation."""

    teacher: str = arg("latest", "teacher run folder, or 'latest'")
    detector: str = arg("ocatari", "'ocatari' (RAM objects), or a SPACE run folder / 'latest'")
    episodes: int | None = arg(None, "stop after this many episodes (default 1 unless -n)")
    n_steps: int | None = arg(None, "stop after this many agent steps", aliases=("-n",))
    deterministic: bool = arg(True, "the teacher acts greedily", negative="--stochastic")
    student: str | None = arg(None, "a symbolic policy (distill or finetune run folder, or "
                                    "policy.json) that plays instead of the teacher; every "
                                    "state it visits is labelled with the teacher's greedy "
                                    "action (DAgger data)")
    seed: int = arg(0, "seed for the rollout")
    sticky: float = arg(0.0, "sticky actions: each step repeats the previous action with this "
                             "probability (Atari; 0.25 is the ALE's evaluation protocol)")
    max_episode_steps: int | None = arg(None, "cap on agent steps per game")
    device: str = arg("auto", "torch device for the teacher and detector")
    gate: float = arg(30.0, "tracking gate: most pixels an object moves between steps")
    max_missing: int = arg(3, "steps a vanished object is remembered (flicker)")
    hud: bool = arg(False, "keep HUD objects (scores, lives) from the ocatari detector")
    batch: int = arg(64, "frames per detection batch")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("dataset", "run name, part of the run folder's name")
    out: str | None = arg(None, "also write the dataset to this file (and its .meta.json)")
    resume: str | None = arg(None, "continue a killed build (its run folder, or 'latest') "
                                   "after its last whole game")
    progress: bool = arg(True, "show a progress bar", negative="--no-progress")

    def __post_init__(self) -> None:
        if self.episodes is not None and self.n_steps is not None:
            raise UserError("give --episodes or -n/--n-steps, not both")
        if (self.episodes is not None and self.episodes <= 0) or \
                (self.n_steps is not None and self.n_steps <= 0) or self.batch <= 0:
            raise UserError("--episodes, --n-steps and --batch must be positive")
        require([(self.gate > 0, "--gate must be > 0 (pixels)"),
                 (0 <= self.sticky < 1, "--sticky must be in [0, 1)"),
                 at_least(self.max_episode_steps, 1, "--max-episode-steps"),
                 at_least(self.max_missing, 0, "--max-missing")], UserError)


def _chunks(steps: Iterator[Transition], size: int, cfg: DatasetConfig, done: int = 0
            ) -> Iterator[list[Transition]]:
    """Consecutive transitions in lists of ``size``, until the episode or step budget ends
    (``done`` steps were written before)."""
    episodes = cfg.episodes if cfg.episodes is not None or cfg.n_steps is not None else 1
    chunk: list[Transition] = []
    for i, t in enumerate(steps, start=done):
        if (cfg.n_steps is not None and i >= cfg.n_steps) or \
                (episodes is not None and t.episode >= episodes):
            break
        chunk.append(t)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def resolve_config(cfg: DatasetConfig) -> tuple[DatasetConfig, Run | None]:
    """For ``--resume``: the killed build's config (device and progress from this call)."""
    if cfg.resume is None:
        return cfg, None
    return resume_config(DatasetConfig, cfg.resume, STAGE, cfg.runs_dir, False,
                         device=cfg.device, progress=cfg.progress)


def run(cfg: DatasetConfig) -> Run:
    """Build the dataset (or continue a killed build); returns the finished run."""
    cfg, resumed = resolve_config(cfg)
    if cfg.out:
        check_file_path(cfg.out, "--out")
    teacher_run = resolve_run(cfg.teacher, TEACHER_STAGE, cfg.runs_dir)
    env_id = teacher_run.env_id
    device = resolve_device(cfg.device)
    detector = load_detector(cfg.detector, env_id=env_id, runs_dir=cfg.runs_dir, device=device,
                             hud=cfg.hud)
    perception = Perception(detector, cfg.gate, cfg.max_missing)
    facts = env_info(env_id)
    model = load_teacher(teacher_run, device)
    student, student_path = None, None
    if cfg.student is not None:
        student, student_path = load_policy(cfg.student, cfg.runs_dir)
        require_same_game(f"--student {cfg.student}", student.env_id,
                          f"teacher {teacher_run.path}", env_id)
    if resumed is None:
        run_ = Run.create(cfg.runs_dir, STAGE, env_id, cfg.name, cfg.seed, cfg)
    else:
        run_ = resumed
        run_.manifest["status"] = "running"
    progress = read_json(run_.path / PROGRESS) if (run_.path / PROGRESS).is_file() else None
    with run_.failing():
        run_.add_input("teacher_model", teacher_run.path / "model.zip")
        run_.manifest.update(teacher_run=str(teacher_run.path), detector=detector.name)
        if student_path is not None:
            run_.add_input("student", student_path)

        def game_actor(k: int) -> Callable[[np.ndarray, dict[str, Any]], int]:
            """Who plays game k (seeded k): the student, else the teacher."""
            seed_everything(cfg.seed + k)
            if student is not None:
                return SymbolicAgent(student, Perception(detector, cfg.gate, cfg.max_missing))
            return lambda obs, info: int(model.predict(obs, deterministic=cfg.deterministic)[0][0])

        first = progress["episodes"] if progress else 0
        if progress:
            print(f"[dataset] resuming {run_.path} after game {first} "
                  f"({progress['writer']['count']} records kept)")
        game_kwargs = dict(perception.env_kwargs, **sticky_kwargs(env_id, cfg.sticky),
                           max_episode_steps=cfg.max_episode_steps)
        steps = games(lambda k: teacher_env(teacher_run, cfg.seed + k, clip_reward=False,
                                            **game_kwargs), game_actor, first)
        stats = _write(cfg, steps, model, perception, run_, facts["n_actions"], progress)
        meta = {
            "env_id": env_id,
            "n_actions": facts["n_actions"],
            "action_meanings": facts["action_meanings"],
            "type_names": {str(t): n for t, n in detector.type_names.items()},
            "max_objects_per_type": {str(t): n for t, n in sorted(stats["max_per_type"].items())},
            "frame_size": facts["frame_shape"][:2],
            "positions": "object centres in native pixels",
            "velocities": "pixels per agent step",
            "detector": detector.name,
            "teacher_run": str(teacher_run.path),
            "deterministic_teacher": cfg.deterministic,
            "student": None if student_path is None else str(student_path),
            "records": stats["records"],
            "episodes": stats["episodes"],
        }
        atomic_write_json(meta_path(run_.path / DATASET), meta)
        (run_.path / PROGRESS).unlink(missing_ok=True)
        run_.add_output(run_.path / DATASET)
        run_.add_output(meta_path(run_.path / DATASET))
        if cfg.out:
            _copy_out(run_, cfg.out)
        summary = {k: stats[k] for k in ("records", "episodes", "records_per_second",
                                          "mean_objects", "episode_returns")}
        run_.finish(summary)
    print(f"[dataset] {stats['records']} records, {stats['episodes']} episode(s), "
          f"{stats['records_per_second']:.0f} records/s, detector {detector.name}: "
          f"{run_.path / DATASET}")
    return run_


def _copy_out(run_: Run, out: str) -> None:
    for src, dst in ((run_.path / DATASET, out), (meta_path(run_.path / DATASET),
                                                  meta_path(out))):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{dst}.partial"
        shutil.copyfile(src, tmp)
        shutil.move(tmp, dst)


def teacher_probs(model: Any, obs: np.ndarray) -> np.ndarray:
    """The teacher's action probabilities for a batch of observations, (B, A)."""
    with torch.no_grad():
        tensor = model.policy.obs_to_tensor(obs)[0]
        return model.policy.get_distribution(tensor).distribution.probs.cpu().numpy()


def _write(cfg: DatasetConfig, steps: Iterator[Transition], model: Any,
           perception: Perception, run_: Run, n_actions: int,
           progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """Perceive, validate and write records chunk by chunk (memory stays flat), marking
    progress after every whole game so a killed build resumes there; returns counts for the
    meta and summary."""
    start = progress or {"episodes": 0, "max_per_type": {}, "n_objects": 0, "returns": [],
                         "seconds": 0.0}
    max_per_type: Counter = Counter({int(k): v for k, v in start["max_per_type"].items()})
    n_objects, returns, ep_return = start["n_objects"], list(start["returns"]), 0.0
    last_episode = start["episodes"] - 1
    t0 = time.perf_counter() - start["seconds"]
    with JsonListWriter(run_.path / DATASET, keep_partial=True,
                        resume=progress["writer"] if progress else None) as writer, \
            tqdm(total=cfg.n_steps, initial=writer.count, disable=not cfg.progress,
                 desc="records") as bar:
        for chunk in _chunks(steps, cfg.batch, cfg, writer.count):
            frames = np.stack([t.info["native_frame"] for t in chunk])   # (B, H, W, 3)
            starts = [t.episode != prev for t, prev in
                      zip(chunk, [last_episode] + [t.episode for t in chunk[:-1]])]
            states = perception.observe(frames, [t.info for t in chunk], starts)
            probs = teacher_probs(model, np.concatenate([t.obs for t in chunk]))  # (B, A)
            for t, state, p in zip(chunk, states, probs):
                for typ, n in Counter(o["type"] for o in state).items():
                    max_per_type[typ] = max(max_per_type[typ], n)
                n_objects += len(state)
                ep_return += t.reward
                action = t.action if cfg.student is None else int(np.argmax(p))
                record = {"state": state, "teacher_action": action, "episode": t.episode,
                          "step": t.step, "reward": t.reward,
                          "teacher_probs": [round(float(v), 5) for v in p]}
                validate_record(record, n_actions)
                writer.write(record)
                if t.game_over:
                    returns.append(ep_return)
                    ep_return = 0.0
                    atomic_write_json(run_.path / PROGRESS, {
                        "episodes": t.episode + 1, "writer": writer.checkpoint(),
                        "max_per_type": {str(k): v for k, v in max_per_type.items()},
                        "n_objects": n_objects, "returns": returns,
                        "seconds": time.perf_counter() - t0})
            last_episode = chunk[-1].episode
            bar.update(len(chunk))
        records = writer.count
        if records == 0:
            raise UserError("the rollout produced no records")
    seconds = time.perf_counter() - t0
    return {"records": records, "episodes": last_episode + 1, "max_per_type": max_per_type,
            "records_per_second": records / max(seconds, 1e-9),
            "mean_objects": n_objects / records, "episode_returns": returns}
