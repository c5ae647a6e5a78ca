"""build_dataset on real Pong with the ocatari detector: objects, velocities, teacher actions."""

from __future__ import annotations

import json

import pytest

from conftest import kill_when, run_cli
from diffses.dataset import DatasetConfig, run
from diffses.errors import UserError
from diffses.io import JsonListWriter
from diffses.schema import load_dataset
from diffses.teacher import load_teacher, teacher_env


@pytest.fixture(scope="module")
def pong_dataset(teacher_run):
    runs_dir = teacher_run.path.parent.parent
    return run(DatasetConfig(teacher=str(teacher_run.path), detector="ocatari", n_steps=200,
                             seed=3, runs_dir=str(runs_dir), progress=False, device="cpu",
                             batch=32))


def test_records_hold_ball_and_both_paddles_with_moving_ball(pong_dataset):
    data = load_dataset(pong_dataset.path)
    names = {int(k): v for k, v in data.meta["type_names"].items()}
    assert len(data.records) == 200 and data.meta["records"] == 200
    assert data.meta["n_actions"] == 6 and data.meta["frame_size"] == [210, 160]
    seen = [{names[o["type"]] for o in r["state"]} for r in data.records]
    assert sum({"Player", "Enemy", "Ball"} <= s for s in seen) > 100
    assert all("PlayerScore" not in s for s in seen)  # HUD left out
    ball = [o for r in data.records for o in r["state"] if names[o["type"]] == "Ball"]
    moving = [o for o in ball if o["x_velocity"] != 0 or o["y_velocity"] != 0]
    assert len(moving) > 0.8 * len(ball)
    for r in data.records:
        assert abs(sum(r["teacher_probs"]) - 1) < 1e-3
        for o in r["state"]:
            assert 0 <= o["x_position"] < 160 and 0 <= o["y_position"] < 210


def test_teacher_action_is_the_teachers_prediction(pong_dataset, teacher_run):
    records = load_dataset(pong_dataset.path).records
    model = load_teacher(teacher_run)
    venv = teacher_env(teacher_run, seed=3, clip_reward=False)
    try:
        obs = venv.reset()
        for rec in records[:120]:
            action, _ = model.predict(obs, deterministic=True)
            assert int(action[0]) == rec["teacher_action"]
            probs = rec["teacher_probs"]  # rounded to 5 decimals: ties are possible
            assert probs[rec["teacher_action"]] >= max(probs) - 1e-5
            obs, _, _, _ = venv.step(action)
    finally:
        venv.close()


def test_manifest_links_teacher_and_outputs(pong_dataset, teacher_run):
    manifest = json.loads((pong_dataset.path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["detector"] == "ocatari"
    assert manifest["teacher_run"] == str(teacher_run.path)
    assert set(manifest["outputs"]) == {"dataset.json", "dataset.meta.json"}
    assert manifest["summary"]["records_per_second"] > 0


def test_out_file_gets_a_copy_with_meta(teacher_run, tmp_path):
    out = tmp_path / "mine.json"
    run(DatasetConfig(teacher=str(teacher_run.path), n_steps=20, runs_dir=str(tmp_path),
                      progress=False, device="cpu", out=str(out)))
    assert len(load_dataset(out).records) == 20
    assert (tmp_path / "mine.meta.json").is_file()


def test_bad_inputs_are_clear_errors(teacher_run, tmp_path):
    with pytest.raises(UserError, match="not both"):
        DatasetConfig(episodes=1, n_steps=5)
    proc = run_cli("build_dataset.py", "--teacher", str(teacher_run.path), "--detector",
                   str(tmp_path / "no_such_run"), "-n", "5")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("build_dataset.py", "--teacher", "latest", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "no complete 'teacher' run" in proc.stderr


def test_list_writer_leaves_nothing_behind_on_error(tmp_path):
    path = tmp_path / "d.json"
    with pytest.raises(RuntimeError):
        with JsonListWriter(path) as writer:
            writer.write({"a": 1})
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with JsonListWriter(path) as writer:
        for i in range(3):
            writer.write({"i": i})
    assert json.loads(path.read_text()) == [{"i": 0}, {"i": 1}, {"i": 2}]


def _constant_policy(action: int, n_actions: int = 6):
    """A Pong policy (ocatari layout of sample.json) that always takes ``action``."""
    from diffses.features import FeatureLayout
    from diffses.policy import SymbolicPolicy
    from conftest import ROOT
    data = load_dataset(ROOT / "sample.json")
    layout = FeatureLayout.for_dataset(data.records, data.meta, None)
    trees = [[{"c": 1.0 if a == action else 0.0}] for a in range(n_actions)]
    return SymbolicPolicy(trees, layout, data.meta["action_meanings"], "ALE/Pong-v5", ["add"])


def test_a_student_plays_and_the_teacher_labels(teacher_run, tmp_path):
    """DAgger data: a policy that always presses RIGHT (up) plays; the paddle ends at the top,
    and every label is the teacher's greedy action on the state the student reached."""
    student = _constant_policy(2).save(tmp_path / "student" / "policy.json")
    done = run(DatasetConfig(teacher=str(teacher_run.path), detector="ocatari", n_steps=150,
                             seed=3, runs_dir=str(tmp_path), progress=False, device="cpu",
                             student=str(student)))
    data = load_dataset(done.path)
    assert data.meta["student"] == str(student)
    names = {int(k): v for k, v in data.meta["type_names"].items()}
    player = [o["y_position"] for r in data.records[-50:] for o in r["state"]
              if names[o["type"]] == "Player"]
    assert player and max(player) < 50
    for rec in data.records:
        probs = rec["teacher_probs"]
        assert probs[rec["teacher_action"]] >= max(probs) - 1e-5


def test_a_student_of_another_game_is_refused(teacher_run, tmp_path):
    policy = _constant_policy(0)
    policy.env_id = "ALE/Breakout-v5"
    path = policy.save(tmp_path / "policy.json")
    with pytest.raises(UserError, match="plays ALE/Breakout-v5"):
        run(DatasetConfig(teacher=str(teacher_run.path), n_steps=10, runs_dir=str(tmp_path),
                          progress=False, device="cpu", student=str(path)))


def test_a_killed_build_resumes_to_the_same_dataset(short_games_teacher, tmp_path):
    """kill -9 after the first whole game; --resume keeps its records and writes the rest,
    byte for byte what an uninterrupted build of the same seed writes."""
    args = ["--teacher", str(short_games_teacher.path), "--episodes", "3", "--seed", "5",
            "--no-progress", "--device", "cpu", "--batch", "16"]
    whole = run_cli("build_dataset.py", *args, "--runs-dir", str(tmp_path / "a"))
    assert whole.returncode == 0, whole.stderr
    kill_when("build_dataset.py", [*args, "--runs-dir", str(tmp_path / "b")], tmp_path / "b",
              "dataset/*/progress.json")
    (folder,) = (tmp_path / "b" / "dataset").iterdir()
    assert (folder / "progress.json").is_file() and not (folder / "dataset.json").exists()
    kept = json.loads((folder / "progress.json").read_text())["writer"]["count"]
    resumed = run_cli("build_dataset.py", "--resume", str(folder), "--runs-dir",
                      str(tmp_path / "b"), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} records kept" in resumed.stdout
    (done,) = (tmp_path / "a" / "dataset").iterdir()
    assert (folder / "dataset.json").read_bytes() == (done / "dataset.json").read_bytes()
    assert not (folder / "progress.json").exists()
    assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
