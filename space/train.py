"""Train SPACE on a frames run: run folder, checkpoints with rotation, resume, TensorBoard,
and the z_what types fitted at the end into ``checkpoint.pt``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from diffses.envs import same_game
from diffses.errors import UserError
from diffses.frames import INDEX, read_png
from diffses.frames import STAGE as FRAMES_STAGE
from diffses.io import check_folder_path
from diffses.runs import Run, check_runs_dir, resolve_run
from diffses.utils import resolve_device, seed_everything
from space.config import DetectConfig, SpaceConfig, config_from, load_config, to_dict
from space.data import augment, crop_box, load_frames, load_inputs, select_records
from space.fast import fast_config, fast_payload, train_fast
from space.model import (APPEARANCE_DIM, Hyper, Space, SpaceDetector, build_model, fit_types,
                         read_checkpoint, save_checkpoint, schedule, type_input)
from space.palette import palette_of
from space.register import Registration, profiles
from space.visual import colour, draw_boxes, tile

STAGE = "space"
CHECKPOINTS = "checkpoints"
FINAL = "checkpoint.pt"


@dataclass(frozen=True)
class Task:
    """What ``space/main.py`` was asked to do (the flags and the trailing overrides)."""

    task: str
    config: str | None
    frames: str | None
    runs_dir: str
    checkpoint: str | None
    out: str | None
    overrides: dict[str, Any]


def checkpoints(run_path: Path) -> list[Path]:
    """A run's interval checkpoints, oldest first."""
    return sorted((run_path / CHECKPOINTS).glob("ckpt_*.pt"))


def apply_threads(cfg: SpaceConfig) -> None:
    """Use ``cfg.num_threads`` torch CPU threads (0 leaves torch's default)."""
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)


def find_run(label: str, ref: str, stage: str, runs_dir: str, env_id: str | None = None,
             complete_only: bool = True) -> Run:
    """:func:`resolve_run`, its mistakes starting with ``label`` (the flag the reference came
    from)."""
    try:
        return resolve_run(ref, stage, runs_dir, env_id, complete_only)
    except UserError as err:
        raise UserError(f"{label}: {err}") from None


def frames_run_for(ref: str, runs_dir: str, env_id: str | None = None,
                   label: str = "--frames") -> Run:
    """The frames run to read, refusing one of another game than ``env_id``."""
    run = find_run(label, ref, FRAMES_STAGE, runs_dir, env_id)
    if env_id is not None and not same_game(run.env_id, env_id):
        raise UserError(f"{label}: frames run {run.path} is of {run.env_id}, another game than "
                        f"{env_id}")
    return run


def check_task(task: Task) -> None:
    """Refuse flags the task does not use and a ``--runs-dir`` that is not a folder."""
    if task.task == "train" and task.out is not None:
        raise UserError("--out is for --task eval only (a training run writes into its own "
                        "run folder under --runs-dir)")
    if "resume" in task.overrides and not isinstance(task.overrides["resume"], bool):
        raise UserError(f"config key 'resume' needs True or False, got "
                        f"{task.overrides['resume']!r}")
    check_runs_dir(task.runs_dir)
    if task.out is not None:
        check_folder_path(task.out, "--out")


def check_frames(frames: Run, cfg: SpaceConfig) -> None:
    """Refuse a frames run without training frames, or whose frames ``data.crop`` misses."""
    records = select_records(frames.path, "train")
    if not records:
        raise UserError(f"frames run {frames.path} has no training frames")
    crop_box(cfg.data, read_png(frames.path / records[0]["file"]).shape)


def _prepare(task: Task) -> tuple[SpaceConfig, Run, Run, str]:
    """Resolve the config, the frames run, the (new or resumed) SPACE run and the device."""
    check_task(task)
    file_cfg = load_config(task.config, flag="--config") if task.config is not None else None
    resume = task.overrides.get("resume")
    if resume is None and file_cfg is not None:
        resume = file_cfg.resume
    if resume:
        frames_env = frames_run_for(task.frames, task.runs_dir).env_id if task.frames else None
        run = find_run("--checkpoint", task.checkpoint or "latest", STAGE, task.runs_dir,
                       env_id=frames_env, complete_only=False)
        cfg = config_from(run.config, task.overrides)
        device = resolve_device(cfg.device)
        if task.frames:
            frames = frames_run_for(task.frames, task.runs_dir, run.env_id)
        else:
            frames = frames_run_for(run.manifest["frames_run"], task.runs_dir, run.env_id,
                                    label=f"the frames run of {run.path} (pass --frames)")
        check_frames(frames, cfg)
        run.manifest.update(status="running", config=to_dict(cfg))
        return cfg, frames, run, device
    if task.checkpoint is not None:
        raise UserError("--checkpoint with --task train names a run to resume: add resume=true "
                        "(or leave --checkpoint out to start a new run)")
    if task.config is None:
        raise UserError("--task train needs --config (e.g. space/configs/atari_pong.yaml)")
    if task.frames is None:
        raise UserError("--task train needs --frames RUN (a save_frames run folder, or latest)")
    cfg = load_config(task.config, task.overrides, flag="--config")
    device = resolve_device(cfg.device)
    frames = frames_run_for(task.frames, task.runs_dir)
    check_frames(frames, cfg)
    run = Run.create(task.runs_dir, STAGE, frames.env_id, cfg.name, cfg.seed, cfg)
    run.manifest["frames_run"] = str(frames.path)
    run.add_input("frames_index", frames.path / INDEX)
    run.save()
    return cfg, frames, run, device


def preview(model: Space, x: torch.Tensor, hp: Hyper, detect: DetectConfig) -> list[np.ndarray]:
    """Input with boxes | reconstruction | foreground | background, per image, 2x enlarged."""
    model.eval()
    with torch.no_grad():
        out = model(x, hp)
        found = model.infer(x, detect.threshold, detect.alpha_boxes)
    model.train()
    h, w = x.shape[-2:]
    scale = np.array([w, h], np.float64)
    pictures = []
    for i in range(len(x)):
        images = [t[i].clamp(0, 1).mul(255).byte().permute(1, 2, 0).cpu().numpy()
                  for t in (x, out["recon"], out["fg"] * out["alpha"], out["bg"])]
        _, centre, size, _ = (t.cpu().double().numpy() for t in found[i])
        pictures.append(draw_boxes(images[0], (centre + 1) / 2 * scale, size * scale,
                                   [colour(0)] * len(centre), scale=2))
        pictures += [draw_boxes(im, np.zeros((0, 2)), np.zeros((0, 2)), [], scale=2)
                     for im in images[1:]]
    return pictures


def fit_run_types(model: Space, cfg: SpaceConfig, frames: Run, device: str,
                  palette: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the k-means types on what ``detect.type_by`` names (z_what or appearance) of the
    objects found in training frames."""
    records = select_records(frames.path, "train", cfg.detect.type_frames)
    detector = SpaceDetector(model, cfg, None, device, palette=palette)
    z = []
    for start in range(0, len(records), cfg.detect.batch_size):
        chunk = load_frames(frames.path, records[start:start + cfg.detect.batch_size])
        z += [type_input(obj, cfg) for obj in detector.raw(chunk)]
    dim = cfg.model.z_what if cfg.detect.type_by == "z_what" else APPEARANCE_DIM
    points = np.concatenate(z) if z else np.zeros((0, dim))
    types, info = fit_types(points, cfg.detect.types, cfg.detect.max_types, cfg.seed)
    info["objects_per_frame"] = round(len(points) / max(len(records), 1), 3)
    return types.state(), info


def train(task: Task) -> Run:
    """Train (or resume) a SPACE run; returns the finished run."""
    cfg, frames, run, device = _prepare(task)
    apply_threads(cfg)
    with run.failing():
        return _train(cfg, frames, run, device)


def _train(cfg: SpaceConfig, frames: Run, run: Run, device: str) -> Run:
    from torch.utils.tensorboard import SummaryWriter
    records = select_records(frames.path, "train")
    print(f"[space] loading {len(records)} training frames of {frames.env_id} from {frames.path}")
    inputs = torch.from_numpy(load_inputs(frames.path, records, cfg.data)).to(device)  # (N,3,h,w)
    natives = load_frames(frames.path, records) if cfg.train.augment else None  # (N,H,W,3)
    shown = inputs[np.linspace(0, len(inputs) - 1, 4).astype(int)].float() / 255      # (4,3,h,w)

    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    opt_fg = torch.optim.Adam(model.fg.parameters(), lr=cfg.train.lr_fg)
    opt_bg = torch.optim.Adam(model.bg.parameters(), lr=cfg.train.lr_bg)
    rng = np.random.default_rng(cfg.seed)
    step, seconds = 0, 0.0
    found = checkpoints(run.path)
    if found:
        state = read_checkpoint(found[-1], device)
        model.load_state_dict(state["model"])
        opt_fg.load_state_dict(state["opt_fg"])
        opt_bg.load_state_dict(state["opt_bg"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step, seconds = state["step"], state["train_seconds"]
        print(f"[space] resuming {run.path} from step {step} ({found[-1].name})")
    run.manifest["device"] = device
    run.save()

    def save(at: int, elapsed: float) -> None:
        extra = {"opt_fg": opt_fg.state_dict(), "opt_bg": opt_bg.state_dict(),
                 "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if device.startswith("cuda")
                 else None, "train_seconds": elapsed}
        save_checkpoint(run.path / CHECKPOINTS / f"ckpt_{at:08d}.pt", model, cfg, at, extra)
        for old in checkpoints(run.path)[:-max(cfg.train.keep_checkpoints, 1)]:
            old.unlink()

    writer = SummaryWriter(str(run.path / "tb"), purge_step=step if step else None)
    tc = cfg.train
    print(f"[space] training steps {step} -> {tc.max_steps} on {device}, batch {tc.batch_size}, "
          f"{torch.get_num_threads()} threads; run folder {run.path}")
    model.train()
    bar = tqdm(total=tc.max_steps, initial=step, disable=not tc.progress, desc="space",
               dynamic_ncols=True)
    window: list[dict[str, float]] = []
    t0 = time.perf_counter() - seconds
    try:
        while step < tc.max_steps:
            idx = rng.integers(0, len(inputs), tc.batch_size)
            x = (inputs[torch.from_numpy(idx).to(device)] if natives is None else
                 torch.from_numpy(augment(natives[idx], cfg.data, tc, rng)).to(device)
                 ).float() / 255                                          # (B, 3, h, w)
            hp = schedule(cfg.loss, step)
            out = model(x, hp)
            opt_fg.zero_grad(set_to_none=True)
            opt_bg.zero_grad(set_to_none=True)
            out["loss"].backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt_fg.step()
            opt_bg.step()
            step += 1
            window.append({"loss": out["loss"].item(),
                           **{k: v.item() for k, v in out["terms"].items()}})
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.max_steps:
                means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                for key, value in means.items():
                    writer.add_scalar(f"loss/{key}", value, step)
                for key, value in hp._asdict().items():
                    if value is not None:
                        writer.add_scalar(f"schedule/{key}", value, step)
                writer.add_scalar("time/steps_per_second",
                                  step / max(time.perf_counter() - t0, 1e-9), step)
                bar.set_postfix(loss=f"{means['loss']:.0f}", objects=f"{means['objects']:.1f}")
                if not tc.progress:
                    print(f"[space] step {step}/{tc.max_steps} loss {means['loss']:.1f} "
                          f"mse {means['mse']:.5f} objects {means['objects']:.2f}", flush=True)
                window.clear()
            if step % tc.image_every == 0 or step == tc.max_steps:
                pictures = preview(model, shown, hp, cfg.detect)
                writer.add_image("preview", tile(pictures, 4), step, dataformats="HWC")
            if step % tc.checkpoint_every == 0 or step == tc.max_steps:
                save(step, time.perf_counter() - t0)
    finally:
        bar.close()
        writer.close()
    seconds = time.perf_counter() - t0

    print(f"[space] fitting the object types (k-means over {cfg.detect.type_by})")
    some = load_frames(frames.path, select_records(frames.path, "train", 100))
    palette = palette_of(some)
    types, type_info = fit_run_types(model, cfg, frames, device, palette)
    final = save_checkpoint(run.path / FINAL, model, cfg, step,
                            {"types": types, "env_id": frames.env_id,
                             "palette": palette,
                             "registration": Registration(*profiles(some)).state(),
                             "frames_run": str(frames.path), "train_seconds": seconds})
    run.add_output(final)
    run.finish({"steps": step, "train_seconds": round(seconds, 1),
                "steps_per_second": round(step / max(seconds, 1e-9), 2),
                "types": type_info["k"], "type_sizes": type_info.get("sizes", []),
                "objects_per_frame": type_info["objects_per_frame"],
                "checkpoint_mb": round(final.stat().st_size / 2**20, 3)})
    print(f"[space] {type_info['k']} types, {type_info['objects_per_frame']} objects per frame; "
          f"checkpoint {final}; tensorboard --logdir {run.path / 'tb'}")
    return run


def fast_task(task: Task) -> Run:
    """``--task fast``: train the student of a SPACE checkpoint (``--checkpoint``, a run
    folder, ``latest`` or a file) on a frames run (``--frames``, default the one SPACE was
    trained on) into a new SPACE run whose ``checkpoint.pt`` holds both; returns the run."""
    from torch.utils.tensorboard import SummaryWriter

    check_task(task)
    if task.config is not None or task.out is not None:
        raise UserError("--task fast takes its config from --checkpoint (change it with fast.* "
                        "overrides) and writes a run folder under --runs-dir; drop "
                        "--config/--out")
    ref = task.checkpoint or "latest"
    path = Path(ref) if Path(ref).is_file() else \
        find_run("--checkpoint", ref, STAGE, task.runs_dir).path / FINAL
    try:
        payload = read_checkpoint(path)
    except UserError as err:
        raise UserError(f"--checkpoint: {err}") from None
    cfg = fast_config(payload, task.overrides)
    apply_threads(cfg)
    device = resolve_device(cfg.device)
    env_id = payload.get("env_id")
    frames = frames_run_for(task.frames or payload.get("frames_run") or "latest", task.runs_dir,
                            env_id)
    detector = SpaceDetector.from_payload(payload, device, str(path), {"detect.fast": False})
    if detector.cfg.detect.type_by != "z_what":
        raise UserError(f"{path} reads its types from {detector.cfg.detect.type_by}; the fast "
                        f"student learns types read from z_what")
    name = str(task.overrides.get("name", f"{cfg.name}_fast"))
    run = Run.create(task.runs_dir, STAGE, env_id or frames.env_id, name, cfg.seed,
                     to_dict(cfg))
    with run.failing():
        run.add_input("checkpoint", path)
        run.manifest["frames_run"] = str(frames.path)
        writer = SummaryWriter(str(run.path / "tb"))
        try:
            net, info = train_fast(detector, frames, cfg, device, writer)
        finally:
            writer.close()
        kept = {k: v for k, v in payload.items()
                if k not in ("format", "config", "step", "model", "fast")}
        final = save_checkpoint(run.path / FINAL, detector.model, cfg, payload["step"],
                                {**kept, "fast": fast_payload(net.cpu(), info)})
        run.add_output(final)
        run.finish({"fast": info, "checkpoint_mb": round(final.stat().st_size / 2**20, 3)})
    print(f"[space] fast student: {info.get('validation', {})}; checkpoint {final}")
    return run
