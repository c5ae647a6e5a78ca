"""evaluate_transfer.py: visual shifts and game variants, every agent on the same games."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from diffses.envs import VisualShift, make_env
from diffses.errors import UserError
from diffses.transfer import TransferConfig, parse_target, policy_names, run


def _frames(shift: VisualShift | None) -> tuple[np.ndarray, np.ndarray, list]:
    env = make_env("PongNoFrameskip-v4", native_frames=True, ground_truth=True,
                   visual_shift=shift)
    env.reset(seed=1)
    for _ in range(40):
        obs, _, _, _, info = env.step(2)
    env.close()
    return obs, info["native_frame"], info["objects"]


def test_visual_shifts_change_the_picture_not_the_game():
    obs, frame, objects = _frames(None)
    for shift in (VisualShift("background", (0, 0, 0)), VisualShift("noise", (20,)),
                  VisualShift("shift", (4, 0))):
        obs2, frame2, objects2 = _frames(shift)
        assert objects2 == objects                  # the game state is the same
        assert not np.array_equal(frame2, frame) and not np.array_equal(obs2, obs)
    _, black, _ = _frames(VisualShift("background", (0, 0, 0)))
    colours, counts = np.unique(black.reshape(-1, 3), axis=0, return_counts=True)
    assert tuple(colours[counts.argmax()]) == (0, 0, 0)
    _, moved, _ = _frames(VisualShift("shift", (4, 0)))
    assert np.array_equal(moved[:, 4:], frame[:, :-4])


def test_targets_are_parsed_and_bad_ones_refused():
    assert parse_target("difficulty=1", "PongNoFrameskip-v4").game_kwargs == {"difficulty": 1}
    assert parse_target("shift=4,-2", "PongNoFrameskip-v4").visual_shift.value == (4.0, -2.0)
    for bad, message in [("tint=3", "unknown target"), ("noise=1,2", "takes 1 number"),
                         ("mode=x", "integer"), ("difficulty", "key=value")]:
        with pytest.raises(UserError, match=message):
            parse_target(bad, "PongNoFrameskip-v4")


def test_transfer_table_on_tiny_budgets(teacher_run, tmp_path):
    from test_dataset import _constant_policy
    policy = _constant_policy(2)
    policy.provenance = {"detector": "ocatari"}
    path = policy.save(tmp_path / "p" / "policy.json")
    done = run(TransferConfig(teacher=str(teacher_run.path), policies=(str(path),),
                              targets=("difficulty=1", "noise=10"), episodes=2, max_steps=30,
                              runs_dir=str(tmp_path)))
    out = json.loads((done.path / "transfer.json").read_text())
    assert out["targets"] == ["source", "difficulty=1", "noise=10"]
    agents = ["teacher (pixel PPO)", "p (ocatari)", "random"]
    for target in out["targets"]:
        assert list(out["returns"][target]) == agents
        assert all(len(v["returns"]) == 2 for v in out["returns"][target].values())
    drop = out["drops"]["noise=10"]["teacher (pixel PPO)"]["drop"]
    assert np.isclose(drop, out["returns"]["source"]["teacher (pixel PPO)"]["mean"] -
                      out["returns"]["noise=10"]["teacher (pixel PPO)"]["mean"])
    assert (done.path / "transfer.png").stat().st_size > 1000
    assert "| noise=10 |" in (done.path / "transfer.md").read_text()


def test_policies_are_named_by_their_files_or_run_folders(tmp_path):
    (tmp_path / "run").mkdir()
    refs = ["pretrained/policies/breakout.json", str(tmp_path / "run"),
            "runs/distill/Pong__s0/policy.json", "a/pong.json", "b/pong.json"]
    assert policy_names(refs) == ["breakout", "run", "Pong__s0", "pong #3", "pong #4"]


def test_transfer_cli_refuses_another_games_actions(teacher_run, tmp_path):
    proc = run_cli("evaluate_transfer.py", "--teacher", str(teacher_run.path), "--targets",
                   "game=BreakoutNoFrameskip-v4", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "has 4 actions" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_mode_and_difficulty_targets_change_the_emulators_game():
    def ram_after(**kwargs) -> tuple:
        env = make_env("PongNoFrameskip-v4", **kwargs)
        env.reset(seed=1)
        for _ in range(150):
            env.step(2)
        base = env.unwrapped
        out = (base._game_mode, base._game_difficulty, base.ale.getRAM().tobytes())
        env.close()
        return out
    default = ram_after()
    for text, expected in (("mode=1", (1, None)), ("difficulty=2", (None, 2))):
        kwargs = parse_target(text, "PongNoFrameskip-v4").env_kwargs()
        assert kwargs.pop("env_id") == "PongNoFrameskip-v4"
        mode, difficulty, ram = ram_after(**kwargs)
        assert (mode, difficulty) == expected and ram != default[2]
