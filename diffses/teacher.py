"""Stage I: train a pixel PPO teacher (SB3 CnnPolicy) with checkpoints, resume and evaluation."""

from __future__ import annotations

import dataclasses
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecTransposeImage

from diffses.cli import arg, parse_overrides
from diffses.envs import SingleGame, make_game, make_vec_env, resolve_env
from diffses.errors import UserError
from diffses.hyperparams import DEFAULT_FILE, load_hyperparams, split_hyperparams
from diffses.io import atomic_save, atomic_write_json, read_json
from diffses.runs import Run, jsonable, resume_config
from diffses.utils import resolve_device, seed_everything
from gplearn_custom.params import at_least, require

STAGE = "teacher"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TeacherConfig:
    """Train a pixel PPO teacher (Stable-Baselines3 CnnPolicy) on an Atari or Retro game.

    Hyperparameters come from hyperparams/ppo.yml (rl-zoo format); the run folder gets
    model.zip, best_model.zip, checkpoints/, TensorBoard logs (tb/) and manifest.json.
    """

    env: str = arg("ALE/Pong-v5", "environment id: any ale-py id or stable-retro game")
    n_timesteps: int | None = arg(None, "total agent steps (default: the hyperparams file's)",
                                  aliases=("-n",))
    seed: int = arg(0, "seed for python, numpy, torch and the envs")
    device: str = arg("auto", "torch device: auto, cpu, cuda or cuda:N")
    n_envs: int | None = arg(None, "parallel envs (default: the hyperparams file's)")
    hyperparams: tuple[str, ...] = arg((), "overrides as key=value, e.g. n_steps=64 "
                                       "learning_rate=lin_1e-4 (rl-zoo's key:value works too)")
    hyperparams_file: str = arg(str(DEFAULT_FILE), "rl-zoo style yaml of PPO hyperparameters")
    preset: str = arg("auto", "entry of the hyperparameters file: auto (the env id's entry, "
                              "else atari-cpu/retro-cpu on a CPU, else atari/retro), or a key "
                              "such as atari (the rl-zoo setting) or atari-cpu")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("ppo", "run name, part of the run folder's name")
    resume: str | None = arg(None, "continue a run (its folder, or 'latest') from its newest "
                                   "checkpoint up to --n-timesteps")
    checkpoint_freq: int = arg(100_000, "agent steps between checkpoints")
    keep_checkpoints: int = arg(3, "how many recent checkpoints to keep")
    eval_freq: int = arg(250_000, "agent steps between evaluations keeping the best model "
                                  "(0: off)")
    eval_episodes: int = arg(5, "episodes per periodic evaluation")
    final_eval_episodes: int = arg(10, "episodes of the final evaluation in manifest.json")
    eval_max_steps: int | None = arg(None, "cap on agent steps per evaluation episode")
    progress: bool = arg(True, "show a progress bar", negative="--no-progress")

    def __post_init__(self) -> None:
        if self.n_timesteps is not None and self.n_timesteps <= 0:
            raise UserError("--n-timesteps must be positive")
        if self.checkpoint_freq <= 0:
            raise UserError("--checkpoint-freq must be positive")
        require([
            at_least(self.final_eval_episodes, 0, "--final-eval-episodes"),
            at_least(self.eval_episodes, 1, "--eval-episodes"),
            at_least(self.n_envs, 1, "--n-envs"),
            at_least(self.keep_checkpoints, 1, "--keep-checkpoints"),
            (self.eval_freq >= 0, "--eval-freq must be >= 0 (0: no evaluations)"),
            at_least(self.eval_max_steps, 1, "--eval-max-steps"),
        ], UserError)


def save_model(model: PPO, path: Path) -> Path:
    """Save an SB3 model atomically (to memory, then one rename)."""
    return atomic_save(path, model.save)


class Checkpointer(BaseCallback):
    """Save the model every ``every`` agent steps into ``folder``, keeping the last ``keep``."""

    def __init__(self, folder: Path, every: int, keep: int):
        super().__init__()
        self.folder, self.every, self.keep = folder, every, max(keep, 1)

    def _on_step(self) -> bool:
        if self.num_timesteps // self.every > (self.num_timesteps - self.training_env.num_envs) \
                // self.every:
            save_model(self.model, self.folder / f"ckpt_{self.num_timesteps:012d}.zip")
            for old in sorted(self.folder.glob("ckpt_*.zip"))[:-self.keep]:
                old.unlink()
        return True


class SaveBest(BaseCallback):
    """Called by EvalCallback on a new best mean return: save best_model.zip and best.json."""

    def __init__(self, run_path: Path):
        super().__init__()
        self.run_path = run_path

    def _on_step(self) -> bool:
        parent = self.parent
        save_model(self.model, self.run_path / "best_model.zip")
        atomic_write_json(self.run_path / "best.json",
                          {"mean_reward": float(parent.best_mean_reward),
                           "timesteps": int(self.num_timesteps)})
        return True


def latest_checkpoint(run_path: Path) -> Path | None:
    """The newest checkpoint of a run, or None."""
    ckpts = sorted((run_path / CHECKPOINTS).glob("ckpt_*.zip"))
    return ckpts[-1] if ckpts else None


def resolve_config(cfg: TeacherConfig) -> tuple[TeacherConfig, Run | None]:
    """For ``--resume``: the stored config of that run (and its preset) with this call's
    total, device and progress."""
    if cfg.resume is None:
        return cfg, None
    now = {"device": cfg.device, "progress": cfg.progress}
    if cfg.n_timesteps is not None:
        now["n_timesteps"] = cfg.n_timesteps
    stored, run = resume_config(TeacherConfig, cfg.resume, STAGE, cfg.runs_dir, True, **now)
    return dataclasses.replace(stored, preset=run.manifest.get("preset", stored.preset)), run


def teacher_env_kwargs(hyper: dict[str, Any]) -> dict[str, Any]:
    """Env keyword arguments a teacher was trained with (from its resolved hyperparameters)."""
    return dict(hyper.get("env_kwargs") or {})


def run(cfg: TeacherConfig) -> Run:
    """Train (or resume) a teacher; returns the finished run."""
    cfg, resumed = resolve_config(cfg)
    spec = resolve_env(cfg.env)
    device = resolve_device(cfg.device)
    overrides = parse_overrides(cfg.hyperparams)
    preset, hyper = load_hyperparams(spec.env_id, spec.backend, overrides, cfg.hyperparams_file,
                                     cfg.preset, device)
    if cfg.n_envs is not None:
        hyper["n_envs"] = cfg.n_envs
    if cfg.n_timesteps is not None:
        hyper["n_timesteps"] = cfg.n_timesteps
    extras, ppo_kwargs = split_hyperparams(hyper)
    total = extras["n_timesteps"]
    n_envs = int(extras.get("n_envs", 1))
    if n_envs * ppo_kwargs.get("n_steps", 2048) < 2:
        raise UserError("a rollout of n_steps x n_envs must hold at least 2 steps")
    env_kwargs = teacher_env_kwargs(extras)

    if resumed is None:
        run_ = Run.create(cfg.runs_dir, STAGE, spec.env_id, cfg.name, cfg.seed, cfg)
    else:
        run_ = resumed
        run_.manifest["config"] = jsonable(cfg)
        run_.manifest["status"] = "running"
    run_.manifest["preset"] = preset
    run_.manifest["hyperparams"] = hyper
    run_.manifest["device"] = device
    run_.save()
    path = run_.path

    with run_.failing():
        venv = make_vec_env(spec.env_id, n_envs, cfg.seed, int(extras.get("frame_stack", 4)),
                            **env_kwargs)
        eval_kwargs = dict(env_kwargs, max_episode_steps=cfg.eval_max_steps)
        eval_env = make_vec_env(spec.env_id, 1, cfg.seed + 10_000,
                                int(extras.get("frame_stack", 4)), **eval_kwargs)
        eval_env = VecTransposeImage(eval_env)
        try:
            ckpt = latest_checkpoint(path) if resumed is not None else None
            if ckpt is not None:
                model = PPO.load(ckpt, env=venv, device=device)
                seed_everything(cfg.seed + model.num_timesteps)
                model.set_random_seed(cfg.seed + model.num_timesteps)
            else:
                seed_everything(cfg.seed)
                model = PPO(extras.get("policy", "CnnPolicy"), venv, seed=cfg.seed, device=device,
                            tensorboard_log=str(path / "tb"), verbose=0, **ppo_kwargs)
            start = model.num_timesteps
            remaining = total - start
            segment = {"from": int(start), "total": int(total), "device": device}
            if remaining > 0:
                run_.manifest.setdefault("segments", []).append(segment)
                run_.save()
            callbacks: list[BaseCallback] = [
                Checkpointer(path / CHECKPOINTS, cfg.checkpoint_freq, cfg.keep_checkpoints)]
            if cfg.eval_freq > 0:
                evaluator = EvalCallback(eval_env, n_eval_episodes=cfg.eval_episodes,
                                         eval_freq=max(cfg.eval_freq // n_envs, 1),
                                         callback_on_new_best=SaveBest(path), deterministic=True,
                                         verbose=0)
                best = path / "best.json"
                if best.is_file():
                    evaluator.best_mean_reward = read_json(best)["mean_reward"]
                callbacks.append(evaluator)
            t0 = time.perf_counter()
            if remaining > 0:
                print(f"[teacher] {spec.env_id}: training {start} -> {total} agent steps "
                      f"on {device}, {n_envs} envs, preset {preset}; run folder {path}")
                model.learn(total_timesteps=remaining, callback=CallbackList(callbacks),
                            reset_num_timesteps=ckpt is None, tb_log_name="PPO",
                            progress_bar=cfg.progress)
            seconds = time.perf_counter() - t0
            save_model(model, path / "model.zip")
            if remaining > 0:
                segment.update(to=int(model.num_timesteps), seconds=round(seconds, 2))
            summary: dict[str, Any] = {
                "timesteps": int(model.num_timesteps),
                "train_seconds": round(seconds, 2),
                "steps_per_second": round((model.num_timesteps - start) / max(seconds, 1e-9), 1),
            }
            if cfg.final_eval_episodes > 0:
                mean, std = evaluate_policy(model, eval_env,
                                            n_eval_episodes=cfg.final_eval_episodes,
                                            deterministic=True)
                summary.update(final_eval_mean=float(mean), final_eval_std=float(std),
                               final_eval_episodes=cfg.final_eval_episodes)
                print(f"[teacher] final evaluation over {cfg.final_eval_episodes} episodes: "
                      f"{mean:.2f} +/- {std:.2f}")
            if (path / "best.json").is_file():
                summary["best_eval_mean"] = read_json(path / "best.json")["mean_reward"]
        finally:
            venv.close()
            eval_env.close()
        run_.add_output(path / "model.zip")
        if (path / "best_model.zip").is_file():
            run_.add_output(path / "best_model.zip")
        run_.finish(summary)
    print(f"[teacher] model: {path / 'model.zip'}  manifest: {path / 'manifest.json'}  "
          f"tensorboard: {path / 'tb'}")
    return run_


def load_teacher(run_: Run, device: str = "cpu", which: str = "model") -> PPO:
    """Load a teacher run's ``model.zip`` (or ``best_model.zip`` with ``which='best'``)."""
    path = run_.path / f"{'best_model' if which == 'best' else 'model'}.zip"
    if not path.is_file():
        raise UserError(f"teacher run {run_.path} has no {path.name}; is the run finished?")
    device = resolve_device(device)
    try:
        return PPO.load(path, device=device)
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, RuntimeError) as err:
        raise UserError(f"{path} is not a readable Stable-Baselines3 model "
                        f"({type(err).__name__}: {err})") from None


def teacher_env(run_: Run, seed: int, env_id: str | None = None, frames: bool = True,
                **env_kwargs: Any) -> VecEnv | SingleGame:
    """One env with the teacher's observation pipeline (frame stack and env kwargs), of the
    teacher's game or of ``env_id``; without ``frames``, the same game for a player that reads
    only ``info`` (:func:`diffses.envs.make_game`)."""
    hyper = run_.manifest.get("hyperparams", {})
    kwargs = dict(teacher_env_kwargs(hyper), **env_kwargs)
    if not frames:
        return make_game(env_id or run_.env_id, seed, **kwargs)
    return make_vec_env(env_id or run_.env_id, 1, seed, int(hyper.get("frame_stack", 4)),
                        **kwargs)
