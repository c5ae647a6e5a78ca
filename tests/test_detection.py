"""The detection API's ocatari backend and the detector scoring (Hungarian matching, F1)."""

from __future__ import annotations

import numpy as np
import pytest

from diffses.detection import Detection, OcatariDetector, load_detector
from diffses.envs import make_env
from diffses.errors import UserError
from space.evaluate import evaluate, match


def _pong_detections(detector: OcatariDetector, steps: int = 150) -> list[list[Detection]]:
    env = make_env("ALE/Pong-v5", native_frames=True, **detector.env_kwargs)
    out = []
    try:
        _, info = env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            _, _, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
            out += detector.detect(info["native_frame"][None], [info])
            if term or trunc:
                _, info = env.reset()
    finally:
        env.close()
    return out


def test_ocatari_backend_returns_ball_and_both_paddles():
    detector = load_detector("ocatari", env_id="ALE/Pong-v5")
    names = detector.type_names
    assert [names[i] for i in range(3)] == ["Player", "Ball", "Enemy"]  # stable ids
    frames = _pong_detections(detector)
    seen = {names[d.type] for dets in frames for d in dets}
    assert seen == {"Player", "Ball", "Enemy"}  # HUD excluded by default
    with_ball = [dets for dets in frames if any(names[d.type] == "Ball" for d in dets)]
    assert len(with_ball) > len(frames) // 2
    for dets in frames:
        for d in dets:
            assert 0 <= d.x <= 160 and 0 <= d.y <= 210 and d.confidence == 1.0
    ball = next(d for d in with_ball[0] if names[d.type] == "Ball")
    assert (ball.w, ball.h) == (2.0, 4.0)


def test_ocatari_backend_includes_hud_when_asked():
    detector = OcatariDetector("ALE/Pong-v5", hud=True)
    seen = {detector.type_names[d.type] for dets in _pong_detections(detector, 20) for d in dets}
    assert {"PlayerScore", "EnemyScore"} <= seen


def test_ocatari_backend_refuses_games_it_does_not_know():
    with pytest.raises(UserError, match="OCAtari knows"):
        load_detector("ocatari", env_id="Airstriker-Genesis-v0")
    with pytest.raises(UserError, match="env id"):
        load_detector("ocatari")
    with pytest.raises(ValueError, match="ground_truth=True"):
        OcatariDetector("ALE/Pong-v5").detect(np.zeros((1, 210, 160, 3), np.uint8), [{}])


def test_eval_scores_ground_truth_against_itself_as_perfect():
    detector = OcatariDetector("ALE/Pong-v5")
    truth = _pong_detections(detector, 80)
    scores = evaluate(truth, truth, detector.type_names)
    for cls in ("Player", "Ball", "Enemy"):
        row = scores["per_class"][cls]
        assert row["f1"] == row["precision"] == row["recall"] == 1.0
        assert row["centre_error"] == 0.0
    assert scores["purity"] == 1.0


def test_eval_maps_relabelled_types_and_zeroes_far_boxes():
    detector = OcatariDetector("ALE/Pong-v5")
    truth = _pong_detections(detector, 80)
    relabelled = [[Detection(d.x + 1, d.y, d.w, d.h, type=10 + d.type) for d in dets]
                  for dets in truth]
    scores = evaluate(relabelled, truth, detector.type_names)
    assert scores["overall"]["f1"] == 1.0
    assert scores["per_class"]["Ball"]["centre_error"] == pytest.approx(1.0)
    assert scores["type_to_class"] == {10: "Player", 11: "Ball", 12: "Enemy"}
    moved = [[Detection(d.x + 80, d.y + 100, d.w, d.h, d.type) for d in dets] for dets in truth]
    far = evaluate(moved, truth, detector.type_names)
    assert far["overall"]["f1"] == 0.0
    assert all(row["f1"] == 0.0 for row in far["per_class"].values())


def test_match_is_one_to_one_within_the_gate():
    a = [Detection(0, 0, 1, 1, 0), Detection(10, 0, 1, 1, 0)]
    b = [Detection(1, 0, 1, 1, 0), Detection(50, 0, 1, 1, 0)]
    assert match(a, b, gate=5) == [(0, 0, 1.0)]
    assert match([], b, gate=5) == []
