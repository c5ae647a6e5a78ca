"""save_frames: PNGs equal the emulator's frames, ground truth lines up, splits, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import kill_when, run_cli
from diffses.envs import make_vec_env, screen
from diffses.errors import UserError
from diffses.frames import FramesConfig, read_index, read_png, run, split_of

PONG_BALL_RGB = (236, 236, 236)


def test_random_frames_equal_the_emulator_frames(tmp_path):
    cfg = FramesConfig(policy="random", env="ALE/Pong-v5", n_frames=40, seed=5,
                       runs_dir=str(tmp_path), progress=False)
    result = run(cfg)
    records = read_index(result.path)
    assert len(records) == 40
    assert [r["split"] for r in records].count("train") == 32
    # replay the recorded actions on a fresh env with the same seed; compare with the emulator
    venv = make_vec_env("ALE/Pong-v5", 1, seed=5, frame_stack=1, clip_reward=False)
    try:
        venv.reset()
        env = venv.envs[0]
        for rec in records:
            frame = read_png(result.path / rec["file"])
            assert frame.shape == (210, 160, 3)
            np.testing.assert_array_equal(frame, screen(env), err_msg=rec["file"])
            venv.step(np.array([rec["action"]]))
    finally:
        venv.close()
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["frame_shape"] == [210, 160, 3]
    assert "frames.jsonl" in manifest["outputs"]


def test_teacher_frames_with_ground_truth_line_up(teacher_run, tmp_path):
    cfg = FramesConfig(teacher=str(teacher_run.path), n_frames=120, ground_truth=True,
                       runs_dir=str(tmp_path), progress=False, device="cpu")
    result = run(cfg)
    records = read_index(result.path)
    assert json.loads((result.path / "manifest.json").read_text())["inputs"]["teacher_model"]
    seen = set()
    ball_checked = 0
    for rec in records:
        frame = read_png(result.path / rec["file"])
        for obj in rec["objects"]:
            seen.add(obj["category"])
            assert obj["hud"] == (obj["category"] in {"PlayerScore", "EnemyScore"})
            if obj["category"] == "Ball":
                box = frame[obj["y"]:obj["y"] + obj["h"], obj["x"]:obj["x"] + obj["w"]]
                assert (box == PONG_BALL_RGB).all(axis=-1).mean() > 0.5, rec["file"]
                ball_checked += 1
    assert {"Player", "Enemy", "Ball", "PlayerScore"} <= seen
    assert ball_checked > 10


def test_retro_frames_are_native_size(tmp_path):
    result = run(FramesConfig(policy="random", env="Airstriker-Genesis-v0", n_frames=12,
                              every=2, runs_dir=str(tmp_path), progress=False))
    records = read_index(result.path)
    assert all(r["step"] % 2 == 0 for r in records)
    assert read_png(result.path / records[0]["file"]).shape == (224, 320, 3)


def test_second_run_into_same_folder_is_refused(tmp_path):
    out = tmp_path / "frames_here"
    base = ["--policy", "random", "--env", "ALE/Pong-v5", "-n", "6", "--runs-dir",
            str(tmp_path), "--out", str(out), "--no-progress"]
    assert run_cli("save_frames.py", *base).returncode == 0
    first = (out / "frames.jsonl").read_text()
    again = run_cli("save_frames.py", *base, "--seed", "9")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    assert (out / "frames.jsonl").read_text() == first  # nothing lost
    assert run_cli("save_frames.py", *base, "--seed", "9", "--overwrite").returncode == 0
    assert (out / "frames.jsonl").read_text() != first


def test_ground_truth_for_a_retro_game_is_refused(tmp_path):
    with pytest.raises(UserError, match="OCAtari"):
        run(FramesConfig(policy="random", env="Airstriker-Genesis-v0", n_frames=2,
                         ground_truth=True, runs_dir=str(tmp_path), progress=False))


def test_bad_arguments_are_refused():
    with pytest.raises(UserError, match="--teacher"):
        FramesConfig()
    with pytest.raises(UserError, match="--splits"):
        FramesConfig(policy="random", env="ALE/Pong-v5", splits=(0.5, 0.5))


def test_splits_are_contiguous_blocks():
    names = [split_of(i, 10, (0.8, 0.1, 0.1)) for i in range(10)]
    assert names == ["train"] * 8 + ["validation", "test"]


def test_a_killed_run_resumes_to_the_same_frames(short_games_teacher, tmp_path):
    """kill -9 after the first whole game; --resume writes the same frames and index as an
    uninterrupted run of the same seed."""
    args = ["--teacher", str(short_games_teacher.path), "-n", "120", "--every", "2", "--seed", "2",
            "--no-progress", "--device", "cpu"]
    whole = run_cli("save_frames.py", *args, "--runs-dir", str(tmp_path / "a"))
    assert whole.returncode == 0, whole.stderr
    kill_when("save_frames.py", [*args, "--runs-dir", str(tmp_path / "b")], tmp_path / "b",
              "frames/*/progress.json")
    (folder,) = (tmp_path / "b" / "frames").iterdir()
    assert not (folder / "frames.jsonl").exists()
    resumed = run_cli("save_frames.py", "--resume", str(folder), "--runs-dir",
                      str(tmp_path / "b"), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "frames kept" in resumed.stdout
    (done,) = (tmp_path / "a" / "frames").iterdir()
    index = (done / "frames.jsonl").read_text()
    assert (folder / "frames.jsonl").read_text() == index
    records = read_index(done)
    assert len(records) == 120 and len({r["episode"] for r in records}) >= 2
    for r in records[::37]:
        assert (folder / r["file"]).read_bytes() == (done / r["file"]).read_bytes()
    assert not (folder / "progress.json").exists()
