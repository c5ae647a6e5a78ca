"""SPACE: the model's loss and shapes, learning on real Pong frames, checkpoints, detections,
types, and the space/main.py CLI (train, eval, resume, errors) with tiny budgets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from conftest import SPACE_PONG_CONFIG as PONG_CONFIG
from conftest import TINY_SPACE as TINY
from diffses.detection import detector_for, load_detector
from diffses.errors import UserError
from diffses.features import FeatureLayout
from diffses.perception import Perception
from diffses.play import load_player, play_symbolic
from diffses.policy import SymbolicPolicy
from diffses.frames import FramesConfig, run as save_frames
from space.config import SpaceConfig, config_from, load_config, to_dict
from diffses.envs import VisualShift
from space.data import augment, load_frames, load_inputs, preprocess, random_shift, select_records
from space.main import main as space_main
from space.model import (SpaceDetector, build_model, fit_types, read_checkpoint,
                         save_checkpoint, schedule)
from space.palette import Palette, palette_of
from space.register import Registration
from space.train import Task, train

TINY_ARGS = [str(v) if not isinstance(v, list) else json.dumps(v)
             for kv in TINY.items() for v in kv]


def tiny_config(**extra) -> SpaceConfig:
    return load_config(PONG_CONFIG, {**TINY, **extra})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(pong_frames, tmp_path_factory):
    """A SPACE run trained for 6 steps on the Pong frames (in-process)."""
    runs = pong_frames.path.parent.parent
    task = Task("train", str(PONG_CONFIG), str(pong_frames.path), str(runs), None, None,
                {**TINY, "train.max_steps": 6, "train.checkpoint_every": 3,
                 "detect.threshold": 0.0})
    return train(task)


def batch(frames_run, cfg: SpaceConfig, n: int = 8) -> torch.Tensor:
    records = select_records(frames_run.path, "train", n)
    return torch.from_numpy(load_inputs(frames_run.path, records, cfg.data)).float() / 255


def test_loss_is_finite_and_shapes_are_right():
    torch.manual_seed(0)
    for k in (1, 3):
        cfg = tiny_config(**{"model.bg_components": k})
        model = build_model(cfg)
        x = torch.rand(2, 3, 32, 32)
        out = model(x, schedule(cfg.loss, 0))
        assert out["loss"].shape == () and torch.isfinite(out["loss"])
        assert out["recon"].shape == out["fg"].shape == out["bg"].shape == (2, 3, 32, 32)
        assert out["alpha"].shape == (2, 1, 32, 32)
        assert out["pres_prob"].shape == (2, 16)
        assert out["centre"].shape == out["size"].shape == (2, 16, 2)
        assert all(torch.isfinite(v) for v in out["terms"].values())
        out["loss"].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        model.eval()
        found = model.infer(x, threshold=0.0)
        assert len(found) == 2
        prob, centre, size, z_what = found[0]
        assert centre.shape == (16, 2) and z_what.shape == (16, 4) and prob.shape == (16,)


def test_schedules_anneal_and_warm_up():
    cfg = load_config(PONG_CONFIG)
    first, last = schedule(cfg.loss, 0), schedule(cfg.loss, 10**6)
    prior = cfg.loss.pres_prior
    assert first.pres_prior == prior.start > last.pres_prior == prior.end
    assert first.tau == cfg.loss.tau.start > last.tau == cfg.loss.tau.end
    assert first.fixed_alpha == cfg.loss.fix_alpha_value and last.fixed_alpha is None
    mid = schedule(cfg.loss, (cfg.loss.tau.begin + cfg.loss.tau.finish) // 2).tau
    assert last.tau < mid < first.tau


def test_boundary_loss_is_an_option_that_switches_off():
    cfg = tiny_config(**{"loss.boundary_weight": 2.0, "loss.boundary_until": 10,
                         "loss.scale_mean.start": 2.0})  # boxes larger than a cell
    assert schedule(cfg.loss, 9).boundary_weight == 2.0
    assert schedule(cfg.loss, 10).boundary_weight == 0.0
    model = build_model(cfg)
    x = torch.rand(2, 3, 32, 32)
    on = schedule(cfg.loss, 0)
    torch.manual_seed(0)
    with_term = model(x, on)
    torch.manual_seed(0)
    without = model(x, on._replace(boundary_weight=0.0))
    boundary = with_term["terms"]["boundary"]
    assert boundary > 0
    torch.testing.assert_close(with_term["loss"] - without["loss"], 2.0 * boundary)


def test_a_light_encoder_keeps_the_grid_with_a_stride_4_first_layer():
    cfg = tiny_config(**{"model.enc_channels": [8, 16], "model.enc_strides": [4, 2],
                         "model.feat_layers": 1})
    model = build_model(cfg)
    convs = [m for m in model.fg.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(4, 4), (2, 2), (1, 1)]
    x = torch.rand(2, 3, *cfg.data.image_size)
    assert model.fg.cells(x)["pres_logit"].shape == (2, 16)
    assert torch.isfinite(model(x, schedule(cfg.loss, 0))["loss"])


def test_a_few_steps_on_real_pong_frames_lower_the_loss(pong_frames):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    x = batch(pong_frames, cfg)
    hp = schedule(cfg.loss, 0)

    def loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return float(model(x, hp)["loss"])

    before = loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        opt.zero_grad()
        model(x, hp)["loss"].backward()
        opt.step()
    assert loss() < before - 0.2 * abs(before)


def test_training_run_writes_checkpoint_manifest_and_tensorboard(trained):
    manifest = json.loads((trained.path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "space"
    assert manifest["env_id"] == "ALE/Pong-v5"
    assert "checkpoint.pt" in manifest["outputs"] and "frames_index" in manifest["inputs"]
    assert manifest["summary"]["steps"] == 6
    assert [p.name for p in sorted((trained.path / "checkpoints").glob("*.pt"))] == [
        "ckpt_00000003.pt", "ckpt_00000006.pt"]
    assert list((trained.path / "tb").glob("events.out.tfevents.*"))
    payload = read_checkpoint(trained.path / "checkpoint.pt")
    assert payload["step"] == 6 and payload["types"]["centroids"]


def test_checkpoint_round_trip_gives_identical_detections(trained, pong_frames, tmp_path):
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    detector = load_detector(trained.path, device="cpu", runs_dir=trained.path.parent.parent)
    detector.cfg = config_from(to_dict(detector.cfg), {"detect.threshold": 0.0})
    copy = tmp_path / "copy.pt"
    payload = read_checkpoint(trained.path / "checkpoint.pt")
    save_checkpoint(copy, detector.model, detector.cfg, payload["step"],
                    {"types": payload["types"]})
    again = SpaceDetector.load(copy, device="cpu")
    first, second = detector.detect(frames), again.detect(frames)
    assert sum(map(len, first)) > 0
    assert first == second
    for a, b in zip(first, second):
        for da, db in zip(a, b):
            np.testing.assert_array_equal(da.z_what, db.z_what)


def test_detections_lie_inside_the_frame(trained, pong_frames):
    detector = SpaceDetector.load(trained.path / "checkpoint.pt", device="cpu",
                                  overrides={"detect.threshold": 0.0})
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    found = detector.detect(frames)
    top, bottom, left, right = detector.cfg.data.crop
    assert detector.env_kwargs == {"native_frames": True}
    assert all(len(dets) == 16 for dets in found)  # threshold 0: every cell of the 4x4 grid
    for dets in found:
        for d in dets:
            assert left <= d.x - d.w / 2 <= d.x + d.w / 2 <= right
            assert top <= d.y - d.h / 2 <= d.y + d.h / 2 <= bottom
            assert 0 <= d.confidence <= 1 and d.type in detector.type_names
            assert d.z_what.shape == (4,)
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(frames.astype(np.float32))


def test_weak_and_snapped_detections(trained, pong_frames):
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    def load(**settings: object) -> SpaceDetector:
        return SpaceDetector.load(trained.path / "checkpoint.pt", device="cpu", overrides={
            "detect.threshold": 0.6, **{f"detect.{k}": v for k, v in settings.items()}})

    sure = load(track_threshold=None, snap=False)
    both = load(track_threshold=0.0001, snap=False)
    assert (sure.confirm, both.confirm) == (0.0, 0.6)
    strong, every = sure.detect(frames), both.detect(frames)
    assert sum(map(len, every)) > sum(map(len, strong))
    for s_dets, all_dets in zip(strong, every):
        assert [d for d in all_dets if d.confidence >= 0.6] == s_dets
    snapped = load(track_threshold=0.7)                       # not below threshold: no band
    assert snapped.confirm == 0.0
    for s_dets, n_dets in zip(strong, snapped.detect(frames)):
        assert [(round(d.x), round(d.y), d.w) for d in s_dets] == [(d.x, d.y, d.w) for d in n_dets]


def test_type_ids_are_stable_for_a_fixed_seed(trained, pong_frames):
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [5, 5, 5], [-5, 5, 0]], float)
    z = np.concatenate([c + 0.1 * rng.standard_normal((n, 3))
                        for c, n in zip(centres, (50, 200, 100))])
    a, info = fit_types(z, None, 6, seed=0)
    b, _ = fit_types(z[rng.permutation(len(z))], None, 6, seed=0)
    assert info["k"] == 3 and info["sizes"] == [200, 100, 50]  # ids by cluster size
    np.testing.assert_array_equal(a.predict(centres), [2, 0, 1])
    np.testing.assert_array_equal(b.predict(centres), [2, 0, 1])
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    one = SpaceDetector.load(trained.path / "checkpoint.pt", device="cpu",
                             overrides={"detect.threshold": 0.0})
    two = SpaceDetector.load(trained.path / "checkpoint.pt", device="cpu",
                             overrides={"detect.threshold": 0.0})
    types = [[d.type for d in dets] for dets in one.detect(frames)]
    assert types == [[d.type for d in dets] for dets in two.detect(frames)]
    assert set(one.type_names) == {0, 1} and {t for ts in types for t in ts} <= {0, 1}


def test_cli_trains_and_evaluates_end_to_end(pong_frames, tmp_path):
    runs = tmp_path / "runs"
    res = run_cli("space/main.py", "--task", "train", "--config", str(PONG_CONFIG), "--frames",
                  str(pong_frames.path), "--runs-dir", str(runs), "train.max_steps", "3",
                  *TINY_ARGS)
    assert res.returncode == 0, res.stderr
    run_dir = next((runs / "space").iterdir())
    assert (run_dir / "checkpoint.pt").is_file()
    # evaluation from inside space/, as the original README runs it
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    res = subprocess.run([sys.executable, "main.py", "--task", "eval", "--checkpoint",
                          str(run_dir), "--frames", str(pong_frames.path), "--runs-dir",
                          str(runs), "detect.threshold", "0.0", "num_threads", "1"],
                         cwd=ROOT / "space",
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["split"] == "test" and result["frames"] == 6
    assert result["per_class"] and set(result["per_class"]) <= {"Player", "Ball", "Enemy"}
    assert sum(row["support"] for row in result["per_class"].values()) > 0
    assert result["detect_fps"] > 0
    assert (run_dir / "eval_grid.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"eval.json", "eval_grid.png", "checkpoint.pt"} <= set(manifest["outputs"])


@pytest.mark.parametrize("extra", [{}, {"train.augment": 0.5}], ids=["plain", "augmented"])
def test_resume_matches_an_uninterrupted_run(pong_frames, tmp_path, extra):
    def task(runs: Path, steps: int) -> Task:
        return Task("train", str(PONG_CONFIG), str(pong_frames.path), str(runs), None, None,
                    {**TINY, "train.max_steps": steps, "train.checkpoint_every": 2, **extra})

    straight = train(task(tmp_path / "a", 6))
    stopped = train(task(tmp_path / "b", 4))
    resumed = train(Task("train", None, None, str(tmp_path / "b"), str(stopped.path), None,
                         {"resume": True, "train.max_steps": 6}))
    assert resumed.path == stopped.path
    a = read_checkpoint(straight.path / "checkpoint.pt")
    b = read_checkpoint(resumed.path / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=0, atol=0)


def test_augmented_frames_are_the_transfer_shifts(pong_frames):
    cfg = tiny_config(**{"train.augment": 1.0})
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "train", 12))
    rng = np.random.default_rng(0)
    kinds = {random_shift(rng, 25.0, 6).kind for _ in range(60)}
    assert kinds == set(VisualShift.KINDS)
    assert random_shift(rng, 0.0, 0).kind == "background"
    plain = preprocess(frames, cfg.data)
    changed = augment(frames, cfg.data, cfg.train, np.random.default_rng(1))
    assert changed.shape == plain.shape and changed.dtype == np.uint8
    assert all((c != p).any() for c, p in zip(changed, plain))
    untouched = augment(frames, cfg.data, tiny_config().train, np.random.default_rng(1))
    np.testing.assert_array_equal(untouched, plain)
    with pytest.raises(UserError, match="train.augment must be in"):
        tiny_config(**{"train.augment": 1.5})


def test_resume_continues_a_killed_run(pong_frames, tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "space" / "main.py"), "--task", "train", "--config",
           str(PONG_CONFIG), "--frames", str(pong_frames.path), "--runs-dir", str(runs),
           *TINY_ARGS, "train.max_steps", "100000", "train.checkpoint_every", "5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not list(runs.glob("space/*/checkpoints/ckpt_*.pt")):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = next((runs / "space").iterdir())
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"
    last = max(read_checkpoint(p)["step"] for p in (run_dir / "checkpoints").glob("*.pt"))
    res = run_cli("space/main.py", "--task", "train", "--runs-dir", str(runs), "--checkpoint",
                  str(run_dir), "resume", "True", "train.max_steps", str(last + 3))
    assert res.returncode == 0, res.stderr
    assert f"from step {last}" in res.stdout
    assert read_checkpoint(run_dir / "checkpoint.pt")["step"] == last + 3
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("args, message", [
    (["train.max_step", "5"], "unknown config key 'train.max_step' (did you mean train.max_steps"),
    (["train.max_steps", "many"], "'train.max_steps' needs an integer"),
    (["train.max_steps"], "has no value: write train.max_steps=VALUE"),
    (["train.max_steps=many"], "'train.max_steps' needs an integer"),
    (["model.grid", "[5, 5]"], "must be model.grid"),
    (["model.enc_strides=[4, 3, 2]"], "must give a stride of 2 or 4 for each"),
    (["model.enc_strides=[4, 2]"], "must give a stride of 2 or 4 for each of the 3"),
    (["model.enc_strides=[4, 2, 2]"], "times the cell size 16 (the product of"),
    (["model.feat_layers=-1"], "model.feat_layers must be >= 0"),
    (["train.augment=2"], "train.augment must be in [0, 1]"),
    (["train.lr_fg=-1"], "train.lr_fg must be > 0, got -1"),
    (["train.lr_bg", "0"], "train.lr_bg must be > 0"),
    (["train.lr_fg=.nan"], "train.lr_fg must be a finite number"),
    (["model.z_what=0"], "model.z_what must be >= 1"),
    (["model.enc_channels=[16, 0, 64]"], "every entry of model.enc_channels must be >= 1"),
    (["data.image_size=[8, 8]", "model.grid=[1, 1]"],
     "every entry of data.image_size must be >= 16"),
    (["model.fg_sigma=0"], "model.fg_sigma must be > 0"),
    (["loss.pres_prior.start=1"], "loss.pres_prior.start must be in (0, 1)"),
    (["loss.tau.end=0"], "loss.tau.end must be > 0"),
    (["loss.tau.finish=-5"], "loss.tau.finish must be >= 0"),
    (["train.grad_clip=-1"], "train.grad_clip must be >= 0 (0: no clipping)"),
    (["train.log_every=0"], "train.log_every must be >= 1"),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints must be >= 1"),
    (["eval.max_frames=-3"], "eval.max_frames must be >= 0 (0: all of the split)"),
    (["eval.gate=0"], "eval.gate must be > 0"),
    (["eval.grid_frames=0"], "eval.grid_frames must be >= 1"),
    (["num_threads=-1"], "num_threads must be >= 0 (0: torch's default)"),
    (["seed=-1"], "seed must be >= 0"),
    (["detect.max_types=0"], "detect.max_types must be >= 1"),
    (["detect.threshold=1.5"], "detect.threshold must be in [0, 1]"),
    (["detect.track_threshold=0"], "detect.track_threshold must be in (0, 1] or null"),
    (["detect.type_frames=-1"], "detect.type_frames must be >= 0"),
    (["detect.type_by=colour"], "detect.type_by 'colour' is not one of z_what, appearance"),
    (["fast.lr=0"], "fast.lr must be > 0"),
    (["fast.feat_layers=-1"], "fast.feat_layers must be >= 0"),
    (["device=gpu"], "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["name=a/b"], "name must be a non-empty run name without '/'"),
    (["resume=maybe"], "config key 'resume' needs True or False"),
    (["data.crop=[300, 400, 0, 160]"], "data.crop [300, 400, 0, 160] lies outside the 210x160"),
])
def test_bad_overrides_are_refused_clearly(pong_frames, tmp_path, capsys, args, message):
    code = space_main(["--task", "train", "--config", str(PONG_CONFIG), "--frames",
                       str(pong_frames.path), "--runs-dir", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "space").exists()


def test_bad_inputs_are_refused_clearly(pong_frames, tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {grid: [4, 4]\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train: {max_stepz: 3}\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x00\xff\xfe\x80 not text")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    runs = tmp_path / "runs"
    out = tmp_path / "out"
    frames = str(pong_frames.path)
    train = ["--task", "train", "--config", str(PONG_CONFIG), "--frames", frames]
    common = ["--runs-dir", str(runs)]
    cases = [
        (["--task", "train", "--config", str(bad_yaml), "--frames", "latest"], "not valid yaml"),
        (["--task", "train", "--config", str(unknown), "--frames", "latest"],
         f"--config {unknown}: unknown config key 'train.max_stepz'"),
        (["--task", "train", "--config", str(tmp_path / "none.yaml"), "--frames", "latest"],
         "does not exist"),
        (["--task", "train", "--config", str(binary), "--frames", frames],
         f"--config: config file {binary} cannot be read as yaml text"),
        (["--task", "train", "--config", str(tmp_path), "--frames", frames],
         f"--config: config file {tmp_path} is a folder"),
        (["--task", "train", "--config", "", "--frames", frames], "--config is empty"),
        (["--task", "train", "--config", str(PONG_CONFIG), "--frames", str(a_file)],
         f"--frames: {a_file} is not a run folder"),
        (["--task", "train", "--config", str(PONG_CONFIG), "--frames", str(tmp_path)],
         f"--frames: {tmp_path} is not a run folder"),
        (["--task", "train", "--config", str(PONG_CONFIG), "--frames", str(tmp_path / "no")],
         "--frames: run folder"),
        ([*train, "--out", str(out)], "--out is for --task eval only"),
        ([*train, "--checkpoint", frames], "add resume=true"),
        (["--task", "train", "--checkpoint", frames, "resume=true"],
         f"--checkpoint: {frames} is a 'frames' run, expected a 'space' run"),
        (["--task", "eval", "--checkpoint", str(tmp_path / "nothing")], "does not exist"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", str(tmp_path)],
         "--checkpoint: " + str(PONG_CONFIG) + " is not a readable checkpoint"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG)], "pass --out DIR"),
        (["--task", "eval", "--checkpoint", "latest"], "--checkpoint: no complete 'space' run"),
        (["--task", "eval", "--checkpoint", frames, "--frames", frames],
         "--checkpoint: " + frames + " is a 'frames' run, expected a 'space' run"),
        (["--task", "eval", "--checkpoint", str(tmp_path)],
         f"--checkpoint: {tmp_path} is not a run folder"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", str(tmp_path),
          "model.glimpse", "4"],
         "can only override"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", str(a_file)],
         f"--out {a_file}: {a_file} is a file; give a folder"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", str(a_file / "sub")],
         f"--out {a_file / 'sub'}: {a_file} is a file; give a folder"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", ""], "--out is empty"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", str(out),
          "--config", str(binary)], "--config: config file"),
        (["--task", "eval", "--checkpoint", str(PONG_CONFIG), "--out", str(out),
          "num_threads=-1"], "num_threads must be >= 0"),
    ]
    for args, message in cases:
        assert space_main([*args, *common]) == 2, args
        assert message in capsys.readouterr().err, args
        assert not runs.exists() and not out.exists(), args
    for args in (train, ["--task", "eval", "--checkpoint", "latest", "--frames", frames]):
        assert space_main([*args, "--runs-dir", str(a_file)]) == 2, args
        assert f"--runs-dir {a_file}: {a_file} is a file" in capsys.readouterr().err, args


def relabelled_frames(frames_run, env_id: str, where: Path) -> Path:
    """A copy of a frames run whose manifest says it is of ``env_id``."""
    import shutil
    copy = where / env_id.replace("/", "-")
    shutil.copytree(frames_run.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["env_id"] = env_id
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_frames_of_the_same_game_under_another_id_are_accepted(trained, pong_frames, tmp_path,
                                                               capsys):
    ckpt = str(trained.path / "checkpoint.pt")
    same = relabelled_frames(pong_frames, "PongNoFrameskip-v4", tmp_path)
    other = relabelled_frames(pong_frames, "ALE/Breakout-v5", tmp_path)
    for ref in (ckpt, str(trained.path)):
        out = tmp_path / f"out{len(ref)}"
        assert space_main(["--task", "eval", "--checkpoint", ref, "--frames", str(same),
                           "--out", str(out), "num_threads=1"]) == 0
        assert json.loads((out / "eval.json").read_text())["env_id"] == "PongNoFrameskip-v4"
        code = space_main(["--task", "eval", "--checkpoint", ref, "--frames", str(other),
                           "--out", str(tmp_path / "refused"), "num_threads=1"])
        assert code == 2
        assert (f"--frames: frames run {other} is of ALE/Breakout-v5, another game than "
                f"ALE/Pong-v5") in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()


def test_eval_refuses_frames_without_ground_truth(trained, tmp_path, capsys):
    no_truth = save_frames(FramesConfig(policy="random", env="ALE/Pong-v5", n_frames=10,
                                        runs_dir=str(tmp_path), progress=False))
    code = space_main(["--task", "eval", "--checkpoint", str(trained.path / "checkpoint.pt"),
                       "--frames", str(no_truth.path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no ground truth" in capsys.readouterr().err


def test_user_errors_print_one_line_without_traceback(tmp_path):
    res = run_cli("space/main.py", "--task", "train", "--config", str(PONG_CONFIG),
                  "--frames", "latest", "--runs-dir", str(tmp_path), "train.max_stepz", "5")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown config key 'train.max_stepz' (did you mean "
                               "train.max_steps")


def test_eval_names_the_types_so_an_ocatari_policy_plays_through_the_detector(
        trained, pong_frames, teacher_run, tmp_path):
    ckpt = tmp_path / "named.pt"
    shutil.copy(trained.path / "checkpoint.pt", ckpt)
    ocatari = load_detector("ocatari", env_id="ALE/Pong-v5").type_names
    with pytest.raises(UserError, match="eval.name_types=true"):
        detector_for({t: ocatari[t] for t in (0, 1, 2)}, load_detector(str(ckpt), device="cpu"),
                     "p", str(ckpt))
    assert space_main(["--task", "eval", "--checkpoint", str(ckpt), "--frames",
                       str(pong_frames.path), "--out", str(tmp_path / "eval"), "num_threads=1",
                       "eval.name_types=true"]) == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    named = load_detector(str(ckpt), device="cpu")
    assert named.classes == {int(t): c for t, c in result["type_to_class"].items()} != {}
    by_class = {n: t for t, n in ocatari.items() if n in named.classes.values()}
    seen = detector_for({t: n for n, t in by_class.items()}, named, "p", str(ckpt))
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test", 4))
    for raw, out in zip(named.detect(frames), seen.detect(frames)):
        assert [(d.x, d.y, by_class[named.classes[d.type]]) for d in raw
                if d.type in named.classes] == [(d.x, d.y, d.type) for d in out]
    policy = SymbolicPolicy([[{"x": 1}]] * 2, FeatureLayout(seen.type_names, {
        t: 1 for t in seen.type_names}, (210, 160)), ["NOOP", "FIRE"], "ALE/Pong-v5", [])
    path = policy.save(tmp_path / "policy.json")
    player, _, detector = load_player(str(path), str(tmp_path), str(teacher_run.path), str(ckpt))
    assert detector.type_names == seen.type_names
    assert len(play_symbolic(player, Perception(detector), teacher_run, [0], 20)) == 1


def recorded_anew(trained, pong_frames, tmp_path, key: str, setting: str) -> Path:
    """The trained checkpoint without ``key``, checked to be refused with ``detect.<setting>``
    (the message names ``eval.<setting>=true``), then given it back by that eval; its path."""
    ckpt = tmp_path / "old.pt"
    payload = read_checkpoint(trained.path / "checkpoint.pt")
    del payload[key]
    torch.save(payload, ckpt)
    with pytest.raises(UserError, match=f"eval.{setting}=true"):
        SpaceDetector.load(ckpt, device="cpu", overrides={f"detect.{setting}": True})
    assert space_main(["--task", "eval", "--checkpoint", str(ckpt), "--frames",
                       str(pong_frames.path), "--out", str(tmp_path / "eval"), "num_threads=1",
                       f"eval.{setting}=true"]) == 0
    return ckpt


def test_the_palette_takes_noise_and_foreign_colours_back_to_the_games_own(
        trained, pong_frames, tmp_path):
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    colours = read_checkpoint(trained.path / "checkpoint.pt")["palette"]
    assert 3 <= len(colours) <= 8 and colours.dtype == np.uint8  # Pong draws a few colours
    palette = Palette(colours)
    np.testing.assert_array_equal(palette(frames), frames)
    noisy = VisualShift("noise", (20.0,))(frames[0], np.random.default_rng(0))
    assert (noisy != frames[0]).any(-1).mean() > 0.9
    assert (palette(noisy) == frames[0]).all(-1).mean() > 0.995
    flat, counts = np.unique(frames[0].reshape(-1, 3), axis=0, return_counts=True)
    background = tuple(int(v) for v in flat[counts.argmax()])
    repainted = VisualShift("background", (background[0] + 12, background[1] - 9,
                                           background[2] + 7))(frames[0], None)
    np.testing.assert_array_equal(palette(repainted), VisualShift(
        "background", background)(frames[0], None))
    assert len(palette_of(frames, min_share=0.5)) == 1  # the background alone

    ckpt = recorded_anew(trained, pong_frames, tmp_path, "palette", "palette")
    np.testing.assert_array_equal(read_checkpoint(ckpt)["palette"], palette_of(frames))
    settings = {"detect.threshold": 0.0}
    projected = SpaceDetector.load(ckpt, device="cpu",
                                   overrides={**settings, "detect.palette": True})
    plain = SpaceDetector.load(ckpt, device="cpu", overrides=settings)
    assert projected.detect(noisy[None]) == plain.detect(palette(noisy)[None])
    assert projected.detect(noisy[None]) != plain.detect(noisy[None])


def test_a_moved_picture_is_found_and_moved_back_before_detection(trained, pong_frames,
                                                                   tmp_path):
    """The layout profiles of the training frames (in every new checkpoint) find how far a
    frame of an unseen game was moved, on clean, noisy and repainted frames; the detector
    with ``detect.register`` then finds the clean frame's objects where they were."""
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    state = read_checkpoint(trained.path / "checkpoint.pt")["registration"]
    registration = Registration(state["rows"], state["cols"])
    rng = np.random.default_rng(0)
    for dx, dy in [(0, 0), (4, 0), (-3, 2), (0, -6)]:
        moved = np.stack([VisualShift("shift", (dx, dy))(f, rng) for f in frames])
        assert [registration.shift_of(f) for f in moved] == [(dx, dy)] * len(frames)
        inner = (slice(None), slice(8, -8), slice(8, -8))
        np.testing.assert_array_equal(registration(moved)[inner], frames[inner])
    black = VisualShift("background", (0, 0, 0))(frames[0], rng)
    assert registration.shift_of(VisualShift("shift", (4, 0))(black, rng)) == (4, 0)
    noisy = [VisualShift("noise", (20.0,))(f, rng) for f in frames]
    assert [registration.shift_of(f) for f in noisy] == [(0, 0)] * len(frames)

    ckpt = recorded_anew(trained, pong_frames, tmp_path, "registration", "register")
    settings = {"detect.threshold": 0.3}
    registered = SpaceDetector.load(ckpt, device="cpu",
                                    overrides={**settings, "detect.register": True})
    plain = SpaceDetector.load(ckpt, device="cpu", overrides=settings)
    moved = np.stack([VisualShift("shift", (4, 0))(f, rng) for f in frames[:6]])
    assert registered.detect(frames[:6]) == plain.detect(frames[:6])
    assert registered.detect(moved) != plain.detect(moved)
    for found, clean in zip(registered.detect(moved), plain.detect(frames[:6])):
        inside = [d for d in clean if 8 <= d.x <= 152]   # the moved picture keeps these whole
        assert inside and all(any(abs(f.x - d.x) <= 1 and abs(f.y - d.y) <= 1
                                  and f.type == d.type for f in found) for d in inside)


def test_fast_student_finds_what_space_finds_where_space_finds_it(pong_frames, tmp_path, capsys):
    """The fast student of the shipped Pong detector, trained briefly on the frames run, is
    what its checkpoint detects through (``detect.fast=false``: SPACE itself); on the frames
    it learnt from it finds SPACE's confident objects, of the same class, within 2 pixels."""
    shipped = str(ROOT / "pretrained" / "space_pong.pt")
    runs = tmp_path / "runs"
    assert space_main(["--task", "fast", "--checkpoint", shipped, "--frames",
                       str(pong_frames.path), "--runs-dir", str(runs), "num_threads=1",
                       "fast.steps=600", "fast.lr=0.01"]) == 0
    run_dir = next((runs / "space").iterdir())
    assert "_fast__" in run_dir.name and (run_dir / "tb").is_dir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["summary"]["fast"]["steps"] == 600
    payload = read_checkpoint(run_dir / "checkpoint.pt")
    assert payload["type_classes"] == read_checkpoint(shipped)["type_classes"]
    fast = load_detector(str(run_dir / "checkpoint.pt"), device="cpu")
    space = load_detector(str(run_dir / "checkpoint.pt"), device="cpu",
                          overrides={"detect.fast": False})
    assert fast.fast is not None and space.fast is None
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "train"))
    found = total = 0
    for mine, theirs in zip(fast.detect(frames), space.detect(frames)):
        mine = fast.confident(mine)
        for d in space.confident(theirs):
            total += 1
            found += any(fast.classes[m.type] == space.classes[d.type] and
                         abs(m.x - d.x) <= 2 and abs(m.y - d.y) <= 2 for m in mine)
    assert total > 2 * len(frames) and found >= 0.9 * total, (found, total)
    assert space_main(["--task", "fast", "--checkpoint", shipped, "--frames",
                       str(pong_frames.path), "--runs-dir", str(runs), "model.grid=[8,8]"]) == 2
    assert "--task fast can only override fast.*" in capsys.readouterr().err
    assert space_main(["--task", "fast", "--checkpoint", shipped, "--config", str(PONG_CONFIG),
                       "--runs-dir", str(runs)]) == 2
    assert "--task fast takes its config from --checkpoint" in capsys.readouterr().err
    assert len(list((runs / "space").iterdir())) == 1


def test_a_moved_picture_moves_the_fast_students_targets_into_the_cells_they_land_in():
    from space.fast import batch_targets
    grid = (4, 4)
    prob = torch.zeros(2, 16)
    prob[0, 5] = prob[1, 6] = 0.9                       # frame 0: cell (1, 1); frame 1: (1, 2)
    target = {"prob": prob, "frame": torch.tensor([0, 1]), "cell": torch.tensor([5, 6]),
              "centre": torch.tensor([[-0.25, -0.25], [0.25, -0.25]]),
              "size": torch.full((2, 2), 0.1), "type": torch.tensor([1, 0])}
    frames = torch.tensor([0, 0, 1])                    # frame 0 twice: once moved right
    moves = torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])   # one cell, then out
    batch = batch_targets(target, frames, moves, grid)
    assert batch["b"].tolist() == [0, 1] and batch["cell"].tolist() == [5, 6]
    assert batch["prob"][0, 5] == 0.9 and batch["prob"][1, 6] == 0.9
    assert batch["prob"][1, 5] == 0 and batch["prob"][2].sum() == 0   # moved away / out
    assert torch.allclose(batch["centre"][1], torch.tensor([0.25, -0.25]))


def test_types_read_from_appearance_survive_a_repainted_background_and_a_moved_picture(
        pong_frames, tmp_path):
    """The shipped Pong detector's types refitted over each box's size and colour
    (``detect.type_by=appearance``) name the same objects on clean frames and on the same
    frames with the background painted black, and the same classes with the picture moved 4
    pixels; its z_what types read the enemy's paddle on black as the ball."""
    ckpt = tmp_path / "appearance.pt"
    shutil.copy(ROOT / "pretrained" / "space_pong.pt", ckpt)
    assert space_main(["--task", "eval", "--checkpoint", str(ckpt), "--frames",
                       str(pong_frames.path), "--out", str(tmp_path / "eval"), "num_threads=1",
                       "detect.type_by=appearance", "eval.fit_types=true", "eval.split=train",
                       "eval.name_types=true"]) == 0
    assert read_checkpoint(ckpt)["config"]["detect"]["type_by"] == "appearance"
    frames = load_frames(pong_frames.path, select_records(pong_frames.path, "test"))
    black = np.stack([VisualShift("background", (0, 0, 0))(f, None) for f in frames])
    moved = np.stack([VisualShift("shift", (4, 0))(f, None) for f in frames])

    def objects(detector: SpaceDetector, pictures: np.ndarray) -> list[set]:
        return [{(round(d.x), round(d.y), detector.classes.get(d.type))
                 for d in detector.confident(dets)} for dets in detector.detect(pictures)]

    def classes(found: list[set]) -> list[set]:
        return [{c for *_, c in objs} for objs in found]

    fitted = SpaceDetector.load(ckpt, device="cpu")
    assert set(fitted.classes.values()) == {"Player", "Ball", "Enemy"}
    clean = objects(fitted, frames)
    assert sum(map(len, clean)) >= 2 * len(frames) and None not in set().union(*classes(clean))
    assert objects(fitted, black) == clean
    assert classes(objects(fitted, moved)) == classes(clean)
    assert space_main(["--task", "fast", "--checkpoint", str(ckpt), "--frames",
                       str(pong_frames.path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()
    shipped = SpaceDetector.load(ROOT / "pretrained" / "space_pong.pt", device="cpu")
    assert any("Enemy" in a - b for a, b in zip(classes(objects(shipped, frames)),
                                                 classes(objects(shipped, black))))


def test_calibrated_centres_sit_where_the_emulator_puts_its_objects(pong_frames, tmp_path):
    """``eval.calibrate`` records each type's mean offset from the OCAtari truth; detections
    then move by it (the enemy's paddle is drawn 16 px high where RAM says 15, so its snapped
    centre sits half a pixel off), and ``detect.calibrate=false`` reads them as before."""
    ckpt = tmp_path / "calibrated.pt"
    shutil.copy(ROOT / "pretrained" / "space_pong.pt", ckpt)

    def enemy_error(name: str, *settings: str) -> float:
        assert space_main(["--task", "eval", "--checkpoint", str(ckpt), "--frames",
                           str(pong_frames.path), "--out", str(tmp_path / name),
                           "num_threads=1", "eval.split=train", *settings]) == 0
        scores = json.loads((tmp_path / name / "eval.json").read_text())
        return scores["per_class"]["Enemy"]["centre_error"]

    before = enemy_error("before", "eval.calibrate=true")
    offsets = read_checkpoint(ckpt)["type_offsets"]
    assert set(offsets) == {int(t) for t in read_checkpoint(ckpt)["type_classes"]}
    assert enemy_error("after") < before - 0.25
    assert enemy_error("off", "detect.calibrate=false") == before
