"""Forests of prefix expression trees: random generation, genetic variations, constants.

Trees and forests are those of :mod:`see.tree` (prefix tokens as in ``policy.json``; one tree
per action, whose values are the action logits).
Every variation takes a ``numpy.random.Generator`` and returns new lists: inputs are never
modified, so individuals may share trees safely.
"""

from __future__ import annotations

import copy
import json
from typing import Sequence

import numpy as np

from see import operators as ops
from see.tree import Forest, Token, Tree, fold

INIT_METHODS = ("half and half", "grow", "full")
#: The features a new terminal draws from: their count (all of them) or their indices.
Features = int | Sequence[int]
#: Tied actions: for each action, the genes whose signed sum is its tree, as (gene, +1 or -1).
Tying = Sequence[Sequence[tuple[int, int]]]
#: Probability that a crossover or mutation point is an operator node (Koza's 90/10 rule).
P_FUNCTION_NODE = 0.9


def subtree_end(tree: Sequence[Token], start: int) -> int:
    """The index one past the subtree rooted at ``start``."""
    need, i = 1, start
    while need > 0:
        tok = tree[i]
        need += ops.get(tok["f"]).arity - 1 if "f" in tok else -1
        i += 1
    return i


def depth(tree: Sequence[Token]) -> int:
    """The number of levels of a tree (a single terminal has depth 1)."""
    return fold(tree, lambda tok: 1, lambda op, children: 1 + max(children))


def feature_pool(features: Features) -> Sequence[int]:
    """The feature indices ``features`` stands for."""
    return range(features) if isinstance(features, int) else features


def random_terminal(rng: np.random.Generator, features: Features,
                    const_range: tuple[float, float] | None) -> Token:
    """A feature of ``features``, or (with probability 1 / (their number + 1)) a constant from
    ``const_range``."""
    pool = feature_pool(features)
    if const_range is not None and rng.integers(len(pool) + 1) == len(pool):
        return {"c": float(rng.uniform(const_range[0], const_range[1]))}
    return {"x": int(pool[int(rng.integers(len(pool)))])}


def random_tree(rng: np.random.Generator, function_set: Sequence[str], features: Features,
                init_depth: tuple[int, int], init_method: str,
                const_range: tuple[float, float] | None) -> Tree:
    """A random tree of depth at most a draw from ``init_depth`` (inclusive).

    ``full`` places operators until the drawn depth, ``grow`` picks an operator or a terminal
    at each node (in proportion to their counts), ``half and half`` picks one of the two.
    """
    if init_method not in INIT_METHODS:
        raise ValueError(f"init_method must be one of {INIT_METHODS}, got {init_method!r}")
    method = init_method
    if method == "half and half":
        method = "full" if rng.integers(2) == 0 else "grow"
    max_depth = int(rng.integers(init_depth[0], init_depth[1] + 1))
    p_function = len(function_set) / (len(function_set) + len(feature_pool(features)) + 1)
    tree: Tree = []
    pending = [1]  # the depth of every node still to be filled, in prefix order
    while pending:
        level = pending.pop()
        leaf = level >= max_depth or not function_set or (
            method == "grow" and level > 1 and rng.random() >= p_function)
        if leaf:
            tree.append(random_terminal(rng, features, const_range))
            continue
        name = function_set[int(rng.integers(len(function_set)))]
        tree.append({"f": name})
        pending.extend([level + 1] * ops.get(name).arity)
    return tree


def pick_node(rng: np.random.Generator, tree: Sequence[Token]) -> int:
    """A node index: an operator with probability 0.9 when the tree has one, else a terminal."""
    functions = [i for i, tok in enumerate(tree) if "f" in tok]
    terminals = [i for i, tok in enumerate(tree) if "f" not in tok]
    pool = functions if functions and (not terminals or rng.random() < P_FUNCTION_NODE) \
        else terminals
    return pool[int(rng.integers(len(pool)))]


def crossover(rng: np.random.Generator, tree: Sequence[Token], donor: Sequence[Token]
              ) -> Tree:
    """``tree`` with a random subtree replaced by a random subtree of ``donor``."""
    start = pick_node(rng, tree)
    end = subtree_end(tree, start)
    d_start = pick_node(rng, donor)
    d_end = subtree_end(donor, d_start)
    return copy.deepcopy([*tree[:start], *donor[d_start:d_end], *tree[end:]])


def hoist_mutation(rng: np.random.Generator, tree: Sequence[Token]) -> Tree:
    """A random subtree replaced by a random subtree of itself (shrinks the tree)."""
    start = pick_node(rng, tree)
    end = subtree_end(tree, start)
    sub = tree[start:end]
    h_start = pick_node(rng, sub)
    h_end = subtree_end(sub, h_start)
    return copy.deepcopy([*tree[:start], *sub[h_start:h_end], *tree[end:]])


def point_mutation(rng: np.random.Generator, tree: Sequence[Token],
                   function_set: Sequence[str], features: Features,
                   const_range: tuple[float, float] | None, p_point_replace: float) -> Tree:
    """Each node replaced with probability ``p_point_replace``: an operator by another of the
    same arity from ``function_set``, a terminal by a random terminal."""
    out = copy.deepcopy(list(tree))
    for i, tok in enumerate(out):
        if rng.random() >= p_point_replace:
            continue
        if "f" in tok:
            arity = ops.get(tok["f"]).arity
            same = [name for name in function_set if ops.get(name).arity == arity]
            if same:
                out[i] = {"f": same[int(rng.integers(len(same)))]}
        else:
            out[i] = random_terminal(rng, features, const_range)
    return out


def constants(forest: Sequence[Sequence[Token]]) -> list[float]:
    """The constants of a forest, tree by tree in token order."""
    return [float(tok["c"]) for tree in forest for tok in tree if "c" in tok]


def with_constants(forest: Sequence[Sequence[Token]], values: Sequence[float]) -> Forest:
    """A copy of ``forest`` whose constants are ``values`` (in :func:`constants` order)."""
    it = iter(values)
    out = [[{"c": float(next(it))} if "c" in tok else dict(tok) for tok in tree]
           for tree in forest]
    if next(it, None) is not None:
        raise ValueError("more values than constants in the forest")
    return out


def jitter_constants(rng: np.random.Generator, forest: Sequence[Sequence[Token]],
                     scale: float) -> Forest:
    """Every constant ``c`` moved by Gaussian noise of std ``scale * max(|c|, 0.1)``."""
    values = np.array(constants(forest))
    noise = rng.normal(size=values.shape) * scale * np.maximum(np.abs(values), 0.1)
    return with_constants(forest, (values + noise).tolist())


def size(forest: Sequence[Sequence[Token]]) -> int:
    """Total number of nodes of a forest (what parsimony penalises)."""
    return sum(len(tree) for tree in forest)


def key(forest: Sequence[Sequence[Token]]) -> str:
    """A canonical string for a forest (equal forests, equal keys)."""
    return json.dumps(forest, sort_keys=True, separators=(",", ":"))


def check_tying(tying: Tying, n_actions: int) -> int:
    """The number of genes of ``tying`` (every gene from 0 on used, signs +1 or -1, one entry
    per action); a ValueError otherwise."""
    if len(tying) != n_actions:
        raise ValueError(f"the tying has {len(tying)} entries for {n_actions} actions")
    used = {g for terms in tying for g, _ in terms}
    if not all(terms for terms in tying) or used != set(range(len(used))) or \
            any(s not in (1, -1) for terms in tying for _, s in terms):
        raise ValueError("every action of a tying is a signed sum of genes 0, 1, ... "
                         "(signs +1 or -1), each gene used")
    return len(used)


def compose(genes: Sequence[Sequence[Token]], tying: Tying) -> Forest:
    """The forest whose action trees are the signed sums of ``genes`` that ``tying`` names
    (``[(1, -1)]``: the negative of gene 1; ``[(1, 1), (2, 1)]``: gene 1 plus gene 2)."""
    forest = []
    for terms in tying:
        (g, s), rest = terms[0], terms[1:]
        tree = list(genes[g]) if s > 0 else [{"f": "neg"}, *genes[g]]
        for g, s in rest:
            tree = [{"f": "add" if s > 0 else "sub"}, *tree, *genes[g]]
        forest.append([dict(tok) for tok in tree])
    return forest


def decompose(forest: Sequence[Sequence[Token]], tying: Tying) -> Forest:
    """Genes for ``tying`` read from a forest: each gene is the tree of the first action that
    is that gene alone, or the constant 0 where no action is."""
    genes: Forest = [[{"c": 0.0}] for _ in range(check_tying(tying, len(forest)))]
    for g in range(len(genes)):
        alone = next((a for a, terms in enumerate(tying) if list(terms) == [(g, 1)]), None)
        if alone is not None:
            genes[g] = [dict(tok) for tok in forest[alone]]
    return genes


def cross_entropy(logit_values: np.ndarray, actions: np.ndarray) -> float:
    """Mean cross-entropy of (N, A) logits to (N,) target actions (natural log); logits more
    than 1e6 below the row's largest count as 1e6 below, so the value stays finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.maximum(logit_values - logit_values.max(axis=1, keepdims=True), -1e6)
    log_norm = np.log(np.exp(np.maximum(z, -700.0)).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(actions)), actions]))
