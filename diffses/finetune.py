"""Stage III: fine-tune a distilled symbolic policy with reward and soft teacher guidance.

``--search evolve`` runs genetic programming over forests seeded from the policy, with reward
(or imitation, or mixed) fitness and the constants variation (``--p-gradient``: PPO on the
constants with the teacher term, or CMA-ES): the paper's neural-guided differentiable
search. ``--search gradient`` trains the constants of the fixed structure only, with PPO or
CMA-ES (``--optimizer``). The policy plays through the same detect -> track -> features path
it was distilled from; the result is evaluated beside the teacher before and after, on the
same seeded games, and written as policy.json in a ``finetune`` run folder. Torch runs on
one thread here: the work is batches of a few observations, where more threads only contend.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from diffses.arrays import DatasetArrays
from diffses.cli import arg, composed, flat_values, part
from diffses.detection import Detector, detector_for, load_detector, names_types_alike
from diffses.distill import move_tying, resolve_dataset
from diffses.envs import require_same_game
from diffses.errors import UserError
from diffses.io import atomic_save, atomic_write_json, atomic_write_text
from diffses.perception import Perception
from diffses.perception_env import Loaded, PerceptionEnvFactory
from diffses.play import (evaluate_side_by_side, load_policy, play_symbolic, returns_summary,
                          sticky_kwargs)
from diffses.policy import POLICY, SymbolicPolicy
from diffses.runs import Run, resolve_run, resume_config
from diffses.teacher import load_teacher
from diffses.utils import require_cluster, resolve_device, seed_everything
from gplearn_custom import forest as fo
from gplearn_custom.cmaes import CMAESConfig, ConstantCMAES
from gplearn_custom.fitness import KINDS, FitnessSpec
from gplearn_custom.genetic import GeneticForestSearch
from gplearn_custom.parallel import WorkerPool
from gplearn_custom.params import EvolutionParams, GPParams, at_least, n_jobs_ok, require
from gplearn_custom.ppo import ConstantPPO, PPOConfig, one_thread
from gplearn_custom.tuning import OPTIMIZERS, ConstantTuner
from see import operators as ops
from see.tree import Forest, logits, softmax

STAGE = "finetune"
SEARCHES = ("evolve", "gradient")
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_PT = "checkpoint.pt"
#: Seed distance between the searches of ``--search-restarts``.
RESTART_SEED_STEP = 1000
#: Fitness games are seeded from ``seed + FITNESS_SEED_OFFSET``, apart from evaluation games.
FITNESS_SEED_OFFSET = 1000
#: Selection games (the returned policy is chosen on them) from ``seed + SELECT_SEED_OFFSET``.
SELECT_SEED_OFFSET = 2000
#: Manifest key of the inputs a run resolved (policy file, teacher run, detector, dataset
#: file), which ``--resume`` reads back.
RESOLVED_INPUTS = "resolved_inputs"
INPUT_ROLES = ("policy", "teacher", "detector", "dataset")


@composed
@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tune a distilled symbolic policy (policy.json) in its game: genetic search with
    reward fitness and PPO on the constants guided by the teacher (--search evolve), or the
    constants alone (--search gradient, --optimizer ppo|cmaes). Evaluates the policy beside
    the teacher before and after on the same seeded games and writes policy.json, TensorBoard
    logs (tb/) and checkpoints into a run folder under <runs-dir>/finetune/.
    """

    policy: str = arg("latest", "a distill or finetune run folder, 'latest' (the newest distill "
                                "run) or a policy.json file")
    teacher: str | None = arg(None, "teacher run folder or 'latest' (default: the policy's)")
    detector: str | None = arg(None, "'ocatari' or a SPACE run folder (default: the policy's)")
    dataset: str | None = arg(None, "dataset (run folder, 'latest' or file) for imitation "
                                    "fitness and teacher agreement (default: the policy's, if "
                                    "it exists)")
    config: str | None = arg(None, "yaml file of these options (flags on the command line win)")
    search: str = arg("evolve", "evolve: GP with the constants variation; gradient: constants "
                                "of the fixed structure only", choices=SEARCHES)
    optimizer: str = arg("ppo", "how constants are tuned: ppo (differentiable) or cmaes "
                                "(derivative-free baseline)", choices=OPTIMIZERS)
    fitness: str = arg("reward", "GP fitness: reward (mean return), imitation (minus the "
                                 "cross-entropy to the teacher on the dataset) or mixed",
                       choices=KINDS)
    imitation_weight: float = arg(1.0, "mixed fitness: return - this x cross-entropy")
    gp: GPParams = part(GPParams(population_size=16, generations=5, tournament_size=4,
                                 init_depth=(2, 4), function_set=(), p_crossover=0.5,
                                 p_subtree_mutation=0.05, p_hoist_mutation=0.05,
                                 p_point_mutation=0.1),
                        help={"function_set": "operators for new nodes (default: the policy's)"})
    evolution: EvolutionParams = part(EvolutionParams())
    terminals: int = arg(0, "evolve: new terminals draw from this many features, those the "
                            "teacher's actions depend on most (permutation importance of a "
                            "random forest fitted on the dataset; 0: every feature)")
    terminal_correlation: float = arg(1.0, "evolve with --terminals: features whose rank "
                                           "correlation reaches this count as one, ranked "
                                           "together, each group offering its most important "
                                           "(1: every feature on its own)")
    tie_moves: bool = arg(False, "evolve: opposite moves share one expression, negated for "
                                 "one of them (RIGHT and LEFT, UP and DOWN, read from the "
                                 "action meanings), FIRE adds one of its own "
                                 "(diffses.distill.move_tying)")
    search_restarts: int = arg(1, "evolve: searches one after another, each seeded apart "
                                  "(its engine and its terminals), every one's candidates "
                                  "chosen among on the selection games")
    n_jobs: int = arg(1, "worker processes for fitness and tuning (-1: every CPU)")
    cluster: str | None = arg(None, "address of a Dask scheduler (tcp://HOST:8786) whose workers "
                                    "run the fitness and tuning tasks instead of --n-jobs "
                                    "(docs/cluster.md)")
    episodes: int = arg(2, "games per reward fitness evaluation")
    fitness_sticky: float = arg(0.0, "reward fitness games (evolve, CMA-ES) under sticky "
                                     "actions with this repeat probability (Atari; a policy "
                                     "cannot win by replaying one sequence of moves)")
    max_steps: int | None = arg(2000, "cap on agent steps per game in fitness and training")
    length_bonus: float = arg(0.0, "evolve, reward fitness: add this x the share of "
                                   "--max-steps the fitness games lasted (below the smallest "
                                   "step of the mean return, it breaks ties: of forests that "
                                   "lose alike, the one keeping the ball in play longest wins)")
    n_timesteps: int = arg(5000, "env steps per constants tuning: the whole --search gradient "
                                 "run, or each p_gradient variation", aliases=("-n",))
    ppo: PPOConfig = part(PPOConfig(n_envs=2, expert_coef=1.0))
    cmaes: CMAESConfig = part(CMAESConfig(), rename={"popsize": "cmaes_popsize",
                                                     "episodes": "cmaes_episodes"})
    select_episodes: int = arg(3, "games, seeded apart from the fitness and evaluation games, "
                                  "on which the returned policy is chosen: the starting "
                                  "policy unless a candidate of the search beats it (0: return "
                                  "the search's result unchecked)")
    select_sticky: float = arg(0.0, "the selection games are played again under sticky "
                                    "actions with this repeat probability (Atari) and a "
                                    "candidate's selection return is the mean of both (0: "
                                    "as they are only)")
    select_every: int = arg(10, "--search gradient: the constants every this many updates "
                                "are a candidate (the last ones always are)")
    eval_episodes: int = arg(3, "games of the before/after evaluation (0: none)")
    eval_max_steps: int | None = arg(None, "cap on agent steps per evaluation game")
    eval_seed: int | None = arg(None, "first seed of the evaluation games (default: --seed)")
    seed: int = arg(0, "seed for python, numpy, torch, the search and the games")
    device: str = arg("auto", "torch device: auto, cpu, cuda or cuda:N")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("ft", "run name, part of the run folder's name")
    resume: str | None = arg(None, "continue a killed run (its folder) from its checkpoint")
    checkpoint_freq: int = arg(1, "generations (evolve) or updates (gradient) between "
                                  "checkpoints")
    progress: bool = arg(True, "show a progress bar", negative="--no-progress")

    def __post_init__(self) -> None:
        require([
            (self.episodes >= 1, "episodes must be at least 1"),
            (self.eval_episodes >= 0, "eval_episodes must be >= 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be positive"),
            (self.checkpoint_freq >= 1, "checkpoint_freq must be at least 1"),
            (self.select_episodes >= 0, "select_episodes must be >= 0"),
            (self.select_every >= 1, "select_every must be at least 1"),
            (self.terminals >= 0, "terminals must be >= 0"),
            (self.search_restarts >= 1, "search_restarts must be at least 1"),
            (not self.evolution.fresh_games or self.gp.generations * self.episodes
             <= SELECT_SEED_OFFSET - FITNESS_SEED_OFFSET,
             "fresh_games: generations x episodes must leave the selection games apart "
             f"(at most {SELECT_SEED_OFFSET - FITNESS_SEED_OFFSET})"),
            (0 < self.terminal_correlation <= 1, "terminal_correlation must be in (0, 1]"),
            (self.length_bonus >= 0 and (not self.length_bonus or self.max_steps),
             "--length-bonus is >= 0 and needs --max-steps"),
            (not self.tie_moves or self.evolution.p_gradient == 0,
             "--tie-moves evolves genes shared by actions; the constants variation tunes "
             "whole forests (set --p-gradient 0)"),
            (0 <= self.fitness_sticky < 1, "fitness_sticky must be in [0, 1)"),
            (0 <= self.select_sticky < 1, "select_sticky must be in [0, 1)"),
            n_jobs_ok(self.n_jobs),
            at_least(self.eval_max_steps, 1, "--eval-max-steps"),
        ], UserError)
        try:
            self.ppo_config()
            self.cmaes_config()
        except ValueError as err:
            raise UserError(str(err)) from None

    @property
    def guided(self) -> bool:
        """Whether PPO on the constants has a teacher term (else no teacher runs in training)."""
        return self.optimizer == "ppo" and max(self.ppo.expert_coef,
                                               self.ppo.expert_coef_final) > 0

    def ppo_config(self) -> PPOConfig:
        """The PPO part with this run's env-step budget (the env caps the games' steps)."""
        return dataclasses.replace(self.ppo, n_timesteps=self.n_timesteps)

    def cmaes_config(self) -> CMAESConfig:
        """The CMA-ES part with this run's env-step budget."""
        return dataclasses.replace(self.cmaes, n_timesteps=self.n_timesteps)

    def search_engine(self, function_set: tuple[str, ...], seed: int) -> GeneticForestSearch:
        """The GP engine over ``function_set`` (the policy's, unless --function-set)."""
        try:
            return GeneticForestSearch(
                dataclasses.replace(self.gp, function_set=function_set), self.evolution,
                checkpoint_every=self.checkpoint_freq, random_state=seed,
                n_jobs=self.n_jobs, cluster=self.cluster)
        except ValueError as err:
            raise UserError(str(err)) from None


@dataclass
class Inputs:
    """Everything a fine-tuning run reads, resolved, loaded and checked once."""

    policy: SymbolicPolicy
    policy_path: Path
    teacher_run: Run
    teacher: Any                 # the teacher's PPO model, on ``device``
    detector: Detector
    detector_ref: str            # picklable reference to ``detector``, for worker processes
    dataset: DatasetArrays | None
    device: str

    def references(self) -> dict[str, str | None]:
        """The resolved references by role, as the manifest keeps them for ``--resume``."""
        return {"policy": str(self.policy_path), "teacher": str(self.teacher_run.path),
                "detector": self.detector_ref,
                "dataset": None if self.dataset is None else str(self.dataset.path)}

    def env_factory(self, policy: SymbolicPolicy, runs_dir: str, max_steps: int | None,
                    with_teacher: bool = False, sticky: float = 0.0) -> PerceptionEnvFactory:
        """Feature envs over these inputs, capped at ``max_steps`` agent steps per game (under
        sticky actions with ``sticky``)."""
        return PerceptionEnvFactory(
            str(self.teacher_run.path), self.detector_ref, runs_dir, policy, with_teacher,
            max_steps, self.device, sticky, Loaded(self.teacher_run, self.detector, self.teacher))


def resolve_inputs(cfg: FinetuneConfig, refs: dict[str, str | None], pinned: bool = False
                   ) -> Inputs:
    """Load and cross-check the policy, teacher, detector and dataset named by ``refs`` (by
    role; None: the policy's). ``pinned`` refs are a resumed run's: no dataset means none."""
    device = resolve_device(cfg.device)
    policy, path = load_policy(refs["policy"], cfg.runs_dir)
    prov = policy.provenance
    teacher_ref = refs["teacher"] or prov.get("teacher_run")
    if not teacher_ref:
        raise UserError(f"policy {path} does not name its teacher run; pass --teacher")
    if refs["teacher"] is None and not Path(teacher_ref).exists():
        raise UserError(f"the policy's teacher run {teacher_ref} does not exist; pass --teacher")
    teacher_run = resolve_run(teacher_ref, "teacher", cfg.runs_dir)
    require_same_game(f"teacher {teacher_run.path}", teacher_run.env_id, f"policy {path}",
                      policy.env_id)
    detector_ref = refs["detector"] or prov.get("detector")
    if not detector_ref:
        raise UserError(f"policy {path} does not name its detector; pass --detector")
    detector = detector_for(policy.layout.type_names, load_detector(
        detector_ref, env_id=policy.env_id, runs_dir=cfg.runs_dir, device=device), str(path),
        detector_ref)
    dataset = resolve_dataset_input(refs["dataset"], None if pinned else prov.get("dataset"),
                                    cfg.runs_dir)
    data_env = (dataset.meta or {}).get("env_id") if dataset is not None else None
    if data_env not in (None, policy.env_id) or (
            dataset is not None and dataset.n_actions > policy.n_actions):
        raise UserError(f"dataset {dataset.path} is of {data_env} with {dataset.n_actions} "
                        f"actions, not of the policy's {policy.env_id} with "
                        f"{policy.n_actions}; pass the policy's dataset")
    if dataset is not None and not reads_types_of(policy, dataset):
        raise UserError(f"dataset {dataset.path} names its object types "
                        f"{dataset.meta['type_names']}, but policy {path} reads "
                        f"{policy.layout.type_names}; pass a dataset of the policy's detector")
    if cfg.fitness != "reward" and dataset is None:
        raise UserError(f"--fitness {cfg.fitness} needs a dataset of teacher actions; "
                        f"pass --dataset")
    if cfg.terminals and dataset is None:
        raise UserError("--terminals needs a dataset of teacher actions; pass --dataset")
    return Inputs(policy, path, teacher_run, load_teacher(teacher_run, device), detector,
                  str(detector.name), dataset, device)


def reads_types_of(policy: SymbolicPolicy, dataset: DatasetArrays) -> bool:
    """Whether ``policy`` reads ``dataset``'s objects as the dataset names them (a dataset
    whose meta names no types is taken as it is)."""
    names = (dataset.meta or {}).get("type_names")
    return not names or names_types_alike(policy.layout.type_names,
                                          {int(t): n for t, n in names.items()})


def resolve_dataset_input(ref: str | None, fallback: str | None, runs_dir: str
                          ) -> DatasetArrays | None:
    """``ref`` (``--dataset``), else the ``fallback`` file (the policy's dataset) when it still
    exists, else None."""
    if ref is not None:
        return resolve_dataset(ref, runs_dir)[0]
    return DatasetArrays.open(fallback) if fallback and Path(fallback).is_file() else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def resolve_config(cfg: FinetuneConfig
                   ) -> tuple[FinetuneConfig, Run | None, dict[str, str | None]]:
    """The config, the resumed run (or None) and the input references to resolve: for
    ``--resume``, that run's stored config (with this call's device, progress and cluster)
    and the inputs it resolved; else ``cfg`` and its own references."""
    if cfg.resume is None:
        return cfg, None, {role: getattr(cfg, role) for role in INPUT_ROLES}
    stored, run_ = resume_config(FinetuneConfig, cfg.resume, STAGE, cfg.runs_dir, False,
                                 device=cfg.device, progress=cfg.progress, cluster=cfg.cluster)
    refs = run_.manifest.get(RESOLVED_INPUTS) or {role: getattr(stored, role)
                                                  for role in INPUT_ROLES}
    return stored, run_, refs


class Logger:
    """TensorBoard scalars and histograms, plus the progress bar."""

    def __init__(self, folder: Path, total: int, initial: int, unit: str, enabled: bool):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(folder))
        self.bar = tqdm(total=total, initial=initial, unit=unit, disable=not enabled,
                        dynamic_ncols=True)

    def log(self, step: int, scalars: dict[str, float | None],
            constants: list[float] | None = None) -> None:
        for tag, value in scalars.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        if constants:
            values = np.asarray(constants, dtype=np.float64)
            shown = values[np.abs(values) < 1e5]  # leave out "never" trees' -1e6
            if shown.size:
                self.writer.add_histogram("constants/all", shown, step)
            for i, c in enumerate(values[:16]):
                self.writer.add_scalar(f"constants/c{i}", float(c), step)
        self.writer.flush()
        self.bar.update(1)
        ret = scalars.get("return/best", scalars.get("return/train"))
        if ret is not None:
            self.bar.set_postfix(ret=f"{ret:.2f}")

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def policy_entropy(policy: SymbolicPolicy, trees: Forest, X: np.ndarray | None
                   ) -> float | None:
    """Mean entropy (nats) of the forest's softmax over the dataset's states."""
    if X is None or not len(X):
        return None
    p = softmax(logits(trees, X))
    return float(-(p * np.log(np.clip(p, 1e-300, 1.0))).sum(axis=1).mean())


def _save_torch(path: Path, state: dict[str, Any]) -> None:
    atomic_save(path, lambda buf: torch.save(state, buf))


def teacher_features(X: np.ndarray, actions: np.ndarray, k: int, seed: int,
                     correlation: float = 1.0, most: int = 20000) -> list[int]:
    """The ``k`` features the teacher's actions depend on most: permutation importance of a
    random forest fitted on (at most ``most`` of) the records, measured on a quarter held out
    (ties: the lower index). With ``correlation`` below 1, features whose rank correlation
    reaches it (average linkage) form a group that is permuted at once (copies of one
    quantity otherwise share, and hide, its importance); the groups are ranked and each
    offers its own most important feature."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(X))[:most]
    cut = len(rows) * 3 // 4
    fit, held = rows[:cut], rows[cut:]
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=seed,
                                    n_jobs=1).fit(X[fit], actions[fit])
    scores = permutation_importance(forest, X[held], actions[held], n_repeats=3,
                                    random_state=seed, n_jobs=1).importances_mean
    ranked = sorted(range(X.shape[1]), key=lambda i: (-scores[i], i))
    if correlation < 1:
        groups = feature_groups(X[rows], correlation)
        base = forest.score(X[held], actions[held])

        def drop(cols: list[int]) -> float:
            losses = []
            for _ in range(3):
                shuffled = X[held].copy()
                shuffled[:, cols] = shuffled[rng.permutation(len(held))][:, cols]
                losses.append(base - forest.score(shuffled, actions[held]))
            return float(np.mean(losses))

        order = sorted(groups, key=lambda g: (-drop(g), min(g)))
        leaders = [min(g, key=lambda i: (-scores[i], i)) for g in order]
        ranked = leaders + [i for i in ranked if i not in leaders]
    return sorted(ranked[:k])


def feature_groups(X: np.ndarray, correlation: float) -> list[list[int]]:
    """The columns of ``X`` grouped where their absolute rank correlation reaches
    ``correlation`` (average linkage); a constant column is a group of its own."""
    from scipy.cluster.hierarchy import average, fcluster
    from scipy.spatial.distance import squareform
    from scipy.stats import rankdata
    varying = [i for i in range(X.shape[1]) if np.ptp(X[:, i]) > 0]
    groups = [[i] for i in range(X.shape[1]) if i not in varying]
    if len(varying) < 2:
        return groups + [[i] for i in varying]
    corr = np.abs(np.corrcoef(rankdata(X[:, varying], axis=0), rowvar=False))
    distance = np.clip(1 - (corr + corr.T) / 2, 0, None)
    np.fill_diagonal(distance, 0)
    labels = fcluster(average(squareform(distance, checks=False)), 1 - correlation,
                      criterion="distance")
    for label in np.unique(labels):
        groups.append([varying[j] for j in np.flatnonzero(labels == label)])
    return groups


def evolve(cfg: FinetuneConfig, inputs: Inputs, run_: Run, fitness: FitnessSpec,
           tuner: ConstantTuner, X: np.ndarray | None
           ) -> tuple[list[tuple[str, Forest]], dict[str, Any]]:
    """GP from the policy, ``--search-restarts`` searches one after another; the candidates
    of every search (each one's best forest, or with fresh games each generation's best) and a
    summary (that of the search of the best fitness, with every search's env steps)."""
    policy = inputs.policy
    tying = move_tying(policy.action_meanings) if cfg.tie_moves else None
    if cfg.tie_moves and tying is None:
        raise UserError(f"--tie-moves: no two of the actions {policy.action_meanings} are "
                        f"opposite moves")
    searches = [one_search(cfg, inputs, run_, fitness, tuner, X, tying, r)
                for r in range(cfg.search_restarts)]
    if len(searches) == 1:
        return searches[0]
    candidates = [(f"search {r}: {label}", trees) for r, (found, _) in enumerate(searches)
                  for label, trees in found]
    summaries = [summary for _, summary in searches]
    best = max(range(len(summaries)), key=lambda r: (summaries[r]["best_fitness"], -r))
    return candidates, {
        **summaries[best], "best_search": best,
        "env_steps": sum(summary["env_steps"] for summary in summaries),
        "searches": [{k: v for k, v in summary.items() if k != "history"}
                     for summary in summaries],
        "history": [dict(h, search=r) for r, summary in enumerate(summaries)
                    for h in summary["history"]]}


def one_search(cfg: FinetuneConfig, inputs: Inputs, run_: Run, fitness: FitnessSpec,
               tuner: ConstantTuner, X: np.ndarray | None,
               tying: list[list[tuple[int, int]]] | None, restart: int
               ) -> tuple[list[tuple[str, Forest]], dict[str, Any]]:
    """Search number ``restart`` (0: seeded by ``--seed``, later ones by ``--seed`` +
    ``RESTART_SEED_STEP`` x ``restart``: the engine and the random forest that picks the
    terminals), with its own checkpoint and TensorBoard folder; its candidates and summary."""
    policy = inputs.policy
    seed = cfg.seed + RESTART_SEED_STEP * restart
    terminals = (teacher_features(X, inputs.dataset.actions, cfg.terminals, seed,
                                  cfg.terminal_correlation)
                 if cfg.terminals and X is not None else None)
    if terminals is not None:
        print(f"[finetune] search {restart}: new terminals draw from " +
              ", ".join(policy.layout.names[i] for i in terminals), flush=True)
    function_set = tuple(cfg.gp.function_set or policy.function_set or ops.DEFAULT_FUNCTION_SET)
    engine = cfg.search_engine(function_set, seed)
    ckpt = run_.path / (CHECKPOINT_JSON if restart == 0 else f"checkpoint_{restart}.json")
    done = len(json.loads(ckpt.read_text())["history"]) if cfg.resume and ckpt.is_file() else 0
    logger = Logger(run_.path / "tb" / (f"search_{restart}" if restart else ""),
                    cfg.gp.generations, done, "gen", cfg.progress)

    def on_generation(record: dict[str, Any], search: GeneticForestSearch) -> None:
        best = max(search.population_, key=lambda ind: ind.score.fitness)
        logger.log(record["generation"], {
            "fitness/best": record["best_fitness"], "fitness/mean": record["mean_fitness"],
            "return/best": record["best_return"], "return/mean": record["mean_return"],
            "agreement/best": record["best_agreement"],
            "agreement/best_online": record["best_online_agreement"],
            "entropy/best": policy_entropy(policy, search.forest(best.trees), X),
            "size/best": record["best_size"], "size/mean": record["mean_size"],
            "tuned": record["tuned"], "return/tuning": record["tuned_return"],
            "agreement/tuning_online": record["tuned_agreement"],
            "env_steps": record["env_steps"],
            "seconds": record["seconds"]}, record["best_constants"])

    try:
        engine.fit(fitness, policy.layout.size, policy.n_actions, seed_forest=policy.trees,
                   tuner=tuner if cfg.evolution.p_gradient > 0 else None, terminals=terminals,
                   callback=on_generation,
                   checkpoint=ckpt, resume=cfg.resume is not None,
                   write=atomic_write_json, tying=tying)
    finally:
        logger.close()
    history = engine.history_
    seconds = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
    if cfg.evolution.fresh_games:   # scored on other games, the generations' bests compete
        latest = {fo.key(h["best_trees"]): h for h in history}   # a repeated forest: its last
        candidates = [(f"best of generation {h['generation']}", h["best_trees"])
                      for h in sorted(latest.values(), key=lambda h: h["generation"])]
    else:
        candidates = [("best of the search", engine.forest(engine.best_.trees))]
    return candidates, {
        "generations": len(history), "best_fitness": engine.best_.score.fitness,
        "best_return": engine.best_.score.mean_return,
        "best_agreement": engine.best_.score.agreement,
        "env_steps": history[-1]["env_steps"],
        "seconds_per_generation": float(np.mean(seconds)),
        "terminals": None if terminals is None else [policy.layout.names[i] for i in terminals],
        "tying": tying,
        "history": history}


def gradient(cfg: FinetuneConfig, inputs: Inputs, run_: Run, pool: WorkerPool,
             tune_env: Callable[[int], Any], X: np.ndarray | None
             ) -> tuple[list[tuple[str, Forest]], dict[str, Any]]:
    """PPO or CMA-ES on the constants of the policy's fixed structure; the candidates (every
    ``select_every`` updates and the last) and a summary."""
    policy = inputs.policy
    if not fo.constants(policy.trees):
        raise UserError("the policy has no constants to tune; use --search evolve")
    ckpt = run_.path / CHECKPOINT_PT
    state = torch.load(ckpt, weights_only=False) if cfg.resume and ckpt.is_file() else None
    history: list[dict[str, Any]] = list(state["history"]) if state else []
    candidates: list[tuple[str, Forest]] = list(state.get("candidates", [])) if state else []
    if cfg.optimizer == "ppo":
        seed_everything(cfg.seed)
        tuner: Any = ConstantPPO(policy.trees, tune_env, cfg.ppo_config(), cfg.seed,
                                 inputs.device)
        total, unit = cfg.ppo_config().total_updates, "update"
    else:
        def score_many(forests: list[Forest], seeds: list[int]
                       ) -> list[tuple[list[float], int]]:
            return [(s.returns, s.env_steps) for s in pool.score(forests, seeds[0])]
        tuner = ConstantCMAES(policy.trees, score_many, cfg.cmaes_config(), cfg.seed)
        total, unit = None, "iter"
    if state is not None:
        tuner.load_state_dict(state["tuner"])
    step = tuner.update if cfg.optimizer == "ppo" else tuner.step
    logger = Logger(run_.path / "tb", total, len(history), unit, cfg.progress)
    try:
        while not tuner.done:
            stats = step()
            record = dataclasses.asdict(stats)
            history.append(record)
            trees = tuner.trees()
            if cfg.optimizer == "ppo":
                scalars = {"return/train": stats.mean_return, "agreement/online": stats.agreement,
                           "entropy/rollout": stats.entropy, "loss/pg": stats.pg_loss,
                           "loss/value": stats.value_loss, "loss/expert": stats.expert_loss,
                           "expert_coef": stats.expert_coef, "approx_kl": stats.approx_kl,
                           "clip_fraction": stats.clip_fraction, "seconds": stats.seconds}
            else:
                scalars = {"return/mean": stats.mean_return, "return/best": stats.best_return,
                           "sigma": stats.sigma, "seconds": stats.seconds}
            scalars["entropy/dataset"] = policy_entropy(policy, trees, X)
            logger.log(tuner.env_steps, scalars, stats.constants)
            if len(history) % cfg.select_every == 0 and not tuner.done:
                candidates.append((f"{unit} {len(history)}", trees))
            if len(history) % cfg.checkpoint_freq == 0 or tuner.done:
                _save_torch(ckpt, {"tuner": tuner.state_dict(), "history": history,
                                   "candidates": candidates})
    finally:
        logger.close()
        if cfg.optimizer == "ppo":
            tuner.close()
    seconds = [h["seconds"] for h in history]
    candidates.append((f"{unit} {len(history)} (last)", tuner.trees()))
    return candidates, {"optimizer": cfg.optimizer, "env_steps": tuner.env_steps,
                           "iterations": len(history),
                           f"seconds_per_{unit}": float(np.mean(seconds)) if seconds else None,
                           "episode_returns": [list(x) for x in tuner.episode_returns],
                           "history": history}


def evaluate(cfg: FinetuneConfig, inputs: Inputs, policy: SymbolicPolicy,
             with_teacher: bool) -> dict[str, Any]:
    """Returns on the evaluation games (and the teacher's, with ``with_teacher``)."""
    seed = cfg.seed if cfg.eval_seed is None else cfg.eval_seed
    perception = Perception(inputs.detector)
    if with_teacher:
        return evaluate_side_by_side(policy, perception, inputs.teacher_run, cfg.eval_episodes,
                                     seed, cfg.eval_max_steps, model=inputs.teacher)
    seeds = [seed + i for i in range(cfg.eval_episodes)]
    returns = play_symbolic(policy, perception, inputs.teacher_run, seeds, cfg.eval_max_steps)
    return {"seeds": seeds, "max_steps": cfg.eval_max_steps,
            "symbolic": returns_summary(returns)}


def search_seconds(folder: str | Path) -> float:
    """Seconds the search of a fine-tuning run has spent, by its checkpoints: every generation
    or update it recorded (the time a killed run spent before its last checkpoint)."""
    folder = Path(folder)
    histories = [json.loads(p.read_text())["history"] for p in folder.glob("checkpoint*.json")]
    if (folder / CHECKPOINT_PT).is_file():
        histories.append(torch.load(folder / CHECKPOINT_PT, weights_only=False)["history"])
    return float(sum(h.get("seconds") or 0.0 for history in histories for h in history))


def select(cfg: FinetuneConfig, inputs: Inputs, candidates: list[tuple[str, Forest]]
           ) -> tuple[Forest, dict[str, Any]]:
    """The starting policy or the candidate with the best mean return on the selection games,
    as they are and (with ``select_sticky``) under sticky actions (the start wins ties); with
    ``select_episodes`` 0, the last candidate unchecked."""
    if cfg.select_episodes == 0:
        return candidates[-1][1], {"chosen": candidates[-1][0], "checked": False}
    policy = inputs.policy
    perception = Perception(inputs.detector)
    seeds = [cfg.seed + SELECT_SEED_OFFSET + i for i in range(cfg.select_episodes)]
    table = []
    for label, trees in [("start", policy.trees), *candidates]:
        player = policy.with_trees(trees)
        returns = play_symbolic(player, perception, inputs.teacher_run, seeds, cfg.max_steps)
        if cfg.select_sticky:
            returns += play_symbolic(player, perception, inputs.teacher_run, seeds,
                                     cfg.max_steps, cfg.select_sticky)
        table.append({"candidate": label, **returns_summary(returns)})
    best = max(range(len(table)), key=lambda i: (table[i]["mean"], -i))
    chosen = policy.trees if best == 0 else candidates[best - 1][1]
    return chosen, {"chosen": table[best]["candidate"], "checked": True, "seeds": seeds,
                    "sticky": cfg.select_sticky, "max_steps": cfg.max_steps,
                    "candidates": table}


def run(cfg: FinetuneConfig) -> Run:
    """Fine-tune, evaluate before and after, write policy.json; returns the finished run."""
    cfg, resumed, refs = resolve_config(cfg)
    require_cluster(cfg.cluster)
    inputs = resolve_inputs(cfg, refs, pinned=resumed is not None)
    policy = inputs.policy
    sticky_kwargs(policy.env_id, cfg.select_sticky)   # refused here, not after the search
    seed_everything(cfg.seed)
    if resumed is None:
        run_ = Run.create(cfg.runs_dir, STAGE, policy.env_id, cfg.name, cfg.seed,
                          flat_values(cfg))
    else:
        run_ = resumed
        run_.manifest["status"] = "running"
    run_.manifest[RESOLVED_INPUTS] = inputs.references()
    run_.manifest["device"] = inputs.device
    run_.save()
    with run_.failing(), one_thread():
        run_.add_input("policy", inputs.policy_path)
        run_.add_input("teacher", inputs.teacher_run.path / "model.zip")
        if inputs.dataset is not None:
            run_.add_input("dataset", inputs.dataset.path)
        X = actions = None
        if inputs.dataset is not None:
            X = inputs.dataset.features(policy.layout)
            actions = inputs.dataset.actions
        print(f"[finetune] {policy.env_id}: --search {cfg.search} --optimizer {cfg.optimizer}, "
              f"fitness {cfg.fitness}, lambda {cfg.ppo.expert_coef} -> "
              f"{cfg.ppo.expert_coef_final}, on {inputs.device}; run folder {run_.path}")
        if cfg.eval_episodes > 0 and "before" not in run_.manifest:
            run_.manifest["before"] = _jsonable(evaluate(cfg, inputs, policy, True))
            run_.save()
        play_env = inputs.env_factory(policy, cfg.runs_dir, cfg.max_steps,
                                      sticky=cfg.fitness_sticky)
        tune_env = inputs.env_factory(policy, cfg.runs_dir, cfg.max_steps,
                                      with_teacher=cfg.guided)
        fitness = FitnessSpec(kind=cfg.fitness if cfg.search == "evolve" else "reward",
                              make_env=play_env, seed=cfg.seed + FITNESS_SEED_OFFSET,
                              episodes=cfg.episodes if cfg.search == "evolve" else
                              cfg.cmaes.episodes, X=X, actions=actions,
                              imitation_weight=cfg.imitation_weight,
                              length_bonus=cfg.length_bonus if cfg.search == "evolve" else 0.0,
                              max_steps=cfg.max_steps)
        tuner = ConstantTuner(tune_env, cfg.optimizer, cfg.ppo_config(), cfg.cmaes_config(),
                              inputs.device)
        if cfg.search == "evolve":
            candidates, summary = evolve(cfg, inputs, run_, fitness, tuner, X)
        else:
            with WorkerPool(fitness, None, cfg.n_jobs, cfg.cluster).running() as pool:
                candidates, summary = gradient(cfg, inputs, run_, pool, tune_env, X)
        trees, selection = select(cfg, inputs, candidates)
        summary["selection"] = selection
        if selection["chosen"] == "start":
            print(f"[finetune] nothing beat the starting policy on the {cfg.select_episodes} "
                  f"selection games (seeds {selection['seeds'][0]}..{selection['seeds'][-1]}): "
                  f"returning it unchanged")
        elif selection["checked"]:
            print(f"[finetune] chosen on the selection games: {selection['chosen']} "
                  f"({max(c['mean'] for c in selection['candidates']):.2f} against "
                  f"{selection['candidates'][0]['mean']:.2f} for the start)")
        tuned = policy.with_trees(trees)
        metrics: dict[str, Any] = {"search": cfg.search, "optimizer": cfg.optimizer,
                                   "fitness": cfg.fitness, "expert_coef": cfg.ppo.expert_coef,
                                   **{k: v for k, v in summary.items()
                                      if k not in ("history", "episode_returns")}}
        if X is not None:
            metrics["agreement_before"] = float((policy.act(X) == actions).mean())
            metrics["agreement_after"] = float((tuned.act(X) == actions).mean())
        if cfg.eval_episodes > 0:
            metrics["before"] = run_.manifest["before"]
            metrics["after"] = _jsonable(evaluate(cfg, inputs, tuned, False))
        tuned.metrics = metrics
        refs = inputs.references()
        tuned.provenance = {"policy": refs["policy"], "run": str(run_.path),
                            "teacher_run": refs["teacher"], "detector": refs["detector"],
                            "dataset": refs["dataset"]}
        tuned.save(run_.path / POLICY)
        atomic_write_text(run_.path / "policy.py", tuned.to_python())
        atomic_write_text(run_.path / "history.json", json.dumps(
            _jsonable({"history": summary["history"],
                       "episode_returns": summary.get("episode_returns")}), indent=1) + "\n")
        for name in (POLICY, "policy.py", "history.json"):
            run_.add_output(run_.path / name)
        short = {k: metrics[k] for k in ("search", "optimizer", "env_steps") if k in metrics}
        short["selected"] = selection["chosen"]
        if cfg.eval_episodes > 0:
            short["return_before"] = metrics["before"]["symbolic"]["mean"]
            short["return_after"] = metrics["after"]["symbolic"]["mean"]
            short["return_teacher"] = metrics["before"]["teacher"]["mean"]
        run_.finish(short)
    print(f"[finetune] policy: {run_.path / POLICY}  tensorboard: {run_.path / 'tb'}")
    print(tuned.describe())
    if cfg.eval_episodes > 0:
        b, a = metrics["before"], metrics["after"]
        print(f"[finetune] return over {cfg.eval_episodes} seeded games: before "
              f"{b['symbolic']['mean']:.2f} +/- {b['symbolic']['std']:.2f}, after "
              f"{a['symbolic']['mean']:.2f} +/- {a['symbolic']['std']:.2f}, teacher "
              f"{b['teacher']['mean']:.2f} +/- {b['teacher']['std']:.2f}")
    return run_
