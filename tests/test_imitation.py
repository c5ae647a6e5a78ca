"""The imitation loop's parts: object relations, margin weights, the tree learner, actions by
meaning and sticky-action games."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from diffses.distill import (DistillConfig, Split, action_factors, by_meaning, distil, fit_policy,
                             margins, move_tying)
from diffses.errors import UserError
from diffses.features import FeatureLayout
from diffses.play import sticky_kwargs
from diffses.policy import SymbolicPolicy
from diffses.schema import Dataset
from planted import META

BALL = {"type": 1, "x_position": 50, "y_position": 60, "x_velocity": 2.0, "y_velocity": -1.0}
PLAYER = {"type": 0, "x_position": 40, "y_position": 190, "x_velocity": 0.5, "y_velocity": 0.0}
BRICKS = [{"type": 2, "x_position": 8 * i, "y_position": 30, "x_velocity": 0.0,
           "y_velocity": 0.0} for i in range(3)]


def test_relations_relate_single_object_types_and_the_exported_policy_computes_them():
    layout = FeatureLayout({0: "player", 1: "ball", 2: "brick"}, {0: 1, 1: 1, 2: 3},
                           (210, 160), leads=(4,))
    assert layout.pairs == [(0, 1)]          # bricks come many at a time: not related
    names = layout.names
    assert len(names) == layout.size == 25 + 6
    v = dict(zip(names, layout.vector([BALL, PLAYER, *BRICKS])))
    assert v["player0_minus_ball0_x"] == pytest.approx((40 - 50) / 160)
    assert v["player0_minus_ball0_y"] == pytest.approx((190 - 60) / 210)
    assert v["ball0_lead4_minus_player0_x"] == pytest.approx((50 + 4 * 2.0 - 40) / 160)
    assert v["ball0_lead4_minus_player0_y"] == pytest.approx((60 - 4 * 1.0 - 190) / 210)
    assert v["player0_lead4_minus_ball0_x"] == pytest.approx((40 + 4 * 0.5 - 50) / 160)
    no_ball = dict(zip(names, layout.vector([PLAYER])))
    assert no_ball["player0_minus_ball0_x"] == 0.0 and no_ball["ball0_present"] == 0.0
    assert FeatureLayout.from_dict(layout.to_dict()) == layout
    gap = names.index("ball0_lead4_minus_player0_x")
    policy = SymbolicPolicy([[{"x": gap}], [{"f": "neg"}, {"x": gap}]], layout,
                            ["RIGHT", "LEFT"], "Planted-v0", ["neg"])
    namespace: dict = {}
    exec(policy.to_python(), namespace)
    for state in ([BALL, PLAYER, *BRICKS], [dict(BALL, x_position=20), PLAYER], [PLAYER]):
        assert namespace["policy_features"](state) == list(layout.vector(state))
        assert namespace["policy_objects"](state) == policy.act(layout.vector(state)[None])[0]
    assert FeatureLayout({0: "a"}, {0: 1}, (10, 10)).pairs == []   # no leads: no relations


def test_margin_weights_draw_the_records_where_the_choice_matters():
    probs = np.array([[0.9, 0.05, 0.05], [0.34, 0.33, 0.33], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(margins(probs), [0.85, 0.01, 1e-3])
    kinds = np.repeat(np.arange(3), 1000)       # 1000 records of each kind of state
    X = kinds.astype(np.float32)[:, None]
    split = Split(X, X, kinds, kinds, None, margins(probs)[kinds])
    drawn = split.drawn(2000, seed=0)
    assert len(drawn.a_train) == 2000
    share = np.bincount(drawn.a_train, minlength=3) / 2000
    assert share[0] > 0.95 and share[2] < 0.01
    unweighted = Split(X, X, np.arange(3), np.arange(3), None)
    assert unweighted.drawn(10, seed=0) is unweighted


def player_and_ball(n: int, seed: int) -> Iterator[tuple[int, int, int, float, bool, list]]:
    """Per record: its index, the player's and the ball's heights, the player's speed, whether
    the teacher is sure there (every 4th record) and the record's two objects."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        py, by = (int(v) for v in rng.integers(20, 190, size=2))
        vy = float(rng.normal(0, 2))
        yield i, py, by, vy, i % 4 == 0, [
            {"type": 0, "x_velocity": 0.0, "y_velocity": vy, "x_position": 140, "y_position": py},
            {"type": 1, "x_velocity": 0.0, "y_velocity": 0.0, "x_position": 80, "y_position": by}]


def confusing_dataset(n: int = 1200, seed: int = 0) -> Dataset:
    """UP when the ball is above the player, DOWN below, where the teacher is sure; where it
    is not (most records, the ball far away) its action follows the player's speed instead."""
    records = []
    for i, py, by, vy, sure, state in player_and_ball(n, seed):
        up = by < py if sure else vy > 0
        p = 0.98 if sure else 0.36
        probs = [p, 1 - p - 0.01, 0.01] if up else [1 - p - 0.01, p, 0.01]
        if not sure:
            probs = [0.35, 0.34, 0.31] if up else [0.34, 0.35, 0.31]
        records.append({"state": state, "teacher_action": 0 if up else 1, "episode": i // 100,
                        "teacher_probs": probs})
    return Dataset(Path("confusing.json"), records, dict(META))


def test_margin_weighted_tree_learns_the_rule_where_the_teacher_is_sure():
    data = confusing_dataset()
    held = confusing_dataset(seed=1)
    sure = [r for r in held.records if max(r["teacher_probs"]) > 0.9]
    found = {}
    for weights in ("none", "margin"):
        policy, metrics = fit_policy(DistillConfig(learner="tree", leaves=2, weights=weights,
                                                   relations=True, runs_dir="unused"), data)
        assert metrics["mode"] == "tree" and metrics["nodes"] == 3
        assert metrics["rules"][0].startswith("if ") and len(metrics["rules"]) == 4
        X = policy.layout.matrix([r["state"] for r in sure])
        found[weights] = (policy.act(X) == [r["teacher_action"] for r in sure]).mean()
    assert found["margin"] >= 0.95 > found["none"] + 0.2, found


def test_action_meanings_factor_into_moves_and_fire():
    moves, move_of, fires = action_factors(["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE",
                                            "LEFTFIRE"])
    assert moves == ["NOOP", "RIGHT", "LEFT"]
    assert move_of.tolist() == [0, 0, 1, 2, 1, 2] and fires.tolist() == [0, 1, 0, 0, 1, 1]
    assert action_factors(["NOOP", "UP", "DOWN"]) is None       # nothing fires
    assert action_factors(["NOOP", "FIRE"]) is not None
    assert action_factors(["UP", "DOWNFIRE"]) is None           # no move shared


def test_opposite_moves_tie_into_one_gene():
    assert move_tying(["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]) == [
        [(0, 1)], [(0, 1), (1, 1)], [(2, 1)], [(2, -1)], [(2, 1), (1, 1)], [(2, -1), (1, 1)]]
    full = move_tying(["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "DOWNLEFT",
                       "UPLEFTFIRE"])
    assert full[2] == [(2, 1)] and full[5] == [(2, -1)]          # UP and DOWN: one gene
    assert full[6] == [(3, 1), (2, 1)] and full[7] == [(3, -1), (2, -1)]
    assert full[8] == [(3, -1), (2, 1), (1, 1)]                  # LEFT + UP + FIRE
    assert move_tying(["NOOP", "UP", "RIGHT"]) is None           # nothing opposite
    assert move_tying(["B", "A", "LEFT", "RIGHT"]) is None       # not made of moves


def test_forest_by_action_meaning_reads_synonyms_as_one_move():
    """UP and UPFIRE are taken at random where the ball is above: one tree per move sees one
    target, where one tree per action sees a coin flip."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(1200):
        py, by = (int(v) for v in rng.integers(20, 190, size=2))
        action = (0 if by < py else 1) + 2 * int(rng.integers(0, 2))
        records.append({"state": [
            {"type": 0, "x_velocity": 0.0, "y_velocity": 0.0, "x_position": 140, "y_position": py},
            {"type": 1, "x_velocity": 0.0, "y_velocity": 0.0, "x_position": 80, "y_position": by}],
            "teacher_action": action, "episode": i // 100})
    data = Dataset(Path("synonyms.json"), records, dict(
        META, n_actions=4, action_meanings=["UP", "DOWN", "UPFIRE", "DOWNFIRE"]))
    policy, metrics = distil(DistillConfig(actions="meaning", population_size=300,
                                           generations=5, restarts=1, runs_dir="unused"), data)
    assert metrics["action_factors"]["moves"] == ["UP", "DOWN"]
    assert metrics["nodes"] < sum(len(t) for t in policy.trees)   # the FIRE tree counted once
    X = policy.layout.matrix([r["state"] for r in records])
    moves = policy.act(X) % 2
    assert (moves == np.array([r["teacher_action"] for r in records]) % 2).mean() >= 0.95


def test_reading_by_meaning_sums_the_probabilities_of_synonyms():
    factors = action_factors(["UP", "DOWN", "UPFIRE", "DOWNFIRE"])
    probs = np.array([[0.3, 0.4, 0.3, 0.0],       # UP is likelier than DOWN, split over two
                      [0.1, 0.2, 0.5, 0.2],       # UP by UPFIRE
                      [0.0, 0.45, 0.1, 0.45]])    # DOWN, firing or not alike
    actions, move_probs = by_meaning(probs, factors)
    assert actions.tolist() == [0, 2, 1]
    np.testing.assert_allclose(move_probs, [[0.6, 0.4], [0.6, 0.4], [0.1, 0.9]])
    np.testing.assert_allclose(margins(move_probs), [0.2, 0.2, 0.8])
    np.testing.assert_allclose(margins(probs)[[0, 2]], [0.1, 1e-3])


def synonym_dataset(n: int = 1200, seed: int = 0) -> Dataset:
    """The teacher of :func:`confusing_dataset`, sure where the ball is near, but with its
    certainty split evenly between a move and the same move firing; elsewhere it follows the
    player's speed, unsure, mostly by one action."""
    records = []
    for i, py, by, vy, sure, state in player_and_ball(n, seed):
        move = int(by >= py) if sure else int(vy <= 0)
        if sure:
            probs = [0.0] * 4
            probs[move] = probs[move + 2] = 0.49
            probs[1 - move] = probs[3 - move] = 0.01
        else:
            probs = [0.14] * 4
            probs[move], probs[1 - move] = 0.36, 0.22
        records.append({
            "state": state,
            "teacher_action": int(np.argmax(probs)) if not sure else move + 2 * (i % 8 == 0),
            "episode": i // 100, "teacher_probs": probs})
    return Dataset(Path("synonyms.json"), records, dict(
        META, n_actions=4, action_meanings=["UP", "DOWN", "UPFIRE", "DOWNFIRE"]))


def test_tree_by_action_meaning_finds_the_rule_synonyms_hide_from_margins():
    data, held = synonym_dataset(), synonym_dataset(seed=1)
    sure = [r for r in held.records if max(r["teacher_probs"]) > 0.4]
    truth = np.array([int(np.argmax(r["teacher_probs"])) % 2 for r in sure])
    found = {}
    for actions in ("each", "meaning"):
        policy, metrics = fit_policy(DistillConfig(learner="tree", leaves=3, weights="margin",
                                                   actions=actions, relations=True,
                                                   runs_dir="unused"), data)
        X = policy.layout.matrix([r["state"] for r in sure])
        found[actions] = (policy.act(X) % 2 == truth).mean()
        if actions == "meaning":
            assert metrics["nodes"] == 4 and "fire:" in metrics["rules"]   # 2 move leaves
            namespace: dict = {}
            exec(policy.to_python(), namespace)
            assert all(namespace["policy_objects"](r["state"]) == a
                       for r, a in zip(sure[:50], policy.act(X[:50])))
    assert found["meaning"] >= 0.95 > found["each"] + 0.2, found


def test_sticky_actions_are_for_atari_games_only():
    assert sticky_kwargs("PongNoFrameskip-v4", 0.25) == {
        "env_kwargs": {"repeat_action_probability": 0.25}}
    assert sticky_kwargs("Airstriker-Genesis-v0", 0.0) == {}
    with pytest.raises(UserError, match="sticky actions exist for Atari games"):
        sticky_kwargs("Airstriker-Genesis-v0", 0.25)
    with pytest.raises(UserError, match=r"in \[0, 1\)"):
        sticky_kwargs("PongNoFrameskip-v4", 1.0)
    with pytest.raises(UserError, match="--weights margin needs teacher_probs"):
        data = confusing_dataset(200)
        for r in data.records:
            del r["teacher_probs"]
        fit_policy(DistillConfig(learner="tree", weights="margin", runs_dir="unused"), data)
