"""``--task eval``: score a trained SPACE detector against the OCAtari ground truth that
save_frames stored, on held-out frames; write ``eval.json`` and a PNG grid of boxes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from diffses.detection import Detection, boxes_from_objects, ocatari_categories
from diffses.envs import ocatari_game, resolve_env
from diffses.errors import UserError
from diffses.frames import encode_png
from diffses.io import atomic_write_bytes, atomic_write_json
from diffses.runs import Run
from space.config import SpaceConfig, config_from, load_config, to_dict
from space.data import load_frames, select_records
from space.evaluate import evaluate
from space.model import SpaceDetector, TypeModel, amend_checkpoint, read_checkpoint
from space.palette import palette_of
from space.register import Registration, profiles
from space.train import (FINAL, STAGE, Task, apply_threads, check_task, find_run,
                         fit_run_types, frames_run_for)
from space.visual import colour, draw_boxes, tile

#: keys an evaluation may override (the model itself is fixed by the checkpoint)
EVAL_KEYS = ("detect.", "eval.", "device", "num_threads")
TRUTH_COLOUR = (0, 255, 255)
GRID_SCALE = 2


def _flatten(section: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{k}": v for k, v in values.items()}


def load_for_eval(task: Task) -> tuple[SpaceDetector, Run | None, Path]:
    """The detector (checkpoint settings, then ``--config``'s detect/eval sections, then the
    overrides), its run (None for a bare checkpoint file) and the checkpoint path."""
    check_task(task)
    bad = [k for k in task.overrides if not k.startswith(EVAL_KEYS)]
    if bad:
        raise UserError(f"--task eval can only override detect.*, eval.*, device and "
                        f"num_threads, not {', '.join(bad)}")
    overrides: dict[str, Any] = {}
    if task.config is not None:
        file_cfg = to_dict(load_config(task.config, flag="--config"))
        overrides.update(_flatten("detect", file_cfg["detect"]))
        overrides.update(_flatten("eval", file_cfg["eval"]))
    overrides.update(task.overrides)
    config_from({}, overrides)  # the values are checked before any checkpoint is read
    ref = task.checkpoint or "latest"
    if Path(ref).is_file():
        if task.out is None:
            raise UserError(f"--checkpoint {ref} is a file, not a run folder: pass --out DIR "
                            f"for eval.json and the PNG")
        run, path = None, Path(ref)
    else:
        run = find_run("--checkpoint", ref, STAGE, task.runs_dir)
        path = run.path / FINAL
    try:
        payload = read_checkpoint(path)
    except UserError as err:
        raise UserError(f"--checkpoint: {err}") from None
    detector = SpaceDetector.from_payload(payload, str(overrides.get("device", "auto")),
                                          str(run.path if run else path), overrides)
    return detector, run, path


def ground_truth(records: list[dict[str, Any]], env_id: str, hud: bool
                 ) -> tuple[list[list[Detection]], dict[int, str]]:
    """OCAtari boxes of each record, and class id -> name."""
    game = ocatari_game(resolve_env(env_id))
    if game is None:
        raise UserError(f"{env_id} has no OCAtari ground truth to score against")
    type_ids = {c: i for i, c in enumerate(ocatari_categories(game))}
    truths = [boxes_from_objects(r["objects"], type_ids, hud) for r in records]
    return truths, {i: c for c, i in type_ids.items()}


def grid_image(frames: np.ndarray, preds: list[list[Detection]],
               truths: list[list[Detection]], count: int) -> np.ndarray:
    """Up to ``count`` frames, evenly spaced, with true (cyan) and predicted boxes (by type)."""
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    pictures = []
    for i in picks:
        boxes = truths[i] + preds[i]
        colours = [TRUTH_COLOUR] * len(truths[i]) + [colour(d.type) for d in preds[i]]
        centres = np.array([[d.x, d.y] for d in boxes]).reshape(-1, 2)
        sizes = np.array([[d.w, d.h] for d in boxes]).reshape(-1, 2)
        pictures.append(draw_boxes(frames[i], centres, sizes, colours, scale=GRID_SCALE))
    return tile(pictures, cols=min(4, len(pictures)))


def evaluate_task(task: Task) -> dict[str, Any]:
    """Score the detector on the frames run's held-out split; returns what eval.json holds."""
    detector, run, path = load_for_eval(task)
    cfg: SpaceConfig = detector.cfg
    apply_threads(cfg)
    env_id = run.env_id if run is not None else detector.env_id
    frames_run = frames_run_for(task.frames or "latest", task.runs_dir, env_id)
    split = cfg.eval.split
    records = select_records(frames_run.path, split, cfg.eval.max_frames)
    if not records and split == "test":
        split = "validation"
        records = select_records(frames_run.path, split, cfg.eval.max_frames)
    if not records:
        raise UserError(f"frames run {frames_run.path} has no '{cfg.eval.split}' frames to "
                        f"score (save more frames or set eval.split)")
    if any("objects" not in r for r in records):
        raise UserError(f"frames run {frames_run.path} has no ground truth objects; make one "
                        f"with `save_frames.py ... --ground-truth`")
    if cfg.eval.fit_types:
        refit_types(detector, path, frames_run)
    truths, class_names = ground_truth(records, frames_run.env_id, cfg.eval.hud)
    frames = load_frames(frames_run.path, records)
    detector.detect(frames[:cfg.detect.batch_size])
    t0 = time.perf_counter()
    preds = [detector.confident(found) for found in detector.detect(frames)]
    seconds = time.perf_counter() - t0
    scores = evaluate(preds, truths, class_names, cfg.eval.gate)
    result = {
        "checkpoint": str(path), "frames_run": str(frames_run.path), "env_id": frames_run.env_id,
        "split": split, "hud": cfg.eval.hud, "threshold": cfg.detect.threshold,
        "device": detector.device, "detect_fps": round(len(frames) / max(seconds, 1e-9), 1),
        "type_names": detector.type_names, **scores,
        "grid": {"truth_colour": list(TRUTH_COLOUR),
                 "type_colours": {i: list(colour(i)) for i in detector.type_names}},
    }
    out = Path(task.out) if task.out else run.path
    json_path = atomic_write_json(out / "eval.json", result)
    png_path = atomic_write_bytes(out / "eval_grid.png", encode_png(
        grid_image(frames, preds, truths, cfg.eval.grid_frames)))
    if run is not None and task.out is None:
        run.add_output(json_path)
        run.add_output(png_path)
        run.manifest["eval"] = {"frames_run": str(frames_run.path), "split": split,
                                "overall_f1": scores["overall"]["f1"],
                                "per_class_f1": {c: r["f1"] for c, r in
                                                 scores["per_class"].items()}}
        run.save()
    print(format_scores(result))
    print(f"[space] wrote {json_path} and {png_path}")
    if cfg.eval.name_types:
        name_types(path, scores["type_to_class"])
    if cfg.eval.calibrate:
        offsets = {int(t): (detector.offsets.get(int(t), np.zeros(2)) - xy).tolist()
                   for t, xy in scores["type_offset"].items()}
        amend_checkpoint(path, type_offsets=offsets)
        print(f"[space] recorded in {path} the offset of each type's centre from the ground "
              f"truth (px, added to every detection): " + ", ".join(
                  f"type{t} ({x:+.2f}, {y:+.2f})" for t, (x, y) in sorted(offsets.items())))
    if cfg.eval.palette:
        colours = palette_of(frames)
        amend_checkpoint(path, palette=colours)
        print(f"[space] recorded in {path} the palette of the scored frames: {len(colours)} "
              f"colours")
    if cfg.eval.register:
        amend_checkpoint(path, registration=Registration(*profiles(frames)).state())
        print(f"[space] recorded in {path} the row and column profiles of the scored frames "
              f"(detect.register)")
    return result


def refit_types(detector: SpaceDetector, path: Path, frames_run: Run) -> None:
    """Fit the detector's types afresh on the frames run's training frames, as
    ``detect.type_by`` and ``detect.types`` say, and record them, with ``detect.type_by``, in
    the checkpoint at ``path`` (the old types' names and offsets are dropped)."""
    cfg = detector.cfg
    payload = read_checkpoint(path)
    if payload.get("fast"):
        raise UserError(f"{path} holds a fast student, which gives the old types; refit the "
                        f"types of the SPACE checkpoint it was taught from")
    palette = detector.palette.colours if detector.palette is not None else None
    state, info = fit_run_types(detector.model, cfg, frames_run, detector.device, palette)
    config = payload["config"]
    config.setdefault("detect", {})["type_by"] = cfg.detect.type_by
    amend_checkpoint(path, types=state, config=config, type_classes={}, type_offsets={})
    detector.offsets = {}
    detector.types = TypeModel.from_state(state)
    detector.type_names = {i: f"type{i}" for i in range(info["k"])}
    detector.classes = {}
    print(f"[space] refitted the types of {path} over {cfg.detect.type_by} on "
          f"{frames_run.path}: {info['k']} types, sizes {info.get('sizes', [])}"
          + ("" if cfg.eval.name_types else "; name them with eval.name_types=true"))


def name_types(path: Path, classes: dict[int, str]) -> None:
    """Record in the checkpoint at ``path`` the class each learned type matched (atomically)."""
    if not classes:
        raise UserError(f"no detection matched a ground-truth object; the types of {path} "
                        f"stay unnamed")
    amend_checkpoint(path, type_classes={int(t): c for t, c in classes.items()})
    print(f"[space] named the types in {path}: " +
          ", ".join(f"type{t} = {c}" for t, c in sorted(classes.items())))


def format_scores(result: dict[str, Any]) -> str:
    """A small table of per-class scores."""
    lines = [f"[space] {result['frames']} {result['split']} frames of {result['env_id']}, gate "
             f"{result['gate_px']} px, detection {result['detect_fps']} frames/s "
             f"on {result['device']}",
             f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>8}{'centre err':>12}"]
    for name, row in result["per_class"].items():
        err = "-" if row["centre_error"] is None else f"{row['centre_error']:.2f}"
        lines.append(f"{name:<14}{row['precision']:>10.3f}{row['recall']:>10.3f}"
                     f"{row['f1']:>8.3f}{err:>12}")
    overall = result["overall"]
    lines.append(f"{'overall':<14}{overall['precision']:>10.3f}{overall['recall']:>10.3f}"
                 f"{overall['f1']:>8.3f}")
    lines.append(f"types -> classes {result['type_to_class']}, purity {result['purity']:.3f}")
    return "\n".join(lines)
