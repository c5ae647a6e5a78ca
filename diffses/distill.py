"""Stage II-C: distil a dataset of teacher behaviour into a forest of symbolic expressions.

One gplearn tree per action over the feature layout, each judged without regard to scale
and offset so the search spends itself on structure: ``classifier`` mode fits each action
one-vs-rest on the teacher's actions, scoring a program by the log loss of its best logistic
fit; ``regressor`` mode fits the teacher's centred log-probabilities (needs
``teacher_probs``) by correlation, then scales linearly (Keijzer's linear scaling). The
forest is then compacted: all constants polished jointly by softmax cross-entropy, subtrees
that do not change the agreement with the teacher pruned, constants folded. The action is
the argmax of the trees. Records are split into train and validation by episode;
``restarts`` independent runs keep the forest with the best validation agreement (a perfect
one ends them). The ``tree`` learner fits a decision tree instead (the VIPER baseline), played
as a forest of nested ``ite`` formulas.

The layout offers object relations (differences of every pair of single-object types, also led
along their velocities). With ``weights=margin`` a record counts by how much the teacher's choice
matters there (its top action probability minus its second): the tree learner weighs records
so, the GP learner fits on records drawn in proportion (VIPER's resampling). ``dagger`` rounds
play the policy, have the teacher label every state it visits, aggregate and refit; every
round plays the same selection games (seeded apart from everything else, as they are and under
sticky actions) and the round with the best selection return is kept.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gplearn.fitness import make_fitness

from diffses.arrays import DatasetArrays
from diffses.cli import arg, composed, flat_values, part
from diffses.envs import require_same_game
from diffses.errors import UserError
from diffses.features import DEFAULT_LEADS, FeatureLayout
from diffses.io import JsonListWriter, atomic_write_json, atomic_write_text, iter_json_list
from diffses.policy import POLICY, SymbolicPolicy
from diffses.runs import Run, resolve_run
from diffses.schema import DATASET, Dataset, SchemaError, meta_path
from diffses.utils import resolve_device, seed_everything
from gplearn_custom.compact import collapse_linear, extend_linear, logistic_loss, \
    logistic_scaling, polish, prune
from gplearn_custom.params import GPParams, at_least, n_jobs_ok, require
from see import operators as ops
from see.tree import evaluate, from_gplearn, softmax

STAGE = "distill"
MODES = ("auto", "classifier", "regressor")
#: gplearn fitness of one-vs-rest programs: log loss after the best logistic scaling.
LOGISTIC = make_fitness(function=logistic_loss, greater_is_better=False, wrap=False)
#: A tree for an action the teacher never took: a constant that never wins the argmax.
NEVER = [{"c": -1e6}]
#: The fewest programs a tree's population may have under a shared search budget.
MIN_POPULATION = 50
#: DAgger round k of seed s collects games from seed ``DAGGER_SEED_OFFSET + 1000 s + k e`` on
#: (``e`` games a round).
DAGGER_SEED_OFFSET = 20000
#: The selection games of every DAgger round, from every seed: seeds from this one on.
SELECT_SEED = 9000
#: The fresh selection games the best rounds are replayed on (``dagger_reselect``).
RESELECT_SEED = 9100
LEARNERS = ("gp", "tree")
ACTIONS = ("each", "meaning")
WEIGHTS = ("none", "margin")


@composed
@dataclass(frozen=True)
class DistillConfig:
    """Distil a teacher dataset into one symbolic expression per action with gplearn and write
    policy.json (trees, feature layout, operators, readable formulas, metrics)."""

    dataset: str = arg("latest", "dataset run folder, 'latest', or a dataset file "
                                 "(e.g. sample.json)")
    config: str | None = arg(None, "yaml file of these options (flags on the command line win)")
    learner: str = arg("gp", "gp (one gplearn expression per action) or tree (a decision tree "
                             "of at most --leaves leaves, played as nested ite formulas: the "
                             "VIPER baseline)", choices=LEARNERS)
    leaves: int = arg(8, "tree learner: most leaves (nodes = 2 leaves - 1)")
    fire_leaves: int = arg(4, "tree learner with --actions meaning: most leaves of the FIRE "
                              "tree, within --leaves (the smallest of 1, 2, 4, ... within 0.01 "
                              "of the best held-out firing agreement is kept)")
    mode: str = arg("auto", "classifier (one-vs-rest on actions), regressor (on the teacher's "
                            "logits, needs teacher_probs) or auto", choices=MODES)
    actions: str = arg("each", "each (one tree per action) or meaning (where the action "
                               "meanings factor into a move and FIRE: the teacher's choice is "
                               "read as its most probable move and whether it fires, margin "
                               "weights from the moves' summed probabilities; the gp learner "
                               "fits one tree per move and one for FIRE, the tree learner a move "
                               "tree and a FIRE tree within --leaves; classifier mode)",
                       choices=ACTIONS)
    relations: bool = arg(False, "offer object relations: for every pair of single-object "
                                 "types their differences in x and y, also with either led by "
                                 "2, 4 and 8 steps of its velocity", negative="--no-relations")
    weights: str = arg("none", "record weights: none, or margin (the teacher's top action "
                               "probability minus its second: states where the choice matters "
                               "count most, as in VIPER; needs teacher_probs)", choices=WEIGHTS)
    sample_records: int = arg(20000, "gp learner: at most this many training records, drawn "
                                     "in proportion to their weights (VIPER's resampling)")
    gp: GPParams = part(GPParams(generations=10))
    max_samples: float = arg(1.0, "gplearn max_samples (fraction of rows per program)")
    max_slots: int | None = arg(None, "cap on objects per type in the feature layout")
    validation_fraction: float = arg(0.2, "share of episodes held out for validation")
    restarts: int = arg(2, "independent GP runs; the best validation agreement is kept")
    forest_budget: float = arg(4.0, "the forest's search effort in trees of population_size: "
                                    "each action's tree gets a population in proportion to how "
                                    "often the teacher took it (at least 50, at most "
                                    "population_size), so time does not grow with the action "
                                    "count; 0 gives every tree population_size")
    compact: bool = arg(True, "polish the forest's constants jointly and prune subtrees that "
                              "do not change its agreement with the teacher")
    prune_tolerance: float = arg(0.002, "agreement on the training records, balanced over "
                                        "actions, that pruning may give up")
    dagger: int = arg(0, "DAgger rounds (VIPER's loop): the policy plays --dagger-episodes "
                         "games, the teacher labels every state it visited, those records join "
                         "the dataset and the policy is fitted again; the round that scored "
                         "best on the selection games is kept")
    dagger_episodes: int = arg(2, "games the forest plays in each DAgger round")
    dagger_select: int = arg(5, "selection games every DAgger round's policy plays (the same "
                                "for every round and seed, from seed 9000), as they are and "
                                "under sticky actions; the best mean return over both is "
                                "kept, ties by validation agreement")
    dagger_sticky: float = arg(0.25, "sticky-action probability of the selection games' second "
                                     "play (Atari; 0: played once, as they are)")
    dagger_collect_sticky: float = arg(0.0, "sticky-action probability of the games each "
                                            "round collects (Atari; 0 for none)")
    dagger_max_steps: int | None = arg(3000, "cap on agent steps per DAgger game")
    dagger_restarts: int = arg(1, "independent DAgger loops (other collection games, the same "
                                  "selection games); the best round of all of them is kept")
    dagger_reselect: int = arg(0, "after the loops, the rounds with the best selection "
                                   "returns, this many, play --dagger-reselect-games fresh "
                                   "selection games (from seed 9100, as they are and under "
                                   "sticky actions) and the best there is kept: among many "
                                   "rounds the best on a few games is partly the luckiest, and "
                                   "fresh games do not share that luck (0: keep the best round)")
    dagger_reselect_games: int = arg(8, "fresh selection games of --dagger-reselect")
    n_jobs: int = arg(1, "gplearn n_jobs")
    seed: int = arg(0, "random seed")
    eval_episodes: int = arg(0, "play this many seeded games with the policy and the teacher")
    eval_max_steps: int | None = arg(None, "cap on agent steps per evaluation game")
    teacher: str | None = arg(None, "teacher run for --eval-episodes (default: the dataset's)")
    detector: str | None = arg(None, "detector for --eval-episodes (default: the dataset's)")
    device: str = arg("cpu", "torch device for evaluation")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("gp", "run name, part of the run folder's name")
    verbose: int = arg(0, "gplearn verbosity")

    def __post_init__(self) -> None:
        require([
            (bool(self.gp.function_set), "function_set names no operator"),
            (0 < self.max_samples <= 1, "max_samples must be in (0, 1]"),
            (0 < self.validation_fraction < 1, "validation_fraction must be in (0, 1)"),
            (self.restarts >= 1, "restarts must be at least 1"),
            (self.forest_budget >= 0, "forest_budget must be at least 0"),
            (self.dagger >= 0 and self.dagger_episodes >= 1 and self.dagger_select >= 1,
             "dagger must be >= 0, dagger_episodes and dagger_select >= 1"),
            (0 <= self.dagger_sticky < 1 and 0 <= self.dagger_collect_sticky < 1,
             "dagger_sticky and dagger_collect_sticky must be in [0, 1)"),
            at_least(self.dagger_max_steps, 1, "--dagger-max-steps"),
            at_least(self.dagger_restarts, 1, "--dagger-restarts"),
            at_least(self.dagger_reselect, 0, "--dagger-reselect"),
            at_least(self.dagger_reselect_games, 1, "--dagger-reselect-games"),
            at_least(self.leaves, 2, "--leaves"),
            at_least(self.fire_leaves, 1, "--fire-leaves"),
            at_least(self.sample_records, 10, "--sample-records"),
            (0 <= self.prune_tolerance < 1, "prune_tolerance must be in [0, 1)"),
            at_least(self.max_slots, 1, "--max-slots"),
            n_jobs_ok(self.n_jobs),
            at_least(self.eval_episodes, 0, "--eval-episodes"),
            at_least(self.eval_max_steps, 1, "--eval-max-steps"),
        ], UserError)

    def gplearn_params(self, seed: int) -> dict[str, Any]:
        """Keyword arguments for a gplearn estimator."""
        gp = self.gp
        return dict(population_size=gp.population_size, generations=gp.generations,
                    tournament_size=gp.tournament_size, const_range=tuple(gp.const_range),
                    init_depth=tuple(gp.init_depth), init_method=gp.init_method,
                    function_set=ops.gplearn_function_set(gp.function_set),
                    parsimony_coefficient=gp.parsimony_coefficient,
                    p_crossover=gp.p_crossover, p_subtree_mutation=gp.p_subtree_mutation,
                    p_hoist_mutation=gp.p_hoist_mutation, p_point_mutation=gp.p_point_mutation,
                    p_point_replace=gp.p_point_replace, max_samples=self.max_samples,
                    n_jobs=self.n_jobs, random_state=seed, verbose=self.verbose)

    @property
    def leads(self) -> tuple[int, ...] | None:
        """The layout's relation leads (None: no relations)."""
        return DEFAULT_LEADS if self.relations else None


@dataclass
class Split:
    """Features and targets of the train and validation records."""

    X_train: np.ndarray     # (N, F)
    X_val: np.ndarray       # (M, F)
    a_train: np.ndarray     # (N,) teacher actions
    a_val: np.ndarray       # (M,)
    logits_train: np.ndarray | None   # (N, A) centred log-probabilities, when known
    w_train: np.ndarray | None = None  # (N,) record weights; None: all alike

    def drawn(self, n: int, seed: int) -> "Split":
        """The training records drawn ``n`` times in proportion to their weights (with
        replacement); unchanged without weights when there are at most ``n``."""
        size = len(self.a_train)
        if self.w_train is None and size <= n:
            return self
        rng = np.random.default_rng(seed)
        p = None if self.w_train is None else self.w_train / self.w_train.sum()
        rows = rng.choice(size, size=min(n, size), replace=self.w_train is not None, p=p)
        return Split(self.X_train[rows], self.X_val, self.a_train[rows], self.a_val,
                     None if self.logits_train is None else self.logits_train[rows])


def margins(probs: np.ndarray) -> np.ndarray:
    """(N, A) action probabilities -> (N,) the top one minus the second (a floor keeps every
    record drawable)."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return np.maximum(top2[:, 1] - top2[:, 0], 1e-3)


def by_meaning(probs: np.ndarray, factors: tuple[list[str], np.ndarray, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) action probabilities -> the teacher's choice read by meaning: (N,) the action of
    its most probable move (probabilities summed over the move's synonyms), firing where
    firing holds most of that move's probability (else the move's most probable action), and
    (N, M) the moves' summed probabilities."""
    moves, move_of, fires = factors
    onehot = np.eye(len(moves))[move_of]
    move_probs = probs @ onehot
    move = move_probs.argmax(axis=1)
    fire_share = (probs * fires) @ onehot
    fire = fire_share[np.arange(len(move)), move] * 2 > move_probs[np.arange(len(move)), move]
    exact = (move_of[None, :] == move[:, None]) & (fires[None, :] == fire[:, None])
    within = np.where(move_of[None, :] == move[:, None], probs, -1.0)
    actions = np.where(exact.any(axis=1), exact.argmax(axis=1), within.argmax(axis=1))
    return actions.astype(np.int64), move_probs


def split_episodes(data: Dataset | DatasetArrays, layout: FeatureLayout, fraction: float,
                   seed: int, weights: str = "none",
                   factors: tuple[list[str], np.ndarray, np.ndarray] | None = None) -> Split:
    """Hold out a seeded share of episodes (or the last share of steps, for one episode). In
    a DAgger dataset only the teacher's own episodes (meta ``teacher_episodes``) are held out,
    the same ones as in the dataset it grew from; the student's games are all for training.
    ``weights``: ``margin`` weighs each training record by :func:`margins`. ``factors``
    (:func:`action_factors`): the teacher's actions are read by meaning (:func:`by_meaning`)
    where its probabilities are known, and margins are taken over the moves."""
    data = DatasetArrays.of(data)
    episodes = data.episodes
    pool = np.unique(episodes)
    own = (data.meta or {}).get("teacher_episodes")
    if own is not None:
        pool = np.intersect1d(pool, np.asarray(own, dtype=pool.dtype))
    if len(pool) >= 2:
        rng = np.random.default_rng(seed)
        n_val = max(1, int(round(fraction * len(pool))))
        val = np.isin(episodes, rng.permutation(pool)[:n_val])
    else:
        rows = np.flatnonzero(np.isin(episodes, pool))
        val = np.zeros(data.n_records, dtype=bool)
        val[rows[int(round((1 - fraction) * len(rows))):]] = True
    if val.all() or not val.any():
        raise UserError(f"{data.path}: too few records to hold out a validation share")
    X = data.features(layout)
    actions = data.actions
    logits = None
    margin_probs = data.probs
    if data.probs is not None:
        logp = np.log(np.clip(data.probs, 1e-6, 1.0))
        logits = logp - logp.mean(axis=1, keepdims=True)
        if factors is not None:
            actions, margin_probs = by_meaning(data.probs, factors)
    w = None
    if weights == "margin":
        if data.probs is None:
            raise UserError(f"{data.path}: --weights margin needs teacher_probs in every record")
        w = margins(margin_probs)[~val]
    return Split(X[~val], X[val], actions[~val], actions[val],
                 None if logits is None else logits[~val], w)


def resolve_mode(mode: str, split: Split) -> str:
    if mode == "regressor" and split.logits_train is None:
        raise UserError("regressor mode needs teacher_probs in every record; use classifier")
    if mode == "auto":
        return "regressor" if split.logits_train is not None else "classifier"
    return mode


def tree_populations(cfg: DistillConfig, actions: np.ndarray, n_actions: int) -> list[int]:
    """Each action's population: its share of ``forest_budget`` trees' worth of programs."""
    size = cfg.gp.population_size
    if cfg.forest_budget == 0:
        return [size] * n_actions
    share = np.bincount(actions, minlength=n_actions) / max(1, len(actions))
    low = min(size, MIN_POPULATION)
    return [int(np.clip(round(cfg.forest_budget * size * s), low, size)) for s in share]


def fit_forest(cfg: DistillConfig, split: Split, n_actions: int, mode: str, seed: int,
               on_block: Callable[[int, list[list[dict]]], bool] | None = None
               ) -> list[list[dict]]:
    """One tree per action. With ``on_block``, generations run in blocks (gplearn warm
    starts) and ``on_block(generations_done, trees)`` may return False to stop early."""
    from gplearn.genetic import SymbolicRegressor
    estimators: list[Any] = []
    populations = tree_populations(cfg, split.a_train, n_actions)
    for a in range(n_actions):
        params = dict(cfg.gplearn_params(seed + a), population_size=populations[a])
        if mode == "classifier":
            y = (split.a_train == a).astype(int)
            if y.min() == y.max():
                estimators.append(None)
                continue
            estimators.append((SymbolicRegressor(**params, warm_start=True, metric=LOGISTIC,
                                                 stopping_criteria=0.0), y))
        else:
            estimators.append((SymbolicRegressor(**params, warm_start=True, metric="pearson",
                                                 stopping_criteria=1.0),
                               split.logits_train[:, a]))

    def trees() -> list[list[dict]]:
        out = []
        for entry in estimators:
            if entry is None:
                out.append(NEVER)
                continue
            tree = from_gplearn(entry[0]._program.program)
            out.append(logistic_scaling(tree, split.X_train, entry[1]) if mode == "classifier"
                       else linear_scaling(tree, split.X_train, entry[1]))
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for g in _generation_blocks(cfg.gp.generations, on_block is not None):
            for entry in estimators:
                if entry is None:
                    continue
                est, y = entry
                est.set_params(generations=g)
                est.fit(split.X_train, y)
            if on_block is not None and not on_block(g, trees()):
                break
    return trees()


def action_factors(meanings: list[str]) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """Action meanings as a move and FIRE (``UPFIRE`` = ``UP`` + FIRE, ``FIRE`` = ``NOOP`` +
    FIRE): the moves, each action's move and whether it fires; None where they do not factor
    (no action fires, or none shares its move with another)."""
    moves_of = [m.replace("FIRE", "") or "NOOP" for m in meanings]
    fires = np.array(["FIRE" in m for m in meanings])
    moves = list(dict.fromkeys(moves_of))
    if not fires.any() or len(moves) == len(meanings):
        return None
    return moves, np.array([moves.index(m) for m in moves_of]), fires


OPPOSITES = (("RIGHT", "LEFT"), ("UP", "DOWN"))


def move_tying(meanings: list[str]) -> list[list[tuple[int, int]]] | None:
    """Action meanings as genes (:data:`gplearn_custom.forest.Tying`): one gene for standing
    still, one per axis of opposite moves (``RIGHT`` its gene, ``LEFT`` its negative; ``UP``
    and ``DOWN`` likewise), one per move without an opposite and one for FIRE, which adds to
    the action's move (``UPFIRE`` = the vertical gene + the FIRE gene, ``FIRE`` = standing
    still + FIRE). None where no two moves are opposite or a meaning is not made of these."""
    directions = [d for pair in OPPOSITES for d in pair]
    parsed = []
    for meaning in meanings:
        rest, moves = meaning.replace("FIRE", ""), []
        for d in directions:
            if d in rest:
                moves.append(d)
                rest = rest.replace(d, "", 1)
        if rest not in ("", "NOOP"):
            return None
        parsed.append((moves, "FIRE" in meaning))
    present = {d for moves, _ in parsed for d in moves}
    if not any(a in present and b in present for a, b in OPPOSITES):
        return None
    axis = {d: (d, 1) for d in present}   # a move's gene and sign
    axis.update({b: (a, -1) for a, b in OPPOSITES if a in present and b in present})
    genes: dict[str, int] = {}
    tying = []
    for moves, fires in parsed:
        terms = [(genes.setdefault(axis[d][0], len(genes)), axis[d][1]) for d in moves] or \
            [(genes.setdefault("NOOP", len(genes)), 1)]
        if fires:
            terms.append((genes.setdefault("FIRE", len(genes)), 1))
        tying.append(terms)
    return tying


def factored_forest(cfg: DistillConfig, split: Split,
                    factors: tuple[list[str], np.ndarray, np.ndarray], seed: int
                    ) -> tuple[list[list[dict]], int]:
    """One tree per move and one for FIRE, each fitted (one-vs-rest) and compacted on the
    teacher's actions read as moves or as firing; an action's formula is its move's tree,
    plus the FIRE tree where it fires. Returns the per-action trees and the tokens of the
    factor trees."""
    moves, move_of, fires = factors
    parts = []
    for labels, n in ((move_of, len(moves)), (fires.astype(np.int64), 2)):
        sub = Split(split.X_train, split.X_val, labels[split.a_train], labels[split.a_val],
                    None)
        trees = fit_forest(cfg, sub, n, "classifier", seed)
        if n == 2:   # the FIRE tree against a constant: its logit alone decides
            trees[0] = [{"c": 0.0}]
        parts.append(compact_forest(cfg, trees, sub, "classifier"))
    move_trees, (still, fire) = parts
    fire = [{"f": "sub"}, *fire, *still] if still != [{"c": 0.0}] else fire
    trees = [[{"f": "add"}, *move_trees[m], *fire] if f else list(move_trees[m])
             for m, f in zip(move_of, fires)]
    return trees, sum(len(t) for t in move_trees) + len(fire)


def compact_forest(cfg: DistillConfig, trees: list[list[dict]], split: Split, mode: str
                   ) -> list[list[dict]]:
    """Polish every constant jointly, add the linear terms the search missed, prune what does
    not change the teacher agreement on the training records, collapse linear subtrees and
    polish again (see :mod:`gplearn_custom.compact`)."""
    if not cfg.compact:
        return trees
    n_actions = len(trees)
    if mode == "classifier":
        target = np.eye(n_actions)[split.a_train]
    else:
        target = softmax(split.logits_train)
    trees = extend_linear(polish(trees, split.X_train, target), split.X_train, target)
    trees = prune(trees, split.X_train, split.a_train, cfg.prune_tolerance, target)
    trees = polish([collapse_linear(tree) for tree in trees], split.X_train, target)
    return [collapse_linear(tree) for tree in trees]


def linear_scaling(tree: list[dict], X: np.ndarray, target: np.ndarray) -> list[dict]:
    """``a + b * tree`` with the least-squares ``a``, ``b`` for ``target`` (the tree was
    selected on correlation, which ignores scale and offset)."""
    f = evaluate(tree, X)
    var = float(f.var())
    if var < 1e-12 or not np.isfinite(var):
        return [{"c": float(target.mean())}]
    b = float(np.cov(f, target, bias=True)[0, 1] / var)
    a = float(target.mean() - b * f.mean())
    if abs(b) * np.sqrt(var) < 1e-9 * (1 + abs(a)):  # the tree explains nothing: a constant
        return [{"c": a}]
    return [{"f": "add"}, {"c": a}, {"f": "mul"}, {"c": b}, *tree]


def _generation_blocks(generations: int, reporting: bool) -> list[int]:
    """Cumulative generation counts to fit to: all at once, or in up to 5 reporting blocks."""
    if not reporting:
        return [generations]
    step = max(1, generations // 5)
    return sorted(set(list(range(step, generations, step)) + [generations]))


def agreement(policy_trees: list[list[dict]], layout: FeatureLayout, X: np.ndarray,
              actions: np.ndarray, meanings: list[str], env_id: str) -> float:
    policy = SymbolicPolicy(policy_trees, layout, meanings, env_id, [])
    return float((policy.act(X) == actions).mean())


def _confusion(pred: np.ndarray, truth: np.ndarray, n: int) -> list[list[int]]:
    mat = np.zeros((n, n), dtype=int)
    np.add.at(mat, (truth, pred), 1)
    return mat.tolist()


def distil(cfg: DistillConfig, data: Dataset | DatasetArrays,
           on_generation: Callable[[int, float], bool] | None = None
           ) -> tuple[SymbolicPolicy, dict[str, Any]]:
    """Fit the forest (with restarts) and measure it; returns the policy and its metrics.
    ``on_generation(g, validation_agreement)`` reports progress (``g`` counts on across
    restarts) and may stop the run."""
    seed_everything(cfg.seed)
    data = DatasetArrays.of(data)
    layout, split = _layout_split(cfg, data)
    split = split.drawn(cfg.sample_records, cfg.seed)
    n_actions = data.n_actions
    meanings = (data.meta or {}).get("action_meanings") or [str(a) for a in range(n_actions)]
    factors = _factors(cfg, data)
    mode = "classifier" if factors else resolve_mode(cfg.mode, split)
    env_id = (data.meta or {}).get("env_id", "unknown")
    best: tuple[float, list[list[dict]], int] | None = None
    runs = []
    t0 = time.perf_counter()
    stopped = False
    for r in range(cfg.restarts):
        seed = cfg.seed + 1000 * r

        def report(g: int, trees: list[list[dict]], done: int = r * cfg.gp.generations) -> bool:
            nonlocal stopped
            stopped = not on_generation(done + g, agreement(trees, layout, split.X_val,
                                                            split.a_val, meanings, env_id))
            return not stopped
        if factors:
            trees, nodes = factored_forest(cfg, split, factors, seed)
            raw_sizes = None
        else:
            raw = fit_forest(cfg, split, n_actions, mode, seed,
                             report if on_generation is not None else None)
            trees = compact_forest(cfg, raw, split, mode)
            nodes, raw_sizes = sum(len(t) for t in trees), [len(t) for t in raw]
        val = agreement(trees, layout, split.X_val, split.a_val, meanings, env_id)
        runs.append({"restart": r, "seed": seed, "validation_agreement": val,
                     "raw_tree_sizes": raw_sizes})
        if best is None or val > best[0]:
            best = (val, trees, nodes)
        if stopped or val >= 1.0:  # no later restart can beat a perfect agreement
            break
    seconds = time.perf_counter() - t0
    policy = SymbolicPolicy(best[1], layout, meanings, env_id, list(cfg.gp.function_set))
    pred_val = policy.act(split.X_val)
    metrics = {
        "mode": mode,
        "validation_agreement": best[0],
        "train_agreement": float((policy.act(split.X_train) == split.a_train).mean()),
        "validation_confusion": _confusion(pred_val, split.a_val, n_actions),
        "teacher_action_share": np.bincount(split.a_train, minlength=n_actions).tolist(),
        "tree_sizes": [len(t) for t in policy.trees],
        "nodes": best[2],
        "nodes_kind": "tokens of all trees" + (" (a move's tree and the FIRE tree counted once)"
                                               if factors else ""),
        "action_factors": None if factors is None else
        {"moves": factors[0], "move_of": factors[1].tolist(), "fires": factors[2].tolist()},
        "tree_populations": tree_populations(cfg, split.a_train, n_actions),
        "n_train": int(len(split.a_train)),
        "n_validation": int(len(split.a_val)),
        "restarts": runs,
        "fit_seconds": round(seconds, 2),
    }
    policy.metrics = metrics
    return policy, metrics


def _layout_split(cfg: DistillConfig, data: DatasetArrays) -> tuple[FeatureLayout, Split]:
    """The layout of ``cfg`` for ``data`` and its split, weighted as ``cfg`` says."""
    layout = data.layout(cfg.max_slots, cfg.leads)
    if layout.size == 0:
        raise UserError(f"{data.path}: no objects in any record; nothing to distil from")
    return layout, split_episodes(data, layout, cfg.validation_fraction, cfg.seed, cfg.weights,
                                  _factors(cfg, data))


def _factors(cfg: DistillConfig, data: DatasetArrays
             ) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """The dataset's action factors when ``cfg`` reads actions by meaning and they factor."""
    if cfg.actions != "meaning":
        return None
    meanings = (data.meta or {}).get("action_meanings") or [str(a) for a in range(data.n_actions)]
    return action_factors(meanings)


def fit_tree(cfg: DistillConfig, data: Dataset | DatasetArrays
             ) -> tuple[SymbolicPolicy, dict[str, Any]]:
    """The tree learner: a decision tree of at most ``cfg.leaves`` leaves on the split's
    training records (weighted as ``cfg`` says), as a policy, and its metrics."""
    seed_everything(cfg.seed)
    data = DatasetArrays.of(data)
    t0 = time.perf_counter()
    layout, split = _layout_split(cfg, data)
    meta = data.meta or {}
    meanings = meta.get("action_meanings") or [str(a) for a in range(data.n_actions)]
    factors = _factors(cfg, data)
    base = SymbolicPolicy([NEVER] * data.n_actions, layout, meanings,
                          meta.get("env_id", "unknown"), ["ite", "sub", "add"][:3 if factors else 2])
    policy, nodes = (factored_tree(base, split, factors, cfg.seed, cfg.leaves, cfg.fire_leaves)
                     if factors else
                     decision_tree_policy(base, split, cfg.seed, cfg.leaves))
    policy.metrics = {"rules": policy.metrics["rules"],
        "mode": "tree", "validation_agreement": _agreement(policy, split.X_val, split.a_val),
        "train_agreement": _agreement(policy, split.X_train, split.a_train),
        "tree_sizes": [len(t) for t in policy.trees], "nodes": nodes,
        "nodes_kind": "decision-tree nodes (splits and leaves)",
        "n_train": int(len(split.a_train)), "n_validation": int(len(split.a_val)),
        "fit_seconds": round(time.perf_counter() - t0, 2)}
    return policy, policy.metrics


def fit_policy(cfg: DistillConfig, data: Dataset | DatasetArrays
               ) -> tuple[SymbolicPolicy, dict[str, Any]]:
    """The policy of ``cfg``'s learner for ``data``, and its metrics."""
    return fit_tree(cfg, data) if cfg.learner == "tree" else distil(cfg, data)


def _agreement(policy: SymbolicPolicy, X: np.ndarray, actions: np.ndarray) -> float:
    return float((policy.act(X) == actions).mean())


def tree_forest(model: Any, n_actions: int) -> list[list[dict]]:
    """A fitted sklearn decision tree as one symbolic tree per action (nested ``ite`` on
    ``x - threshold``, leaves the log of the leaf's class share), so it plays and is sized
    like a distilled forest."""
    t = model.tree_
    classes = list(model.classes_)

    def build(node: int, a: int) -> list[dict]:
        if t.children_left[node] < 0:
            share = t.value[node][0] / t.value[node][0].sum()
            p = share[classes.index(a)] if a in classes else 0.0
            return [{"c": float(np.log(max(p, 1e-6)))}]
        return [{"f": "ite"}, {"f": "sub"}, {"x": int(t.feature[node])},
                {"c": float(t.threshold[node])}, *build(t.children_right[node], a),
                *build(t.children_left[node], a)]
    return [build(0, a) for a in range(n_actions)]


def decision_tree_policy(policy: SymbolicPolicy, split: Split, seed: int,
                         leaves: int | None = None) -> tuple[SymbolicPolicy, int]:
    """The VIPER-style baseline: a decision tree with ``leaves`` leaves (default: about as many
    nodes as ``policy``'s forest), fitted on the split's training records (with their
    weights); returns it as a policy of ``policy``'s layout and its node count."""
    from sklearn.tree import DecisionTreeClassifier
    leaves = leaves or tree_leaves(policy)
    model = DecisionTreeClassifier(max_leaf_nodes=leaves, random_state=seed).fit(
        split.X_train, split.a_train, sample_weight=split.w_train)
    tree = policy.with_trees(tree_forest(model, policy.n_actions))
    tree.metrics = {"rules": tree_rules(model, policy.layout.names, policy.action_meanings)}
    return tree, int(model.tree_.node_count)


def factored_tree(policy: SymbolicPolicy, split: Split,
                  factors: tuple[list[str], np.ndarray, np.ndarray], seed: int, leaves: int,
                  fire_leaves: int) -> tuple[SymbolicPolicy, int]:
    """A move tree and a FIRE tree with ``leaves`` leaves between them, fitted on the split's
    training records (with their weights) read as moves and as firing. The FIRE tree is the
    smallest of 1, 2, 4, ... leaves (at most ``fire_leaves``, and half of ``leaves``) within
    0.01 of the best held-out firing agreement; the move tree gets the rest. An action's formula is its move's
    score plus its firing's; returns the policy of ``policy``'s layout and the nodes of both."""
    from sklearn.tree import DecisionTreeClassifier
    moves, move_of, fires = factors
    fire_train, fire_val = fires[split.a_train], fires[split.a_val]
    w = np.ones(len(fire_train)) if split.w_train is None else split.w_train
    p = float(np.clip((w * fire_train).sum() / w.sum(), 1e-6, 1 - 1e-6))
    fitted: list[tuple[float, Any]] = [(float((fire_val == (p > 0.5)).mean()), None)]
    for k in (2 ** i for i in range(1, 32) if 2 ** i <= min(fire_leaves, leaves // 2)):
        model = DecisionTreeClassifier(max_leaf_nodes=k, random_state=seed).fit(
            split.X_train, fire_train, sample_weight=split.w_train)
        fitted.append((float((model.predict(split.X_val) == fire_val).mean()), model))
    best = max(agree for agree, _ in fitted)
    fire_model = next(model for agree, model in fitted if agree >= best - 0.01)
    fire_leaves = 1 if fire_model is None else fire_model.get_n_leaves()
    move_model = DecisionTreeClassifier(max_leaf_nodes=max(2, leaves - fire_leaves),
                                        random_state=seed).fit(
        split.X_train, move_of[split.a_train], sample_weight=split.w_train)
    move_trees = tree_forest(move_model, len(moves))
    if fire_model is None:
        fire_trees = [[{"c": float(np.log(1 - p))}], [{"c": float(np.log(p))}]]
        fire_rules = [f"  {'FIRE' if p > 0.5 else 'no FIRE'}"]
    else:
        fire_trees = tree_forest(fire_model, 2)
        fire_rules = ["  " + r for r in tree_rules(fire_model, policy.layout.names,
                                                    ["no FIRE", "FIRE"])]
    tree = policy.with_trees([[{"f": "add"}, *move_trees[m], *fire_trees[int(f)]]
                              for m, f in zip(move_of, fires)])
    names = policy.layout.names
    tree.metrics = {"rules": ["move:", *["  " + r for r in tree_rules(move_model, names, moves)],
                              "fire:", *fire_rules]}
    fire_nodes = 1 if fire_model is None else int(fire_model.tree_.node_count)
    return tree, int(move_model.tree_.node_count) + fire_nodes


def tree_rules(model: Any, names: list[str], meanings: list[str]) -> list[str]:
    """A fitted decision tree as indented if/else lines, each leaf its action's meaning."""
    t = model.tree_

    def lines(node: int, depth: int) -> list[str]:
        pad = "  " * depth
        if t.children_left[node] < 0:
            return [f"{pad}{meanings[int(model.classes_[np.argmax(t.value[node][0])])]}"]
        return [f"{pad}if {names[t.feature[node]]} > {t.threshold[node]:.4g}:",
                *lines(t.children_right[node], depth + 1), f"{pad}else:",
                *lines(t.children_left[node], depth + 1)]
    return lines(0, 0)


def tree_leaves(policy: SymbolicPolicy) -> int:
    """Leaves of a decision tree with about as many nodes as ``policy``'s forest."""
    return max(2, (sum(len(t) for t in policy.trees) + 1) // 2)


def tree_fit(policy: SymbolicPolicy, fraction: float, seed: int
             ) -> Callable[[DatasetArrays], tuple[SymbolicPolicy, dict[str, Any]]]:
    """A :func:`dagger` ``fit`` for the decision-tree baseline of ``policy``'s size and layout:
    the tree and its metrics on the dataset's own split."""
    leaves = tree_leaves(policy)

    def fit(data: DatasetArrays) -> tuple[SymbolicPolicy, dict[str, Any]]:
        split = split_episodes(data, policy.layout, fraction, seed)
        tree, nodes = decision_tree_policy(policy, split, seed, leaves)
        tree.metrics = {"validation_agreement": _agreement(tree, split.X_val, split.a_val),
                        "tree_sizes": [len(t) for t in tree.trees], "nodes": nodes,
                        "nodes_kind": "decision-tree nodes (splits and leaves)"}
        return tree, tree.metrics
    return fit


def resolve_dataset(ref: str, runs_dir: str, max_slots: int | None = None
                    ) -> tuple[DatasetArrays, Run | None]:
    """A dataset run folder or ``latest`` (with its run), or a dataset file, streamed into
    arrays (with the features of the layout for ``max_slots``)."""
    path = Path(ref)
    if ref == "latest" or (path.is_dir() and (path / "manifest.json").is_file()):
        run_ = resolve_run(ref, "dataset", runs_dir)
        return DatasetArrays.open(run_.path, max_slots), run_
    if not path.exists():
        raise UserError(f"dataset {ref} does not exist (a dataset run folder, 'latest', or a "
                        f"dataset file)")
    return DatasetArrays.open(path, max_slots), None


def play_metrics(cfg: DistillConfig, policy: SymbolicPolicy, data: Dataset | DatasetArrays,
                 players: tuple[Run, str] | None = None) -> dict[str, Any]:
    """Returns of the policy and the teacher on the same seeded games (``players``: the
    teacher run and detector, default :func:`players_of`)."""
    from diffses.detection import load_detector
    from diffses.perception import Perception
    from diffses.play import evaluate_side_by_side
    teacher_run, detector_ref = players or players_of(cfg, data)
    detector = load_detector(detector_ref, env_id=teacher_run.env_id, runs_dir=cfg.runs_dir,
                             device=cfg.device)
    return evaluate_side_by_side(policy, Perception(detector), teacher_run, cfg.eval_episodes,
                                 cfg.seed, cfg.eval_max_steps, cfg.device)


def players_of(cfg: DistillConfig, data: Dataset | DatasetArrays) -> tuple[Run, str]:
    """The teacher run and detector that play with the policy: the options, else the
    dataset's; a teacher of another game than the dataset's is refused."""
    meta = data.meta or {}
    teacher, detector = cfg.teacher or meta.get("teacher_run"), cfg.detector or meta.get("detector")
    if not teacher or not detector:
        raise UserError("--eval-episodes and --dagger need --teacher and --detector (the "
                        "dataset's meta does not name them)")
    teacher_run = resolve_run(teacher, "teacher", cfg.runs_dir)
    if "env_id" in meta:
        require_same_game(f"teacher {teacher_run.path}", teacher_run.env_id,
                          f"dataset {data.path}", meta["env_id"])
    return teacher_run, detector


def dagger(cfg: DistillConfig, data: DatasetArrays, policy: SymbolicPolicy,
           metrics: dict[str, Any], folder: Path, players: tuple[Run, str],
           fit: Callable[[DatasetArrays], tuple[SymbolicPolicy, dict[str, Any]]] | None = None
           ) -> tuple[SymbolicPolicy, dict[str, Any], DatasetArrays]:
    """``cfg.dagger_restarts`` loops of :func:`dagger_loop` from the same start, each
    collecting other games into a folder of its own; returns the best round of all (or, with
    ``cfg.dagger_reselect``, the best of the best rounds on fresh selection games: see
    :func:`reselect`), its metrics with every loop's rounds, and that loop's aggregated
    dataset."""
    loops, kept, grown = [], [], []
    for r in range(cfg.dagger_restarts):
        sub = folder if cfg.dagger_restarts == 1 else folder / f"loop_{r}"
        best, key, rounds, data_r = dagger_loop(cfg, data, policy, metrics, sub, players, fit, r)
        loops.append(rounds)
        kept.append((key, best, sub))
        grown.append(data_r)
    r = max(range(len(kept)), key=lambda i: kept[i][0])
    (key, best, _), k = kept[r], kept[r][0][2]
    print(f"[distill] kept round {k}" + (f" of loop {r}" if len(loops) > 1 else "") +
          f": selection return {key[0]:+.2f}", flush=True)
    extra: dict[str, Any] = {}
    if cfg.dagger_reselect:
        r, k, best, extra["dagger_reselect"] = reselect(cfg, loops, [s for _, _, s in kept],
                                                        players)
    best.metrics = dict(best.metrics, dagger=loops[r], dagger_kept=k,
                        dagger_loops=loops if cfg.dagger_restarts > 1 else None,
                        dagger_loop_kept=r, **extra)
    return best, best.metrics, grown[r]


def reselect(cfg: DistillConfig, loops: list[list[dict[str, Any]]], folders: list[Path],
             players: tuple[Run, str]
             ) -> tuple[int, int, SymbolicPolicy, list[dict[str, Any]]]:
    """The ``cfg.dagger_reselect`` rounds of all ``loops`` with the best selection returns
    (ties: validation agreement, then the later round) play ``cfg.dagger_reselect_games``
    fresh selection games as they are and under sticky actions; returns the loop, round and
    policy (read from the round's folder) with the best mean there (ties: the first stage's
    order), and each candidate's record."""
    from diffses.perception import Perception
    from diffses.play import play_symbolic
    ranked = sorted(((e["select_return"], e["validation_agreement"], e["round"], r)
                     for r, rounds in enumerate(loops) for e in rounds), reverse=True)
    seeds = [RESELECT_SEED + i for i in range(cfg.dagger_reselect_games)]
    chosen = [(select, k, r, SymbolicPolicy.load(folders[r] / f"dagger_{k}" / POLICY))
              for select, _, k, r in ranked[:cfg.dagger_reselect]]
    detector = _loop_detector(cfg, players, chosen[0][3])
    records, best = [], None
    for select, k, r, policy in chosen:
        fresh = [x for sticky in dict.fromkeys([0.0, cfg.dagger_sticky])
                 for x in play_symbolic(policy, Perception(detector), players[0], seeds,
                                        cfg.dagger_max_steps, sticky, [])]
        records.append({"loop": r, "round": k, "select_return": select,
                        "fresh_returns": fresh, "fresh_return": float(np.mean(fresh))})
        print(f"[distill] reselect: round {k} of loop {r}, selection return {select:+.2f}, "
              f"fresh games {records[-1]['fresh_return']:+.2f}", flush=True)
        if best is None or records[-1]["fresh_return"] > best[0]:
            best = (records[-1]["fresh_return"], r, k, policy)
    _, r, k, policy = best
    print(f"[distill] kept round {k} of loop {r} on the fresh games: {best[0]:+.2f}",
          flush=True)
    return r, k, policy, records


def _loop_detector(cfg: DistillConfig, players: tuple[Run, str], policy: SymbolicPolicy
                   ) -> Any:
    """The detector the loop's policies play through, naming types as ``policy``'s layout
    reads them."""
    from diffses.detection import detector_for, load_detector
    teacher_run, detector_ref = players
    detector = load_detector(detector_ref, env_id=teacher_run.env_id, runs_dir=cfg.runs_dir,
                             device=cfg.device)
    return detector_for(policy.layout.type_names, detector, "the distilled policy", detector_ref)


def dagger_loop(cfg: DistillConfig, data: DatasetArrays, policy: SymbolicPolicy,
                metrics: dict[str, Any], folder: Path, players: tuple[Run, str],
                fit: Callable[[DatasetArrays], tuple[SymbolicPolicy, dict[str, Any]]] | None,
                restart: int = 0
                ) -> tuple[SymbolicPolicy, tuple[float, float, int], list[dict[str, Any]],
                           DatasetArrays]:
    """``cfg.dagger`` rounds: the policy plays ``dagger_episodes`` games, the teacher labels
    every state it visited, those records join the data and ``fit`` (default:
    :func:`fit_policy` with ``cfg``) refits. Every round's policy plays the same
    ``dagger_select`` selection games; returns the policy with the best selection return (ties:
    the better validation agreement, then the later round) with its key, the rounds and the
    aggregated dataset, written into ``folder``."""
    from diffses import dataset as ds
    from diffses.perception import Perception
    from diffses.play import play_symbolic
    fit = fit or (lambda d: fit_policy(cfg, d))
    teacher_run, detector_ref = players
    detector = _loop_detector(cfg, players, policy)
    select = [SELECT_SEED + i for i in range(cfg.dagger_select)]
    rounds: list[dict[str, Any]] = []
    best: tuple[tuple[float, float, int], SymbolicPolicy, dict[str, Any]] | None = None
    for k in range(cfg.dagger + 1):
        student = policy.save(folder / f"dagger_{k}" / POLICY)
        lengths: list[int] = []
        chosen = [r for sticky in dict.fromkeys([0.0, cfg.dagger_sticky])
                  for r in play_symbolic(policy, Perception(detector), teacher_run, select,
                                         cfg.dagger_max_steps, sticky, lengths)]
        entry = {"round": k, "records": data.n_records, "select_returns": chosen,
                 "select_return": float(np.mean(chosen)), "select_steps": int(sum(lengths)),
                 "validation_agreement": metrics["validation_agreement"],
                 "nodes": metrics.get("nodes"), "tree_sizes": metrics["tree_sizes"]}
        rounds.append(entry)
        key = (entry["select_return"], metrics["validation_agreement"], k)
        if best is None or key >= best[0]:
            best = (key, policy, metrics)
        print(f"[distill] DAgger round {k}: {data.n_records} records, validation agreement "
              f"{metrics['validation_agreement']:.3f}, selection return "
              f"{entry['select_return']:+.2f} over {len(chosen)} game(s)", flush=True)
        if k == cfg.dagger:
            break
        played = ds.run(ds.DatasetConfig(
            teacher=str(teacher_run.path), detector=detector_ref, student=str(student),
            episodes=cfg.dagger_episodes, sticky=cfg.dagger_collect_sticky,
            max_episode_steps=cfg.dagger_max_steps,
            seed=DAGGER_SEED_OFFSET + 1000 * cfg.seed + 100 * restart + k * cfg.dagger_episodes,
            device=cfg.device, runs_dir=cfg.runs_dir, name=f"{cfg.name}-dagger",
            progress=False))
        returns = played.manifest["summary"]["episode_returns"]
        entry.update(returns=returns, mean_return=float(np.mean(returns)),
                     game_records=int(played.manifest["summary"]["records"]),
                     games=str(played.path))
        data = merge_datasets(data, played.path / DATASET, folder / DATASET, cfg.max_slots)
        policy, metrics = fit(data)
    kept = best[1]
    kept.metrics = dict(best[2])
    return kept, best[0], rounds, data


def merge_datasets(data: DatasetArrays, more: Path, out: Path, max_slots: int | None
                   ) -> DatasetArrays:
    """Write ``data``'s records, then those of the dataset file ``more`` (its episodes numbered
    on after ``data``'s), to ``out`` with ``data``'s meta, one record at a time; returns the
    result, validated. The meta's ``teacher_episodes`` keeps ``data``'s own episodes (those of
    the dataset it grew from, after the first merge), the only ones validation holds out."""
    offset = int(data.episodes.max()) + 1
    with JsonListWriter(out) as writer:
        for rec in data.iter_records():
            writer.write(rec)
        for rec in iter_json_list(more, SchemaError, "record"):
            writer.write(dict(rec, episode=rec.get("episode", 0) + offset))
    if data.meta is not None:
        own = data.meta.get("teacher_episodes", np.unique(data.episodes).tolist())
        atomic_write_json(meta_path(out), dict(data.meta, teacher_episodes=own,
                                               records=writer.count))
    return DatasetArrays.open(out, max_slots)


def run(cfg: DistillConfig) -> Run:
    """Distil, write policy.json, print the formulas (and the played evaluation)."""
    data, data_run = resolve_dataset(cfg.dataset, cfg.runs_dir, cfg.max_slots)
    env_id = (data.meta or {}).get("env_id", "unknown")
    resolve_device(cfg.device)
    players = players_of(cfg, data) if cfg.eval_episodes > 0 or cfg.dagger else None
    run_ = Run.create(cfg.runs_dir, STAGE, env_id, cfg.name, cfg.seed, flat_values(cfg))
    with run_.failing():
        run_.add_input("dataset", data.path)
        if data_run is not None:
            run_.manifest["dataset_run"] = str(data_run.path)
        print(f"[distill] {data.n_records} records of {env_id}, " + (
            f"a decision tree of at most {cfg.leaves} leaves" if cfg.learner == "tree" else
            f"{cfg.restarts} restart(s) x {data.n_actions} trees, population "
            f"{cfg.gp.population_size} (forest budget {cfg.forest_budget:g} trees), "
            f"{cfg.gp.generations} generations"))
        policy, metrics = fit_policy(cfg, data)
        if cfg.dagger:
            policy, metrics, data = dagger(cfg, data, policy, metrics, run_.path, players)
            run_.add_output(data.path)
        policy.provenance = {"dataset": str(data.path), "run": str(run_.path),
                             "detector": (data.meta or {}).get("detector"),
                             "teacher_run": (data.meta or {}).get("teacher_run")}
        if cfg.eval_episodes > 0:
            metrics["play"] = play_metrics(cfg, policy, data, players)
        policy.save(run_.path / POLICY)
        atomic_write_text(run_.path / "policy.py", policy.to_python())
        run_.add_output(run_.path / POLICY)
        run_.add_output(run_.path / "policy.py")
        run_.finish({k: metrics[k] for k in ("mode", "validation_agreement",
                                             "train_agreement", "tree_sizes", "fit_seconds")}
                    | ({"play": {k: metrics["play"][k]["mean"] for k in ("symbolic", "teacher")}}
                       if "play" in metrics else {}))
    print(f"[distill] validation agreement {metrics['validation_agreement']:.3f} "
          f"(train {metrics['train_agreement']:.3f}), {metrics['fit_seconds']:.1f} s; "
          f"policy: {run_.path / POLICY}")
    print("\n".join(["  " + line for line in metrics["rules"]]) if "rules" in metrics
          else policy.describe())
    if "play" in metrics:
        play = metrics["play"]
        print(f"[distill] return over {cfg.eval_episodes} seeded games: symbolic "
              f"{play['symbolic']['mean']:.2f} +/- {play['symbolic']['std']:.2f}, teacher "
              f"{play['teacher']['mean']:.2f} +/- {play['teacher']['std']:.2f}")
    return run_
