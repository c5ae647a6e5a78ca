"""Perception parity: the learned path repaired from the RAM truth one kind of error at a time;
its last step is the truth itself and its first the learned path itself, on a real Pong game
through the shipped detector."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import ROOT
from diffses.detection import Detection, detector_for, load_detector
from diffses.parity import STEPS, RepairedDetector, repair
from diffses.perception import Perception
from diffses.play import SymbolicAgent
from diffses.policy import SymbolicPolicy
from diffses.rollout import rollout
from diffses.runs import Run
from diffses.teacher import teacher_env

PONG_TEACHER = ROOT / "pretrained" / "pong_teacher"
TRACKING = ROOT / "docs" / "policies" / "pong_tracking.json"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_step_repairs_one_kind_of_error():
    truth = [Detection(10, 10, 2, 4, type=1), Detection(50, 80, 4, 16, type=2),
             Detection(100, 80, 4, 16, type=3)]
    learned = [Detection(11, 12, 3, 3, type=1, confidence=0.9),      # ball, box off
               Detection(52, 79, 4, 15, type=3, confidence=0.8),     # paddle, wrong type
               Detection(140, 20, 5, 5, type=2, confidence=0.7)]     # nothing there
    gate = 6.0
    assert repair(learned, truth, "learned", gate) == learned
    kept = repair(learned, truth, "no false positives", gate)
    assert kept == learned[:2]
    typed = repair(learned, truth, "true types", gate)
    assert [d.type for d in typed] == [1, 2] and (typed[1].x, typed[1].y) == (52, 79)
    boxed = repair(learned, truth, "true boxes", gate)
    assert [(d.x, d.y, d.w, d.h, d.type) for d in boxed] == [(10, 10, 2, 4, 1), (50, 80, 4, 16, 2)]
    assert boxed[0].confidence == 0.9
    assert repair(learned, truth, "no misses", gate) == truth
    with pytest.raises(ValueError, match="step must be one of"):
        RepairedDetector(None, None, "boxes")


def _states(detector: Any, policy: SymbolicPolicy, steps: int = 120
            ) -> list[list[dict[str, Any]]]:
    """The objects the policy perceives at each step of one seeded Pong game."""
    agent = SymbolicAgent(policy, Perception(detector))
    venv = teacher_env(Run.load(PONG_TEACHER), 5000, clip_reward=False,
                       **Perception(detector).env_kwargs)
    seen = []
    try:
        for i, _ in enumerate(rollout(venv, agent)):
            seen.append(agent.state)
            if i + 1 >= steps:
                break
    finally:
        venv.close()
    return seen


def test_the_first_step_is_the_learned_path_and_the_last_the_truth():
    policy = SymbolicPolicy.load(TRACKING)
    env_id = Run.load(PONG_TEACHER).env_id
    learned = detector_for(policy.layout.type_names, load_detector(
        ROOT / "pretrained" / "space_pong.pt", env_id=env_id, device="cpu"), str(TRACKING),
        "space_pong.pt")
    truth = load_detector("ocatari", env_id=env_id)
    first = RepairedDetector(learned, truth, STEPS[0])
    assert _states(first, policy) == _states(learned, policy)
    last = RepairedDetector(learned, truth, STEPS[-1])
    assert _states(last, policy) == _states(truth, policy)
    counts = first.summary()
    assert set(counts) == {"Player", "Ball", "Enemy"}
    assert counts["Player"]["objects"] == 120 and counts["Player"]["recall"] > 0.95
    assert 0 <= counts["Ball"]["centre_error"] < 2
