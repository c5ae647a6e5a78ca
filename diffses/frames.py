"""Stage I: roll out a teacher (or a random policy) and save native RGB frames for the detector.

The run folder gets ``train/``, ``validation/`` and ``test/`` PNGs (RGB, native resolution)
and ``frames.jsonl``: one line per frame with its file, split, episode, step, the action the
policy took on that frame, the reward that action earned, lives and, with ``--ground-truth``,
OCAtari's RAM objects (top-left x, y, w, h in native pixels; HUD objects marked).
Splits are contiguous blocks in time order, so held-out frames come from later play.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from diffses.cli import arg
from diffses.envs import env_info, make_vec_env, ocatari_game, resolve_env
from diffses.errors import UserError
from diffses.io import atomic_write_bytes, atomic_write_json, check_folder_path, read_json
from diffses.rollout import Transition, games
from diffses.runs import Run, resolve_run, resume_config
from diffses.teacher import STAGE as TEACHER_STAGE
from diffses.teacher import load_teacher, teacher_env
from diffses.utils import resolve_device, seed_everything

STAGE = "frames"
SPLITS = ("train", "validation", "test")
INDEX = "frames.jsonl"
#: Written after every whole game of a run, removed when it completes.
PROGRESS = "progress.json"


@dataclass(frozen=True)
class FramesConfig:
    """Roll out a teacher (or a random policy) and save native RGB frames for the detector."""

    teacher: str | None = arg(None, "teacher run folder, or 'latest'")
    policy: str = arg("teacher", "who acts: the teacher, or 'random'",
                      choices=("teacher", "random"))
    env: str | None = arg(None, "env id (needed with --policy random; else the teacher's)")
    n_frames: int = arg(2000, "frames to save", aliases=("-n",))
    every: int = arg(1, "save every k-th agent step")
    splits: tuple[float, ...] = arg((0.8, 0.1, 0.1), "fractions for train validation test")
    ground_truth: bool = arg(False, "store OCAtari RAM objects per frame (Atari games only)")
    deterministic: bool = arg(False, "teacher acts greedily (default: samples its policy)",
                              negative="--stochastic")
    seed: int = arg(0, "seed for the rollout")
    device: str = arg("auto", "torch device for the teacher")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("frames", "run name, part of the run folder's name")
    out: str | None = arg(None, "write into this folder instead of a new run folder")
    overwrite: bool = arg(False, "replace frames already in --out")
    resume: str | None = arg(None, "continue a killed run (its folder, or 'latest') after its "
                                   "last whole game")
    progress: bool = arg(True, "show a progress bar", negative="--no-progress")

    def __post_init__(self) -> None:
        if self.n_frames <= 0 or self.every <= 0:
            raise UserError("--n-frames and --every must be positive")
        if len(self.splits) != 3 or any(f < 0 for f in self.splits) or sum(self.splits) <= 0:
            raise UserError("--splits takes three non-negative fractions (train validation test)")
        if self.policy == "teacher" and self.teacher is None and self.resume is None:
            raise UserError("give --teacher RUN (or latest), or --policy random --env ID")
        if self.policy == "random" and self.env is None and self.teacher is None:
            raise UserError("--policy random needs --env ID")


def split_of(index: int, n: int, fractions: tuple[float, ...]) -> str:
    """The split of frame ``index`` of ``n``: contiguous blocks in the given proportions."""
    bounds = np.cumsum(fractions) / sum(fractions) * n
    return SPLITS[int(np.searchsorted(bounds, index, side="right"))]


def encode_png(frame: np.ndarray) -> bytes:
    """PNG bytes of an RGB frame (stored as RGB on disk)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def read_png(path: str | Path) -> np.ndarray:
    """An RGB frame from a PNG file, shape (H, W, 3) uint8."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _prepare_out(cfg: FramesConfig, env_id: str) -> Run:
    if cfg.out is None:
        return Run.create(cfg.runs_dir, STAGE, env_id, cfg.name, cfg.seed, cfg)
    out = Path(cfg.out)
    check_folder_path(out, "--out")
    if (out / INDEX).exists() or any((out / s).exists() for s in SPLITS):
        if not cfg.overwrite:
            raise UserError(f"{out} already holds frames; pass --overwrite to replace them")
        for s in SPLITS:
            shutil.rmtree(out / s, ignore_errors=True)
        (out / INDEX).unlink(missing_ok=True)
    return Run.create(cfg.runs_dir, STAGE, env_id, cfg.name, cfg.seed, cfg, path=out)


def resolve_config(cfg: FramesConfig) -> tuple[FramesConfig, Run | None]:
    """For ``--resume``: the killed run's config (device and progress from this call)."""
    if cfg.resume is None:
        return cfg, None
    return resume_config(FramesConfig, cfg.resume, STAGE, cfg.runs_dir, False,
                         device=cfg.device, progress=cfg.progress, out=None)


def run(cfg: FramesConfig) -> Run:
    """Save ``cfg.n_frames`` frames and their index (or continue a killed run); returns the
    finished run."""
    cfg, resumed = resolve_config(cfg)
    teacher_run = None
    if cfg.teacher is not None:
        teacher_run = resolve_run(cfg.teacher, TEACHER_STAGE, cfg.runs_dir)
    spec = resolve_env(cfg.env or teacher_run.env_id)
    env_id = spec.env_id
    if cfg.ground_truth and ocatari_game(spec) is None:
        raise UserError(f"--ground-truth needs a game OCAtari knows; {env_id} is not one")
    if teacher_run is not None and cfg.env and env_id != teacher_run.env_id:
        raise UserError(f"--env {env_id} does not match the teacher's env {teacher_run.env_id}")
    model = None
    if cfg.policy == "teacher":
        model = load_teacher(teacher_run, resolve_device(cfg.device))
    run_ = _prepare_out(cfg, env_id) if resumed is None else resumed
    run_.manifest["status"] = "running"
    progress = read_json(run_.path / PROGRESS) if (run_.path / PROGRESS).is_file() else None
    with run_.failing():
        if teacher_run is not None:
            run_.add_input("teacher_model", teacher_run.path / "model.zip")
            run_.manifest["teacher_run"] = str(teacher_run.path)
        env_kwargs = dict(native_frames=True, ground_truth=cfg.ground_truth, clip_reward=False)
        n_actions = env_info(env_id)["n_actions"]

        def make_venv(k: int) -> Any:
            if model is not None:
                return teacher_env(teacher_run, cfg.seed + k, **env_kwargs)
            return make_vec_env(env_id, 1, cfg.seed + k, frame_stack=1, **env_kwargs)

        def make_actor(k: int) -> Callable[[np.ndarray, dict[str, Any]], int]:
            seed_everything(cfg.seed + k)
            rng = np.random.default_rng(cfg.seed + k)
            if model is None:
                return lambda obs, info: int(rng.integers(n_actions))
            return lambda obs, info: int(model.predict(obs, deterministic=cfg.deterministic)[0][0])

        if progress:
            print(f"[frames] resuming {run_.path} after game {progress['games']} "
                  f"({progress['saved']} frames kept)")
        first = progress["games"] if progress else 0
        counts, episodes = _write_frames(cfg, games(make_venv, make_actor, first), run_.path,
                                         progress)
        (run_.path / PROGRESS).unlink(missing_ok=True)
        run_.add_output(run_.path / INDEX)
        frame_shape = list(read_png(run_.path / read_index(run_.path)[0]["file"]).shape)
        run_.manifest.update(frame_shape=frame_shape, ground_truth=cfg.ground_truth,
                             policy=cfg.policy)
        run_.finish({"frames": cfg.n_frames, "episodes": episodes,
                     **{f"{s}_frames": counts[s] for s in SPLITS}})
    print(f"[frames] {cfg.n_frames} frames of {env_id} ({counts}) in {run_.path}")
    return run_


def _write_frames(cfg: FramesConfig, steps: Iterator[Transition], out: Path,
                  progress: dict[str, Any] | None = None) -> tuple[dict[str, int], int]:
    """Write PNGs and the index as play goes, marking progress after every whole game; the
    index appears whole, by a rename, at the end."""
    counts = dict(progress["counts"]) if progress else dict.fromkeys(SPLITS, 0)
    partial = out / f".{INDEX}.partial"
    saved = progress["saved"] if progress else 0
    episodes = progress["games"] if progress else 0
    with open(partial, "r+" if progress else "w") as index, \
            tqdm(total=cfg.n_frames, initial=saved, disable=not cfg.progress,
                 desc="frames") as bar:
        if progress:
            index.truncate(progress["index_bytes"])
            index.seek(progress["index_bytes"])
        for t in steps:
            if saved >= cfg.n_frames:
                break
            if t.step % cfg.every == 0:
                split = split_of(saved, cfg.n_frames, cfg.splits)
                fname = f"{split}/{saved:06d}.png"
                atomic_write_bytes(out / fname, encode_png(t.info["native_frame"]))
                record = {"file": fname, "split": split, "episode": t.episode, "step": t.step,
                          "action": t.action, "reward": t.reward,
                          "lives": t.info.get("lives")}
                if cfg.ground_truth:
                    record["objects"] = t.info["objects"]
                index.write(json.dumps(record) + "\n")
                counts[split] += 1
                saved += 1
                episodes = t.episode + 1
                bar.update(1)
            if t.game_over:
                index.flush()
                os.fsync(index.fileno())
                atomic_write_json(out / PROGRESS, {"games": t.episode + 1, "saved": saved,
                                                   "counts": counts,
                                                   "index_bytes": index.tell()})
    os.replace(partial, out / INDEX)
    return counts, episodes


def read_index(run_path: str | Path) -> list[dict[str, Any]]:
    """The records of a frames run's ``frames.jsonl``."""
    path = Path(run_path) / INDEX
    if not path.is_file():
        raise UserError(f"{run_path} has no {INDEX}; is it a finished save_frames run?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
