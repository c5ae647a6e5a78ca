"""A video of a symbolic agent playing: the native frame with the detected objects' boxes and
type names, the action chosen, and the winning action's formula with the feature values
that decided it; optionally the teacher beside it on the same seed.

MP4 through OpenCV's encoder (``mp4v``), GIF through Pillow when the path ends in ``.gif`` or
no MP4 encoder opens. Written to a temporary file and renamed.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from diffses.cli import arg
from diffses.errors import UserError
from diffses.io import check_file_path
from diffses.perception import Perception
from diffses.play import (SymbolicAgent, evaluate_side_by_side, load_player, play_symbolic,
                          returns_summary)
from diffses.policy import SymbolicPolicy
from diffses.rollout import rollout
from diffses.runs import Run
from diffses.teacher import load_teacher, teacher_env
from gplearn_custom.params import at_least, require

SCALE = 2
PANEL = 360
FONT = cv2.FONT_HERSHEY_SIMPLEX
COLOURS = [(255, 80, 80), (80, 255, 80), (80, 160, 255), (255, 220, 60), (255, 80, 255),
           (60, 255, 255)]


class VideoWriter:
    """Frames (H, W, 3) RGB in, one MP4 or GIF file out."""

    def __init__(self, path: str | Path, fps: int = 30):
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(self.path.stem + ".partial" + self.path.suffix)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.gif = self.path.suffix.lower() == ".gif"
        self.frames: list[np.ndarray] = []
        self.writer: Any = None

    def add(self, frame: np.ndarray) -> None:
        if self.gif:
            self.frames.append(frame)
            return
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                self.gif, self.writer = True, None
                self.path = self.path.with_suffix(".gif")
                self.tmp = self.path.with_name(self.path.stem + ".partial.gif")
                self.frames.append(frame)
                return
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> Path:
        """Finish the file; returns its path (``.gif`` when MP4 was not available)."""
        if self.gif:
            from PIL import Image
            images = [Image.fromarray(f) for f in self.frames[::2]]
            if not images:
                raise UserError("no frames to write")
            images[0].save(self.tmp, save_all=True, append_images=images[1:],
                           duration=int(2000 / self.fps), loop=0)
        elif self.writer is not None:
            self.writer.release()
        self.tmp.replace(self.path)
        return self.path


def _text(img: np.ndarray, lines: list[str], x: int, y: int, scale: float = 0.45) -> None:
    for i, line in enumerate(lines):
        cv2.putText(img, line, (x, y + 18 * i), FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)


def annotate(frame: np.ndarray, state: list[dict[str, Any]] | None, type_names: dict[int, str],
             lines: list[str]) -> np.ndarray:
    """The frame enlarged, object boxes with type names drawn on it, ``lines`` in a panel."""
    big = cv2.resize(frame, (frame.shape[1] * SCALE, frame.shape[0] * SCALE),
                     interpolation=cv2.INTER_NEAREST)
    for obj in state or []:
        w, h = obj.get("width", 4.0), obj.get("height", 4.0)
        x0, y0 = obj["x_position"] - w / 2, obj["y_position"] - h / 2
        colour = COLOURS[obj["type"] % len(COLOURS)]
        p0 = (int(x0 * SCALE) - 2, int(y0 * SCALE) - 2)
        p1 = (int((x0 + w) * SCALE) + 2, int((y0 + h) * SCALE) + 2)
        cv2.rectangle(big, p0, p1, colour, 1)
        cv2.putText(big, type_names.get(obj["type"], str(obj["type"])), (p0[0], max(10, p0[1] - 3)),
                    FONT, 0.4, colour, 1, cv2.LINE_AA)
    panel = np.full((big.shape[0], PANEL, 3), 24, dtype=np.uint8)
    _text(panel, lines, 8, 20)
    return np.concatenate([big, panel], axis=1)


class ExplainedAgent(SymbolicAgent):
    """A symbolic agent that keeps what it saw and why it acted, for the video."""

    def __init__(self, policy: SymbolicPolicy, perception: Perception):
        super().__init__(policy, perception)
        self.formulas = policy.formulas(simplify=True)
        self.features_now = np.zeros(policy.layout.size)
        self.action = 0

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        self.features_now = self.features(info)
        self.action = int(self.policy.act(self.features_now[None])[0])
        return self.action

    def explanation(self) -> list[str]:
        """The action, its formula and the values of the features the formula reads."""
        meaning = self.policy.action_meanings[self.action]
        formula = self.formulas[self.action]
        names = self.policy.layout.names
        used = [n for n in names if re.search(rf"\b{re.escape(n)}\b", formula)]
        values = [f"  {n} = {self.features_now[names.index(n)]:.3f}" for n in used]
        wrapped = textwrap.wrap(f"{meaning} = {formula}", 42)[:8]
        return [f"action: {meaning}", "", "winning formula:", *wrapped, "", "features:",
                *values[:8]]


def _steps(venv: Any, actor: Any, max_steps: int) -> Iterator[Any]:
    for i, t in enumerate(rollout(venv, actor)):
        yield t
        if t.game_over or i + 1 >= max_steps:
            return


def record(policy: SymbolicPolicy, perception: Perception, teacher_run: Run, seed: int,
           path: str | Path, max_steps: int = 600, teacher: Any | None = None
           ) -> tuple[Path, float, float | None]:
    """Play one seeded game (up to ``max_steps``) and write its video; with ``teacher`` (a
    loaded model) the teacher plays the same seed beside it. Returns the file and the
    returns (symbolic, teacher or None)."""
    agent = ExplainedAgent(policy, perception)
    type_names = policy.layout.type_names
    venv = teacher_env(teacher_run, seed, clip_reward=False, **perception.env_kwargs)
    tvenv = None
    writer = VideoWriter(path)
    own, theirs = 0.0, None
    try:
        mine = _steps(venv, agent, max_steps)
        if teacher is not None:
            tvenv = teacher_env(teacher_run, seed, clip_reward=False, native_frames=True)
            theirs = 0.0
            actor = ExplainedTeacher(teacher, policy.action_meanings)
            other = _steps(tvenv, actor, max_steps)
        side = None
        for step in range(max_steps):
            t = next(mine, None)
            u = next(other, None) if tvenv is not None else None
            if t is None and u is None:
                break
            if t is not None:
                own += t.reward
                left = annotate(t.info["native_frame"], agent.state, type_names,
                                [f"symbolic  step {step}  return {own:+.0f}", "",
                                 *agent.explanation()])
            if u is not None:
                theirs += u.reward
                side = annotate(u.info["native_frame"], None, {},
                                [f"teacher (pixels)  return {theirs:+.0f}", "",
                                 f"action: {actor.meaning}"])
            writer.add(left if side is None else np.concatenate([left, side], axis=1))
    finally:
        venv.close()
        if tvenv is not None:
            tvenv.close()
    return writer.close(), own, theirs


class ExplainedTeacher:
    """The teacher's greedy action, remembered by name."""

    def __init__(self, model: Any, meanings: list[str]):
        self.model, self.meanings, self.meaning = model, meanings, ""

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        action = int(self.model.predict(obs, deterministic=True)[0][0])
        self.meaning = self.meanings[action]
        return action


@dataclass(frozen=True)
class PlayConfig:
    """Play a symbolic policy on seeded games through its perception, print the returns
    (beside the teacher's with --teacher-too), and with --video write the first game as a video:
    the frame, the detected objects, the action and the formula that chose it."""

    policy: str = arg("latest", "a distill or finetune run folder, 'latest' or a policy.json")
    teacher: str | None = arg(None, "teacher run folder (default: the policy's)")
    detector: str | None = arg(None, "'ocatari' or a SPACE checkpoint/run (default: the "
                                     "policy's)")
    episodes: int = arg(1, "seeded games to play")
    seed: int = arg(0, "seed of the first game")
    max_steps: int | None = arg(None, "cap on agent steps per game")
    sticky: float = arg(0.0, "sticky actions: each step repeats the previous action with this "
                             "probability (Atari; 0.25 is the ALE's evaluation protocol)")
    teacher_too: bool = arg(False, "the teacher plays the same seeds (and stands beside the "
                                   "agent in the video)")
    video: str | None = arg(None, "write the first game here (.mp4, or .gif)")
    video_steps: int = arg(600, "agent steps in the video")
    runs_dir: str = arg("runs", "root folder of all run folders")

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.video_steps < 1:
            raise UserError("--episodes and --video-steps must be at least 1")
        require([at_least(self.max_steps, 1, "--max-steps"),
                 (0 <= self.sticky < 1, "--sticky must be in [0, 1)")], UserError)
        if self.video and Path(self.video).suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"--video {self.video}: give a .mp4 or .gif path")


def run(cfg: PlayConfig) -> dict[str, Any]:
    """Play, print and (with --video) record; returns the returns."""
    if cfg.video:
        check_file_path(cfg.video, "--video")
    policy, teacher_run, detector = load_player(cfg.policy, cfg.runs_dir, cfg.teacher,
                                                cfg.detector)
    perception = Perception(detector)
    model = load_teacher(teacher_run, "cpu") if cfg.teacher_too else None
    if model is not None:
        out = evaluate_side_by_side(policy, perception, teacher_run, cfg.episodes, cfg.seed,
                                    cfg.max_steps, model=model, sticky=cfg.sticky)
    else:
        seeds = [cfg.seed + i for i in range(cfg.episodes)]
        out = {"seeds": seeds, "symbolic": returns_summary(play_symbolic(
            policy, perception, teacher_run, seeds, cfg.max_steps, cfg.sticky))}
    line = f"[play] {policy.env_id}, {cfg.episodes} game(s) from seed {cfg.seed}" + \
        (f" (sticky {cfg.sticky:g})" if cfg.sticky else "") + ": symbolic " \
           f"{out['symbolic']['mean']:+.2f} +/- {out['symbolic']['std']:.2f}"
    if "teacher" in out:
        line += f", teacher {out['teacher']['mean']:+.2f} +/- {out['teacher']['std']:.2f}"
    print(line)
    if cfg.video:
        video, own, theirs = record(policy, perception, teacher_run, cfg.seed, cfg.video,
                                    cfg.video_steps, model)
        out["video"] = str(video)
        print(f"[play] video of seed {cfg.seed} ({cfg.video_steps} steps at most): {video}")
    return out
