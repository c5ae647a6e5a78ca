"""Exact, small forests from raw GP programs: scaled fitness, joint polishing and pruning.

- :func:`logistic_loss` is a gplearn fitness for one-vs-rest trees: the log loss of the best
  logistic fit ``sigmoid(a + b * program)``, so a program is judged on the direction it
  separates the classes in, not on its scale or offset (Keijzer's linear scaling, for
  classes). :func:`logistic_scaling` writes that fit into the tree.
- :func:`polish` fits every constant of a forest at once (the offsets and scales included)
  to the teacher by softmax cross-entropy, so one-vs-rest trees fitted apart agree on one
  argmax and the thresholds sit where the teacher's are.
- :func:`extend_linear` adds the scaled features the search missed, one node each, while
  they lower the cross-entropy markedly.
- :func:`prune` replaces subtrees by constants or by one of their own children while the
  forest keeps its agreement with the teacher, and folds constant subtrees: what is left is
  what decides.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from gplearn_custom.forest import subtree_end
from gplearn_custom.torch_forest import TorchForest
from see import operators as ops
from see.tree import Forest, Token, Tree, evaluate, fold, logits, softmax


def _standardised(values: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """``(values - mean) / std`` with the mean and std, or None for a flat or broken output."""
    with np.errstate(all="ignore"):
        mean, std = float(np.mean(values)), float(np.std(values))
    if not (np.isfinite(mean) and np.isfinite(std)) or std < 1e-12:
        return None
    return (values - mean) / std, mean, std


def _fit_logistic(z: np.ndarray, y: np.ndarray, w: np.ndarray, steps: int = 5
                  ) -> tuple[float, float, float]:
    """Weighted 1-D logistic regression ``y ~ sigmoid(a + b z)`` by Newton's method with a
    small ridge on ``b``; returns ``(a, b, mean log loss)``."""
    total = float(w.sum())
    rate = float(np.clip(w @ y / total, 1e-6, 1 - 1e-6))
    a, b = float(np.log(rate / (1 - rate))), 0.0
    ridge = 1e-4 * total
    wz, wzz = w * z, w * z * z
    for _ in range(steps):
        p = a + b * z
        np.clip(p, -30, 30, out=p)
        np.negative(p, out=p)
        np.exp(p, out=p)
        p += 1.0
        np.reciprocal(p, out=p)                      # sigmoid(a + b z)
        s = p * (1.0 - p)
        p -= y                                       # residual
        g_a, g_b = w @ p, wz @ p + ridge * b
        h_aa, h_ab, h_bb = w @ s + 1e-9, wz @ s, wzz @ s + ridge
        det = h_aa * h_bb - h_ab * h_ab
        if det <= 0:
            break
        a -= (h_bb * g_a - h_ab * g_b) / det
        b -= (h_aa * g_b - h_ab * g_a) / det
    margin = np.clip(a + b * z, -30, 30)
    loss = np.logaddexp(0.0, margin) - y * margin
    return a, b, float(w @ loss / total)


def logistic_loss(y: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> float:
    """gplearn fitness (lower is better) of a program for a 0/1 target: the log loss of its
    best logistic scaling; a flat program scores the base rate's log loss."""
    scaled = _standardised(np.asarray(y_pred, dtype=np.float64))
    z = np.zeros_like(y, dtype=np.float64) if scaled is None else scaled[0]
    return _fit_logistic(z, np.asarray(y, dtype=np.float64), np.asarray(w, dtype=np.float64))[2]


def logistic_scaling(tree: Sequence[Token], X: np.ndarray, y: np.ndarray) -> Tree:
    """``a + b * tree``: the tree as the logit of its best logistic fit to the 0/1 ``y``."""
    scaled = _standardised(evaluate(tree, X))
    if scaled is None:
        return [{"c": _fit_logistic(np.zeros(len(y)), y, np.ones(len(y)))[0]}]
    z, mean, std = scaled
    a, b, _ = _fit_logistic(z, y.astype(np.float64), np.ones(len(y)))
    return [{"f": "add"}, {"c": a - b * mean / std}, {"f": "mul"}, {"c": b / std}, *tree]


def soft_cross_entropy(logit_values: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy of (N, A) logits to (N, A) target probabilities."""
    z = logit_values - logit_values.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(np.maximum(z, -700.0)).sum(axis=1, keepdims=True))
    return float(-(target * np.maximum(log_p, -1e6)).sum(axis=1).mean())


def polish(forest: Sequence[Sequence[Token]], X: np.ndarray, target: np.ndarray,
           steps: int = 50, ridge: float = 1e-6, only: int | None = None) -> Forest:
    """Every constant of the forest fitted at once by L-BFGS to (N, A) target probabilities
    (one-hot teacher actions, or the teacher's probabilities) by softmax cross-entropy plus
    ``ridge`` times the sum of squared constants (separable data would otherwise drive the
    logits' scale without bound); the forest comes back unchanged when that does not lower
    the loss or leaves non-finite values. ``only``: fit that tree's constants, the others
    held."""
    module = TorchForest(forest if only is None else [forest[only]])
    if module.constants.numel() == 0:
        return [list(tree) for tree in forest]
    X_t = torch.as_tensor(X, dtype=torch.float64)
    y_t = torch.as_tensor(target, dtype=torch.float64)
    held = None if only is None else torch.as_tensor(logits(forest, X), dtype=torch.float64)
    optimiser = torch.optim.LBFGS([module.constants], lr=1.0, max_iter=steps,
                                  line_search_fn="strong_wolfe")

    def forward() -> torch.Tensor:
        if held is None:
            return module(X_t)
        return torch.cat([held[:, :only], module(X_t), held[:, only + 1:]], dim=1)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = -(y_t * torch.log_softmax(forward(), dim=1)).sum(dim=1).mean() + \
            ridge * module.constants.square().sum()
        if torch.isfinite(loss):
            loss.backward()
        return loss

    def objective(trees: Sequence[Sequence[Token]]) -> float:
        values = np.array([float(tok["c"]) for tree in trees for tok in tree if "c" in tok])
        return soft_cross_entropy(logits(trees, X), target) + ridge * float(np.sum(values ** 2))

    before = objective(forest)
    with torch.no_grad():
        start = module.constants.detach().clone()
    try:
        optimiser.step(closure)
    except RuntimeError:
        module.constants.data.copy_(start)
    out = module.trees() if only is None else \
        [*map(list, forest[:only]), *module.trees(), *map(list, forest[only + 1:])]
    after = objective(out)
    if not np.isfinite(after) or not np.all(np.isfinite(module.constants.detach().numpy())) \
            or after > before:
        return [list(tree) for tree in forest]
    return out


def extend_linear(forest: Sequence[Sequence[Token]], X: np.ndarray, target: np.ndarray,
                  rounds: int = 3, min_gain: float = 0.05, only: int | None = None) -> Forest:
    """Add, one at a time, the scaled feature that the cross-entropy most wants to one tree
    (``tree + c * x``, by the gradient at ``c = 0``, then every constant polished), while each
    addition lowers the cross-entropy by at least ``min_gain`` of itself: the terms a GP run
    missed, such as a velocity lead, at one node of structure each. ``only``: extend that
    tree only."""
    trees = [list(tree) for tree in forest]
    std = X.std(axis=0)
    centred = X - X.mean(axis=0)
    loss = soft_cross_entropy(logits(trees, X), target)
    for _ in range(rounds):
        probs = softmax(logits(trees, X))
        grad = np.abs((probs - target).T @ centred) / len(X) * std      # (A, F)
        grad[:, std < 1e-9] = 0.0
        if only is not None:
            grad[np.arange(len(trees)) != only] = 0.0
        a, j = np.unravel_index(int(np.argmax(grad)), grad.shape)
        if grad[a, j] <= 0:
            break
        trial = [*trees[:a], [{"f": "add"}, *trees[a], {"f": "mul"}, {"c": 0.0},
                              {"x": int(j)}], *trees[a + 1:]]
        trial = polish(trial, X, target, only=only)
        trial_loss = soft_cross_entropy(logits(trial, X), target)
        if trial_loss > (1 - min_gain) * loss:
            break
        trees, loss = trial, trial_loss
    return trees


def fold_constants(tree: Sequence[Token]) -> Tree:
    """Every subtree without a feature replaced by its value (one constant)."""
    out: Tree = []
    i = 0
    while i < len(tree):
        end = subtree_end(tree, i)
        if "f" in tree[i] and not any("x" in tok for tok in tree[i:end]):
            value = float(evaluate(tree[i:end], np.zeros((1, 1)))[0])
            if np.isfinite(value) and abs(value) < ops.LIMIT:
                out.append({"c": value})
                i = end
                continue
        out.append(dict(tree[i]))
        i += 1
    return out


#: A linear form: feature index (or -1 for the constant) -> coefficient.
Linear = dict[int, float]


def _linear(tree: Sequence[Token]) -> Linear | None:
    """The tree as a linear form when it is built of add, sub, neg and products with a
    constant only; else None."""
    def leaf(tok: Token) -> Linear:
        return {tok["x"]: 1.0} if "x" in tok else {-1: float(tok["c"])}

    def node(op: ops.Operator, args: list[Linear | None]) -> Linear | None:
        if any(a is None for a in args):
            return None
        if op.name == "neg":
            return {k: -v for k, v in args[0].items()}
        if op.name in ("add", "sub"):
            sign = 1.0 if op.name == "add" else -1.0
            out = dict(args[0])
            for k, v in args[1].items():
                out[k] = out.get(k, 0.0) + sign * v
            return out
        if op.name == "mul":
            const = [a for a in args if set(a) <= {-1}]
            if const:
                factor = const[0].get(-1, 0.0)
                other = args[1] if const[0] is args[0] else args[0]
                return {k: factor * v for k, v in other.items()}
        return None

    return fold(tree, leaf, node)


def _from_linear(form: Linear) -> Tree:
    """Prefix tokens of a linear form: the terms summed, a constant last."""
    terms: list[Tree] = []
    for k in sorted(k for k in form if k >= 0 and form[k] != 0.0):
        coef = form[k]
        terms.append([{"x": k}] if coef == 1.0 else [{"f": "mul"}, {"c": coef}, {"x": k}])
    if form.get(-1, 0.0) != 0.0 or not terms:
        terms.append([{"c": form.get(-1, 0.0)}])
    out = terms[0]
    for term in terms[1:]:
        out = [{"f": "add"}, *out, *term]
    return out


def collapse_linear(tree: Sequence[Token]) -> Tree:
    """Every largest linear subtree written as one sum of scaled features (the same values):
    ``(a - b) + ((a - b) + c)`` becomes ``2 a - 2 b + c``."""
    out: Tree = []
    i = 0
    while i < len(tree):
        end = subtree_end(tree, i)
        form = _linear(tree[i:end]) if "f" in tree[i] else None
        if form is not None:
            rebuilt = _from_linear(form)
            if len(rebuilt) < end - i:
                out.extend(rebuilt)
                i = end
                continue
        out.append(dict(tree[i]))
        i += 1
    return out


def _candidates(tree: Sequence[Token], X: np.ndarray) -> list[Tree]:
    """Smaller variants of a tree: each operator's subtree replaced by each of its children
    or by its mean value on ``X``, largest subtrees first."""
    out: list[tuple[int, Tree]] = []
    for i, tok in enumerate(tree):
        if "f" not in tok:
            continue
        end = subtree_end(tree, i)
        head, tail = list(tree[:i]), list(tree[end:])
        child = i + 1
        for _ in range(ops.get(tok["f"]).arity):
            child_end = subtree_end(tree, child)
            out.append((end - i, head + list(tree[child:child_end]) + tail))
            child = child_end
        mean = float(np.mean(evaluate(tree[i:end], X)))
        if np.isfinite(mean):
            out.append((end - i, head + [{"c": mean}] + tail))
    out.sort(key=lambda item: -item[0])
    return [tree_ for _, tree_ in out]


def balanced_agreement(pred: np.ndarray, actions: np.ndarray) -> float:
    """Mean over the actions in ``actions`` of the share of their states where ``pred`` agrees
    (per-action recall)."""
    taken = np.unique(actions)
    return float(np.mean([(pred[actions == a] == a).mean() for a in taken]))


def prune(forest: Sequence[Sequence[Token]], X: np.ndarray, actions: np.ndarray,
          tolerance: float = 0.002, target: np.ndarray | None = None, refits: int = 6
          ) -> Forest:
    """Greedy simplification: keep replacing a subtree by a constant or by one of its children
    while the forest's balanced agreement with ``actions`` on ``X`` (:func:`balanced_agreement`:
    an action the teacher takes rarely, such as Breakout's FIRE, counts as much as a common
    one) stays within ``tolerance`` of the one it started with; constant subtrees are folded. With ``target`` (the
    probabilities :func:`polish` fits), each tree is also tried as a few scaled features
    (:func:`extend_linear` from a constant), and the ``refits`` largest replacements that fail
    as they are get a second chance with every constant polished."""
    trees = [fold_constants(tree) for tree in forest]
    columns = logits(trees, X)                                     # (N, A)

    def agreement(values: np.ndarray) -> float:
        return balanced_agreement(np.argmax(values, axis=1), actions)

    floor = agreement(columns) - tolerance
    refit = target is not None
    while True:
        changed = False
        for a in sorted(range(len(trees)), key=lambda k: -len(trees[k])):
            if refit and len(trees[a]) > 1:
                linear = extend_linear([*trees[:a], [{"c": 0.0}], *trees[a + 1:]], X, target,
                                       only=a)
                values = logits(linear, X)
                if len(linear[a]) < len(trees[a]) and agreement(values) >= floor:
                    trees, columns = linear, values
                    changed = True
                    continue
            for n, candidate in enumerate(_candidates(trees[a], X)):
                trial = columns.copy()
                trial[:, a] = evaluate(candidate, X)
                if agreement(trial) >= floor:
                    trees[a], columns = fold_constants(candidate), trial
                    changed = True
                    break
                if refit and n < refits:
                    polished = polish([*trees[:a], candidate, *trees[a + 1:]], X, target, 20,
                                      only=a)
                    values = logits(polished, X)
                    if agreement(values) >= floor:
                        trees, columns = [fold_constants(t) for t in polished], values
                        changed = True
                        break
        if not changed:
            return trees
