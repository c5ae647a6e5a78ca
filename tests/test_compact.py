"""Compact forests: scale-free fitness, joint polishing, pruning and linear collapse."""

from __future__ import annotations

import numpy as np

from gplearn_custom.compact import (balanced_agreement, collapse_linear, fold_constants,
                                    logistic_loss, logistic_scaling, polish, prune,
                                    soft_cross_entropy)
from see.tree import evaluate, logits

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 1, size=(800, 3))
LABEL = (X[:, 0] - X[:, 1] > 0.1).astype(float)   # a threshold on a difference


def test_logistic_loss_judges_direction_not_scale_or_offset():
    good = X[:, 0] - X[:, 1]
    w = np.ones(len(X))
    scaled = logistic_loss(LABEL, 1e-3 * good + 7.0, w)
    assert abs(scaled - logistic_loss(LABEL, good, w)) < 1e-6
    assert logistic_loss(LABEL, good, w) < 0.5 * logistic_loss(LABEL, X[:, 2], w)
    flat = logistic_loss(LABEL, np.zeros(len(X)), w)
    rate = LABEL.mean()
    assert abs(flat + rate * np.log(rate) + (1 - rate) * np.log(1 - rate)) < 1e-6
    tree = logistic_scaling([{"f": "sub"}, {"x": 0}, {"x": 1}], X, LABEL)
    assert ((evaluate(tree, X) > 0) == LABEL.astype(bool)).mean() > 0.97


def test_polish_moves_the_threshold_to_the_teacher():
    forest = [[{"c": 0.0}], [{"f": "mul"}, {"c": 1.0}, {"f": "sub"}, {"x": 0}, {"x": 1}]]
    target = np.eye(2)[LABEL.astype(int)]
    before = soft_cross_entropy(logits(forest, X), target)
    tuned = polish(forest, X, target)
    assert soft_cross_entropy(logits(tuned, X), target) < 0.2 * before
    assert (np.argmax(logits(tuned, X), axis=1) == LABEL).mean() > 0.99
    assert [len(t) for t in tuned] == [1, 5]  # constants only: the structure is kept


def test_prune_drops_what_does_not_decide_and_keeps_the_agreement():
    rule = [{"f": "sub"}, {"x": 0}, {"x": 1}]
    intron = [{"f": "mul"}, {"f": "tanh"}, {"f": "div"}, {"x": 2}, {"x": 2}, {"f": "add"},
              *rule, {"f": "mul"}, {"c": 0.0}, {"x": 2}]
    forest = [[{"c": 0.1}], intron]
    actions = (X[:, 0] - X[:, 1] > 0.1).astype(int)
    pruned = prune(forest, X, actions)
    agree = (np.argmax(logits(pruned, X), axis=1) == actions).mean()
    assert agree >= (np.argmax(logits(forest, X), axis=1) == actions).mean() - 0.002
    assert len(pruned[1]) <= 5, pruned[1]


def test_prune_keeps_the_tree_of_a_rare_action():
    """An action taken in 2% of the states (Breakout's FIRE when no ball is in play) is
    decided by its own tree: dropping that tree costs 2% of plain agreement, far more than the
    tolerance allows of the balanced agreement, so it stays."""
    rare = X[:, 2] > 0.98
    actions = np.where(rare, 2, (X[:, 0] > X[:, 1]).astype(int))
    forest = [[{"c": 0.0}], [{"f": "mul"}, {"c": 50.0}, {"f": "sub"}, {"x": 0}, {"x": 1}],
              [{"f": "mul"}, {"c": 1000.0}, {"f": "gt"}, {"x": 2}, {"c": 0.98}]]
    assert balanced_agreement(np.argmax(logits(forest, X), axis=1), actions) > 0.99
    pruned = prune(forest, X, actions, tolerance=0.05)
    assert any(t.get("x") == 2 for t in pruned[2]), pruned[2]
    assert (np.argmax(logits(pruned, X), axis=1)[rare] == 2).all()
    assert balanced_agreement(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1])) == 1.0
    assert balanced_agreement(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1])) == 0.5


def test_constants_fold_and_linear_subtrees_collapse_to_the_same_values():
    tree = [{"f": "add"}, {"f": "mul"}, {"c": 2.0}, {"c": 3.0},
            {"f": "sub"}, {"f": "add"}, {"x": 0}, {"x": 1}, {"f": "sub"}, {"x": 1}, {"x": 0}]
    folded = fold_constants(tree)
    assert folded[:2] == [{"f": "add"}, {"c": 6.0}]
    linear = collapse_linear(tree)          # 6 + 2 x0: x1 cancels
    assert len(linear) < len(tree) and not any(t.get("x") == 1 for t in linear)
    assert np.allclose(evaluate(linear, X), evaluate(tree, X))
    nonlinear = [{"f": "tanh"}, {"f": "add"}, {"x": 0}, {"f": "neg"}, {"f": "neg"}, {"x": 1}]
    collapsed = collapse_linear(nonlinear)
    assert collapsed[0] == {"f": "tanh"} and len(collapsed) == 4
    assert np.allclose(evaluate(collapsed, X), evaluate(nonlinear, X))
