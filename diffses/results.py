"""The paper's table for one game: teacher, distilled, baselines and fine-tuned policies, each
played on the same seeded games, for every perception.

For each perception (``ocatari`` and SPACE detectors) it builds a dataset of the teacher's
games, then for every seed distils a forest and fine-tunes it four ways (PPO on the
constants with the teacher term, the same without it, CMA-ES at the same env steps, the evolve
search with the constants variation), fits a decision tree of the forest's size on the same
split (played as a forest of the same kind), and once per perception searches distillation
options with Optuna for return. The imitation-loop routes (``routes``) distil by VIPER's loop:
a decision tree or a GP forest, margin-weighted records and object relations (or neither),
rounds of the policy's own games labelled by the teacher, the round kept by return on
selection games. With ``cluster`` (a Dask scheduler's address) every step (a dataset, a
distillation, a row) is a task on that cluster, the seeds and their rows at once; a worker that
dies costs only its task, which the scheduler reruns, and the finished steps are kept for
``--resume`` as they come in. Every policy plays the same evaluation games, as they are and under sticky
actions; rows give mean ± std over all of a row's games, the spread of the per-seed means,
agreement with the teacher on held-out episodes, nodes in all (a decision tree's splits and
leaves, or the tokens of all a forest's trees), env steps and wall-clock. Writes results.json
and results.md into a run folder under ``<runs-dir>/results/``.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
import yaml

from diffses import dataset, distill, finetune, tune
from diffses.arrays import DatasetArrays
from diffses.cli import arg, flat_values
from diffses.detection import Detector, detector_for, load_detector
from diffses.envs import require_same_game
from diffses.errors import UserError
from diffses.io import atomic_write_json, atomic_write_text
from diffses.perception import Perception
from diffses.play import greedy_teacher, play_episodes, play_symbolic
from diffses.policy import POLICY, SymbolicPolicy
from diffses.runs import Run, earlier_run, jsonable, resolve_run, resume_config
from diffses.teacher import load_teacher
from diffses.utils import cluster_client
from gplearn_custom.params import at_least, require

STAGE = "results"
#: Each finished step's outcome (dataset path, row), read back by ``--resume``.
STEPS = "steps.json"
T = TypeVar("T")

#: Fine-tuning options a resumed run takes from the call, not from its stored config.
RESUME_IGNORED = ("resume", "runs_dir", "device", "progress", "cluster")
#: Every fine-tuning option's default (a killed run's stored config may predate an option).
FINETUNE_DEFAULTS = flat_values(finetune.FinetuneConfig())

#: Fine-tuning rows by name: (label, FinetuneConfig options beyond the shared ones).
FINETUNES: dict[str, tuple[str, dict[str, Any]]] = {
    "ppo": ("PPO on constants + teacher term", dict(search="gradient", optimizer="ppo")),
    "reward-only": ("PPO on constants, reward only",
                    dict(search="gradient", optimizer="ppo", expert_coef=0.0,
                         expert_coef_final=0.0)),
    "cmaes": ("CMA-ES on constants", dict(search="gradient", optimizer="cmaes")),
    "evolve": ("evolve with the constants variation", dict(search="evolve")),
    "structure": ("structure search by return (generation 0 half random, terminals: the 8 "
                  "groups of correlated features the teacher's actions depend on most, fresh "
                  "games every generation)",
                  dict(search="evolve", init_random=0.5, terminals=8, terminal_correlation=0.7,
                       fresh_games=True)),
    "structure-tied": ("structure search by return, opposite moves tied (generation 0 half "
                       "random, terminals: the 8 groups of correlated features the teacher's "
                       "actions depend on most, fresh games every generation)",
                       dict(search="evolve", init_random=0.5, terminals=8,
                            terminal_correlation=0.7, fresh_games=True, tie_moves=True)),
    "structure-tied-length": ("structure search by return, opposite moves tied, equal returns "
                              "ranked by game length (generation 0 half random, terminals: the "
                              "8 groups of correlated features the teacher's actions depend on "
                              "most, fresh games every generation)",
                              dict(search="evolve", init_random=0.5, terminals=8,
                                   terminal_correlation=0.7, fresh_games=True, tie_moves=True,
                                   length_bonus=0.4)),
    "structure-tied-distinct": ("structure search by return, opposite moves tied, equal returns "
                                "ranked by game length, copies within a generation mutated apart "
                                "(generation 0 half random, terminals: the 8 groups of "
                                "correlated features the teacher's actions depend on most, "
                                "fresh games every generation)",
                                dict(search="evolve", init_random=0.5, terminals=8,
                                     terminal_correlation=0.7, fresh_games=True,
                                     tie_moves=True, length_bonus=0.4, distinct=True)),
}

#: Imitation-loop routes by name: (label, DistillConfig options beyond the shared ones).
ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "tree": ("VIPER loop: decision tree, margin weights, relations",
             dict(learner="tree", weights="margin", relations=True)),
    "tree-meaning": ("VIPER loop: decision tree by action meaning, margin weights, relations",
                     dict(learner="tree", weights="margin", relations=True, actions="meaning")),
    "gp": ("VIPER loop: GP forest by action meaning, margin weights, relations",
           dict(learner="gp", weights="margin", relations=True, actions="meaning")),
    "tree-plain": ("DAgger loop: decision tree, no weights, no relations",
                   dict(learner="tree", weights="none", relations=False)),
    "gp-plain": ("DAgger loop: GP forest, no weights, no relations",
                 dict(learner="gp", weights="none", relations=False, actions="each")),
}


@dataclass(frozen=True)
class ResultsConfig:
    """Regenerate the results table of one game: teacher, distilled forest, Optuna-searched
    distillation, decision-tree baseline and four fine-tunings, for each perception, on the same
    seeded games; writes results.json and results.md."""

    teacher: str = arg("pretrained/pong_teacher", "teacher run folder or shipped teacher")
    detectors: tuple[str, ...] = arg(("ocatari", "pretrained/space_pong.pt"),
                                     "perceptions: 'ocatari' and/or SPACE checkpoints or runs")
    seeds: tuple[int, ...] = arg((0, 1, 2), "distillation and fine-tuning seeds")
    eval_episodes: int = arg(10, "evaluation games per policy (the same seeds for every row)")
    eval_seed: int = arg(5000, "first seed of the evaluation games")
    eval_max_steps: int | None = arg(None, "cap on agent steps per evaluation game")
    dataset_episodes: int = arg(4, "teacher games in each perception's dataset")
    relations: bool = arg(False, "distil the forests (and the same-size trees) over a layout "
                                 "that relates the objects: every pair of types' differences "
                                 "in x and y, led by k x velocity")
    population_size: int = arg(1000, "distillation: GP population per tree (the Optuna "
                                     "search's upper bound too)")
    generations: int = arg(10, "distillation: GP generations")
    restarts: int = arg(2, "distillation: independent GP runs")
    dagger: int = arg(0, "DAgger rounds of the distilled forest and of the decision tree "
                         "(each plays --dagger-episodes games a round, the teacher labels "
                         "the states, it is refitted; the best of its own games is kept)")
    dagger_episodes: int = arg(2, "games a DAgger round plays")
    finetune_steps: int = arg(20000, "env steps of each constants tuning (the PPO, reward-only "
                                     "and CMA-ES rows; each constants variation of evolve)")
    finetune_max_steps: int = arg(2000, "cap on agent steps per fine-tuning game")
    evolve_population: int = arg(6, "evolve row: population")
    evolve_generations: int = arg(3, "evolve row: generations")
    p_gradient: float = arg(0.5, "evolve row: probability of the constants variation")
    search_restarts: int = arg(1, "evolve rows: searches per seed, each seeded apart, the best "
                                  "of all their candidates kept on the selection games")
    select_episodes: int = arg(3, "fine-tuning: selection games (seeded apart)")
    select_sticky: float = arg(0.0, "fine-tuning: the selection games also under sticky "
                                    "actions with this repeat probability (0: not)")
    start: tuple[str, ...] = arg((), "policy.json files played and fine-tuned beside the "
                                     "distilled forests, under each perception (their object "
                                     "types must be its detector's)")
    finetunes: tuple[str, ...] = arg(("ppo", "reward-only", "cmaes", "evolve"),
                                     "fine-tuning rows, of: "
                                     + ", ".join(FINETUNES))
    finetune_distilled: bool = arg(True, "fine-tune the distilled forests too (not only the "
                                         "--start policies)")
    tune_trials: int = arg(6, "Optuna trials of the return-objective search (0: no row)")
    tune_episodes: int = arg(2, "games per Optuna trial")
    routes: tuple[str, ...] = arg((), "imitation-loop rows, of: " + ", ".join(ROUTES))
    finetune_routes: tuple[str, ...] = arg((), "imitation-loop routes whose policies are "
                                               "fine-tuned too (the --finetunes rows)")
    loop_rounds: int = arg(8, "imitation loop: rounds")
    loop_episodes: int = arg(3, "imitation loop: the policy's games labelled each round")
    loop_select: int = arg(5, "imitation loop: selection games of every round (played as "
                              "they are and under --sticky)")
    loop_restarts: int = arg(1, "imitation loop: loops per seed of a tree route, from other "
                                "collection games; the best round of all is kept")
    gp_loop_restarts: int = arg(1, "imitation loop: loops per seed of a GP route (each round "
                                   "costs a GP search)")
    loop_collect_sticky: float = arg(0.0, "imitation loop: sticky-action probability of the "
                                          "policy's labelled games (noise injection: it "
                                          "strays into states the teacher then labels)")
    loop_reselect: int = arg(0, "imitation loop: the rounds with the best selection returns, "
                                "this many, replayed on --loop-reselect-games fresh selection "
                                "games, the best there kept (0: keep the best round)")
    loop_reselect_games: int = arg(8, "imitation loop: fresh selection games of "
                                      "--loop-reselect (played as they are and under --sticky)")
    loop_records: int = arg(5000, "imitation loop: records a GP route draws (by weight) to "
                                  "fit on each round")
    leaves: int = arg(8, "imitation loop: most leaves of a decision tree")
    loop_population: int = arg(500, "imitation loop: GP population per tree")
    loop_generations: int = arg(10, "imitation loop: GP generations")
    sticky: float = arg(0.25, "every row also plays the evaluation games under sticky actions "
                              "with this repeat probability (Atari; 0: not)")
    quick: bool = arg(False, "a spot check in minutes: one seed, 3 evaluation games, one "
                             "dataset game, small searches (not a result)")
    resume: str | None = arg(None, "continue a killed results run (its folder): the datasets, "
                                   "distillations and rows it finished are kept, and a "
                                   "fine-tuning it was in the middle of goes on from its "
                                   "checkpoint")
    resume_seeds: tuple[int, ...] = arg((), "with --resume: finish the table over these of "
                                            "its seeds only (a table cut short)")
    cluster: str | None = arg(None, "address of a Dask scheduler (tcp://HOST:8786): every step "
                                    "runs as a task on its workers, which share the runs "
                                    "folder (docs/cluster.md)")
    config: str | None = arg(None, "yaml file of these options (flags on the command line win)")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("results", "run name, part of the run folder's name")

    def __post_init__(self) -> None:
        if not self.detectors or not self.seeds:
            raise UserError("--detectors and --seeds need at least one value")
        for flag, given, known in (("--finetunes", self.finetunes, FINETUNES),
                                   ("--routes", self.routes, ROUTES),
                                   ("--finetune-routes", self.finetune_routes, self.routes)):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise UserError(f"unknown {flag} {', '.join(unknown)}; choose from "
                                f"{', '.join(known)}")
        for path in self.start:
            if not Path(path).is_file():
                raise UserError(f"--start {path} is not a policy.json file")
        if not 0 <= self.p_gradient <= 0.8:
            raise UserError("--p-gradient must be in [0, 0.8] (the mutations keep 0.2)")
        positive = ("eval_episodes", "dataset_episodes", "finetune_steps", "finetune_max_steps",
                    "restarts", "select_episodes", "evolve_population", "evolve_generations",
                    "search_restarts",
                    "tune_episodes", "dagger_episodes", "loop_episodes", "loop_select",
                    "loop_restarts", "gp_loop_restarts", "loop_rounds", "loop_generations",
                    "loop_reselect_games")
        require([*(at_least(getattr(self, k), 1, f"--{k.replace('_', '-')}") for k in positive),
                 at_least(self.eval_max_steps, 1, "--eval-max-steps"),
                 at_least(self.tune_trials, 0, "--tune-trials"),
                 at_least(self.loop_reselect, 0, "--loop-reselect"),
                 at_least(self.dagger, 0, "--dagger"),
                 at_least(self.generations, 2, "--generations"),
                 at_least(self.leaves, 2, "--leaves"),
                 at_least(self.loop_population, 10, "--loop-population"),
                 at_least(self.loop_records, 10, "--loop-records"),
                 (0 <= self.sticky < 1, "--sticky must be in [0, 1)"),
                 (0 <= self.select_sticky < 1, "--select-sticky must be in [0, 1)"),
                 (0 <= self.loop_collect_sticky < 1, "--loop-collect-sticky must be in [0, 1)"),
                 at_least(self.population_size, 10, "--population-size")], UserError)

    def effective(self) -> "ResultsConfig":
        """This config, shrunk to spot-check budgets with ``quick``."""
        if not self.quick:
            return self
        return replace(self, seeds=self.seeds[:1], eval_episodes=min(self.eval_episodes, 3),
                       dataset_episodes=1, population_size=min(self.population_size, 300),
                       generations=4, restarts=1, finetune_steps=1024,
                       finetune_max_steps=500, evolve_population=4, evolve_generations=2,
                       select_episodes=1, tune_trials=min(self.tune_trials, 2), tune_episodes=1,
                       loop_rounds=min(self.loop_rounds, 2), loop_episodes=1, loop_select=1,
                       loop_restarts=1, gp_loop_restarts=1,
                       loop_reselect=min(self.loop_reselect, 2), loop_reselect_games=1,
                       loop_population=min(self.loop_population, 100),
                       loop_generations=min(self.loop_generations, 3))


@dataclass
class Row:
    """One method under one perception, over the seeds that produced it."""

    perception: str
    method: str
    returns: list[float] = field(default_factory=list)
    seed_means: list[float] = field(default_factory=list)
    sticky_returns: list[float] = field(default_factory=list)
    agreements: list[float] = field(default_factory=list)
    nodes: list[float] = field(default_factory=list)
    env_steps: int = 0
    seconds: float = 0.0
    runs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return float(np.mean(values)) if values else None
        return {"perception": self.perception, "method": self.method,
                "mean": float(np.mean(self.returns)), "std": float(np.std(self.returns)),
                "seed_mean_std": float(np.std(self.seed_means)), "returns": self.returns,
                "seed_means": self.seed_means,
                "seed_range": [float(min(self.seed_means)), float(max(self.seed_means))],
                "sticky_mean": mean(self.sticky_returns),
                "sticky_std": float(np.std(self.sticky_returns)) if self.sticky_returns else None,
                "sticky_returns": self.sticky_returns, "agreement": mean(self.agreements),
                "nodes": mean(self.nodes), "env_steps": self.env_steps,
                "seconds": round(self.seconds, 1), "runs": self.runs}


class Table:
    """Collects rows, evaluating each policy on the shared evaluation games. Every step's
    outcome (a dataset, a row) is kept in steps.json as it is done, so a resumed run skips
    it. With a cluster ``client``, :attr:`collecting` runs the steps as tasks, many at once
    (:meth:`each`), and adds no rows: a second pass over the finished steps adds them in
    order."""

    def __init__(self, cfg: ResultsConfig, teacher_run: Run, folder: Path, client: Any = None,
                 created: str | None = None):
        self.cfg, self.teacher_run = cfg, teacher_run
        #: the results run's creation time (ISO): fine-tuning runs made since are its own
        self.created = created
        self.seeds = [cfg.eval_seed + i for i in range(cfg.eval_episodes)]
        self.rows: dict[tuple[str, str], Row] = {}
        self.steps_path = folder / STEPS
        self.steps: dict[str, dict[str, Any]] = (json.loads(self.steps_path.read_text())
                                                 if self.steps_path.is_file() else {})
        self.client = client
        self.collecting = False
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """What a task needs of the table (its steps run on workers): no client, no lock."""
        return {k: v for k, v in self.__dict__.items() if k not in ("client", "lock")}

    def each(self, fn: Callable[[T], Any], items: Iterable[T]) -> None:
        """``fn`` on every item: in turn, or all at once while collecting."""
        items = list(items)
        if not self.collecting or len(items) < 2:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(len(items)) as threads:
            list(threads.map(fn, items))

    def finetuned(self, fcfg: finetune.FinetuneConfig) -> tuple[Run, float]:
        """The fine-tuning run of ``fcfg`` and its seconds: the one this table made before a
        kill, finished or continued from its checkpoint (seconds: its search's before the kill
        and this process's since), else a new one."""
        earlier = None if self.created is None else earlier_run(
            self.cfg.runs_dir, finetune.STAGE, flat_values(fcfg), self.created,
            RESUME_IGNORED, FINETUNE_DEFAULTS)
        if earlier is None:
            return _timed(lambda: finetune.run(fcfg))
        before = finetune.search_seconds(earlier.path)
        if earlier.manifest["status"] == "complete":
            print(f"[results] the fine-tuning in {earlier.path} had finished", flush=True)
            return earlier, before
        print(f"[results] continuing the killed fine-tuning in {earlier.path}", flush=True)
        ft_run, seconds = _timed(lambda: finetune.run(replace(fcfg, resume=str(earlier.path))))
        return ft_run, before + seconds

    def play(self, policy: SymbolicPolicy, perception: Perception) -> list[float]:
        return play_symbolic(policy, perception, self.teacher_run, self.seeds,
                             self.cfg.eval_max_steps)

    def play_sticky(self, policy: SymbolicPolicy, perception: Perception) -> list[float]:
        """The evaluation games under sticky actions (none with ``sticky`` 0)."""
        if not self.cfg.sticky:
            return []
        return play_symbolic(policy, perception, self.teacher_run, self.seeds,
                             self.cfg.eval_max_steps, self.cfg.sticky)

    def once(self, key: str, fn: Callable[[], dict[str, Any]], task: bool = True
             ) -> dict[str, Any]:
        """``fn()``, unless this run (before a kill) already did it: then what it gave (a
        step whose run folder has since gone is done again). While collecting, a ``task``
        runs on the cluster."""
        done = self.steps.get(key, {})
        gone = [p for p in (done.get("path"), done.get("run_path")) if p and not Path(p).exists()]
        if gone:
            print(f"[results] {gone[0]} is gone: step '{key}' is done again")
        if key not in self.steps or gone:
            remote = self.collecting and task
            value = jsonable(self.client.submit(fn, pure=False).result() if remote else fn())
            with self.lock:
                self.steps[key] = value
                atomic_write_json(self.steps_path, self.steps)
            if remote:
                print(f"[results] done on the cluster: {key}", flush=True)
        return self.steps[key]

    def row(self, key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Measure a row once (``fn`` gives :meth:`add`'s arguments) and add it (not while
        collecting)."""
        entry = self.once(key, fn)
        if not self.collecting:
            self.add(**entry)
        return entry

    def measure(self, perception: Perception, method: str, policy: SymbolicPolicy,
                split: distill.Split | None, env_steps: int, seconds: float,
                run_path: str | None, nodes: float | None = None) -> dict[str, Any]:
        """A symbolic policy's row: its games (as they are and sticky), held-out agreement
        (none without a split of records in its own object types) and size in nodes."""
        return dict(perception=_label(perception.detector), method=method,
                    returns=self.play(policy, perception),
                    sticky_returns=self.play_sticky(policy, perception),
                    agreement=None if split is None else _agreement(policy, split),
                    nodes=_nodes(policy) if nodes is None else nodes, env_steps=env_steps,
                    seconds=seconds, run_path=run_path)

    def add(self, perception: str, method: str, returns: list[float],
            agreement: float | None, nodes: float | None, env_steps: int, seconds: float,
            run_path: str | None, sticky_returns: list[float] | None = None) -> None:
        row = self.rows.setdefault((perception, method), Row(perception, method))
        row.returns += returns
        row.sticky_returns += sticky_returns or []
        row.seed_means.append(float(np.mean(returns)))
        if agreement is not None:
            row.agreements.append(agreement)
        if nodes is not None:
            row.nodes.append(nodes)
        row.env_steps += env_steps
        row.seconds += seconds
        if run_path:
            row.runs.append(run_path)
        sticky = f", sticky {np.mean(sticky_returns):+.2f}" if sticky_returns else ""
        print(f"[results] {perception:<12} {method:<48} {np.mean(returns):+7.2f} "
              f"+/- {np.std(returns):.2f}{sticky}", flush=True)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _nodes(policy: SymbolicPolicy) -> float:
    """A policy's size: its decision tree's nodes when it is one, else the tokens of all its
    trees."""
    return float(policy.metrics.get("nodes") or sum(len(t) for t in policy.trees))


def _label(detector: Detector) -> str:
    """A perception's name in the table: ``ocatari`` or the SPACE checkpoint's file name."""
    return Path(detector.name).name


def _agreement(policy: SymbolicPolicy, split: distill.Split) -> float:
    return float((policy.act(split.X_val) == split.a_val).mean())


def _distilled(table: Table, perception: Perception, method: str,
               dcfg: distill.DistillConfig, data: DatasetArrays, extra_seconds: float = 0.0
               ) -> tuple[SymbolicPolicy, distill.Split, str]:
    """Distil (a run folder of its own) and add its row, once; the policy, its train/validation
    split and its run folder."""
    def load(folder: str) -> tuple[SymbolicPolicy, distill.Split]:
        policy = SymbolicPolicy.load(Path(folder) / POLICY)
        return policy, distill.split_episodes(data, policy.layout, dcfg.validation_fraction,
                                              dcfg.seed)

    def measured() -> dict[str, Any]:
        dist_run, seconds = _timed(lambda: distill.run(dcfg))
        policy, split = load(str(dist_run.path))
        return table.measure(perception, method, policy, split,
                             data.n_records + _dagger_steps(policy), extra_seconds + seconds,
                             str(dist_run.path))
    folder = table.row(f"{perception.detector.name}/s{dcfg.seed}/{method}", measured)["run_path"]
    return (*load(folder), folder)


def _dagger_steps(policy: SymbolicPolicy) -> int:
    """Env steps of a policy's DAgger games, collection and selection, of every loop (0
    without DAgger)."""
    loops = policy.metrics.get("dagger_loops") or [policy.metrics.get("dagger", [])]
    return sum(r.get("game_records", 0) + r.get("select_steps", 0) for rounds in loops
               for r in rounds)


def finetune_budget(cfg: ResultsConfig, options: dict[str, Any]) -> dict[str, Any]:
    """Budget options of one fine-tuning row: the constants searches get ``finetune_steps``;
    evolve splits them among its constants variations (one per individual and generation
    at most; none where the moves are tied, whose genes the variation cannot tune)."""
    if options.get("search") != "evolve":
        return {"n_timesteps": cfg.finetune_steps}
    variations = cfg.evolve_population * cfg.evolve_generations
    p_gradient = 0.0 if options.get("tie_moves") else cfg.p_gradient
    return {"n_timesteps": max(128, cfg.finetune_steps // variations),
            "population_size": cfg.evolve_population, "generations": cfg.evolve_generations,
            "tournament_size": min(4, cfg.evolve_population), "p_gradient": p_gradient,
            "p_crossover": round(max(0.0, 0.8 - p_gradient), 6),
            "search_restarts": cfg.search_restarts}


def finetune_rows(cfg: ResultsConfig, table: Table, perception: Perception, detector_ref: str,
                  start: str, prefix: str, data_path: str | None, split: distill.Split | None,
                  seed: int) -> None:
    """The chosen fine-tunings of the policy at ``start`` (a run folder or policy.json), one
    seed, each a row ``prefix: <method>`` (``data_path``: the dataset in the policy's object
    types, if any)."""
    def one(key: str) -> None:
        method, options = FINETUNES[key]
        if options.get("search") == "evolve" and cfg.search_restarts > 1:
            method += f", best of {cfg.search_restarts} searches"
        fcfg = finetune.FinetuneConfig(
            policy=start, teacher=str(table.teacher_run.path), detector=detector_ref,
            dataset=data_path, seed=seed, eval_episodes=0, max_steps=cfg.finetune_max_steps,
            select_episodes=cfg.select_episodes, select_sticky=cfg.select_sticky,
            device="cpu", progress=False, **options,
            **finetune_budget(cfg, options), runs_dir=cfg.runs_dir, name=cfg.name)

        def measured() -> dict[str, Any]:
            ft_run, ft_s = table.finetuned(fcfg)
            tuned = SymbolicPolicy.load(ft_run.path / POLICY)
            return table.measure(perception, f"{prefix}: {method}", tuned, split,
                                 int(tuned.metrics.get("env_steps", 0)), ft_s,
                                 str(ft_run.path))
        table.row(f"{perception.detector.name}/s{seed}/{prefix}: {method}", measured)
    table.each(one, cfg.finetunes)


def perception_rows(cfg: ResultsConfig, table: Table, run_: Run, detector_ref: str,
                    detector: Detector, starts: dict[str, SymbolicPolicy]) -> None:
    """Every row of one perception: dataset, then per seed distillation, baseline and
    fine-tunings, the given policies and their fine-tunings, then the Optuna search."""
    perception, label = Perception(detector), _label(detector)
    common = dict(runs_dir=cfg.runs_dir, name=cfg.name)
    data_path = table.once(f"{detector.name}/dataset", lambda: {"path": str(dataset.run(
        dataset.DatasetConfig(teacher=str(table.teacher_run.path), detector=detector_ref,
                              episodes=cfg.dataset_episodes, device="cpu", progress=False,
                              **common)).path)})["path"]
    data = DatasetArrays.open(data_path)
    run_.manifest.setdefault("datasets", {})[label] = data_path
    run_.save()
    variant = (", relations" if cfg.relations else "") + (f", DAgger {cfg.dagger}"
                                                          if cfg.dagger else "")

    def seed_rows(seed: int) -> None:
        dcfg = distill.DistillConfig(dataset=data_path, seed=seed, generations=cfg.generations,
                                     population_size=cfg.population_size,
                                     restarts=cfg.restarts, relations=cfg.relations,
                                     dagger=cfg.dagger,
                                     dagger_episodes=cfg.dagger_episodes,
                                     dagger_select=cfg.loop_select, dagger_sticky=cfg.sticky,
                                     dagger_max_steps=cfg.eval_max_steps or 3000,
                                     teacher=str(table.teacher_run.path), detector=detector_ref,
                                     **common)
        policy, split, dist_path = _distilled(table, perception,
                                              f"distilled forest (gplearn{variant})", dcfg, data)

        def tree_row() -> dict[str, Any]:
            (dt, metrics), seconds = _timed(lambda: _tree(dcfg, data, policy, run_,
                                                          table.teacher_run, detector_ref))
            return table.measure(perception, f"decision tree, same size (VIPER-style{variant})",
                                 dt, split, data.n_records + _dagger_steps(dt), seconds, None,
                                 metrics["nodes"])
        table.row(f"{detector.name}/s{seed}/decision tree{variant}", tree_row)
        if cfg.finetune_distilled:
            finetune_rows(cfg, table, perception, detector_ref, dist_path, "fine-tuned",
                          data_path, split, seed)
        for path, given in starts.items():
            name = Path(path).stem
            alike = finetune.reads_types_of(given, data)
            given_split = distill.split_episodes(data, given.layout, dcfg.validation_fraction,
                                                 seed) if alike else None
            seen = Perception(detector_for(given.layout.type_names, detector, path,
                                           detector_ref))
            if seed == cfg.seeds[0]:
                table.row(f"{detector.name}/given: {name}", lambda: table.measure(
                    seen, f"given: {name}", given, given_split, 0, 0.0, path))
            finetune_rows(cfg, table, seen, detector_ref, path, f"fine-tuned from {name}",
                          data_path if alike else None, given_split, seed)
        for key in cfg.routes:
            label, options = ROUTES[key]
            size = f", ≤ {cfg.leaves} leaves" if options["learner"] == "tree" else ""
            restarts = cfg.loop_restarts if options["learner"] == "tree" else cfg.gp_loop_restarts
            lcfg = replace(dcfg, **options, leaves=cfg.leaves, dagger=cfg.loop_rounds,
                           dagger_episodes=cfg.loop_episodes, dagger_restarts=restarts,
                           restarts=1, population_size=cfg.loop_population,
                           generations=cfg.loop_generations, sample_records=cfg.loop_records,
                           dagger_reselect=cfg.loop_reselect,
                           dagger_reselect_games=cfg.loop_reselect_games,
                           dagger_collect_sticky=cfg.loop_collect_sticky)
            noise = (f", labelled games sticky {cfg.loop_collect_sticky:g}"
                     if cfg.loop_collect_sticky else "")
            again = (f", best {cfg.loop_reselect} again on {cfg.loop_reselect_games} fresh games"
                     if cfg.loop_reselect else "")
            method = f"{label}{size} ({cfg.loop_rounds} rounds{noise}{again})"
            _, route_split, route_path = _distilled(table, perception, method, lcfg, data)
            if key in cfg.finetune_routes:
                finetune_rows(cfg, table, perception, detector_ref, route_path,
                              f"{method}, fine-tuned", data_path, route_split, seed)
    table.each(seed_rows, cfg.seeds)
    if cfg.tune_trials:
        tune_rows(cfg, table, run_, data_path, data, perception)


def _tree(dcfg: distill.DistillConfig, data: DatasetArrays, policy: SymbolicPolicy, run_: Run,
          teacher_run: Run, detector_ref: str) -> tuple[SymbolicPolicy, dict[str, Any]]:
    """The decision-tree baseline of the forest's size, fitted on the forest's split, then
    through the forest's DAgger rounds of its own (its rounds in the results run folder)."""
    fit = distill.tree_fit(policy, dcfg.validation_fraction, dcfg.seed)
    tree, metrics = fit(data)
    if not dcfg.dagger:
        return tree, metrics
    folder = run_.path / "trees" / f"{Path(detector_ref).name}_s{dcfg.seed}"
    tree, metrics, _ = distill.dagger(dcfg, data, tree, metrics, folder,
                                      (teacher_run, detector_ref), fit)
    return tree, metrics


def tune_rows(cfg: ResultsConfig, table: Table, run_: Run, data_path: str, data: DatasetArrays,
              perception: Perception) -> None:
    """The Optuna search over distillation for return, and its best options re-distilled."""
    def searched() -> dict[str, Any]:
        base = run_.path / f"tune_base_{len(run_.manifest.get('tunes', []))}.yaml"
        atomic_write_text(base, yaml.safe_dump({
            "eval_episodes": cfg.tune_episodes, "eval_max_steps": cfg.finetune_max_steps,
            "restarts": 1, "teacher": str(table.teacher_run.path)}))
        tcfg = tune.TuneConfig(dataset=data_path, objective="return", distill_config=str(base),
                               n_trials=cfg.tune_trials,
                               max_population=max(10, cfg.population_size),
                               max_generations=max(2, cfg.generations), seed=cfg.seeds[0],
                               cluster=cfg.cluster, runs_dir=cfg.runs_dir, name=cfg.name)
        tune_run, seconds = _timed(lambda: tune.run(tcfg))
        run_.manifest.setdefault("tunes", []).append(str(tune_run.path))
        run_.save()
        return {"path": str(tune_run.path), "seconds": seconds}
    search = table.once(f"{perception.detector.name}/tune", searched, task=False)
    best = yaml.safe_load((Path(search["path"]) / "best.yaml").read_text())
    best.update(dataset=data_path, seed=cfg.seeds[0], eval_episodes=0, runs_dir=cfg.runs_dir,
                name=cfg.name)
    _distilled(table, perception, f"distilled, Optuna best of {cfg.tune_trials} (return)",
               distill.DistillConfig(**best), data, search["seconds"])


def markdown(cfg: ResultsConfig, env_id: str, rows: list[dict[str, Any]]) -> str:
    """The table as markdown, with what it was made from."""
    lines = [f"Results on `{env_id}`: {cfg.eval_episodes} evaluation games per policy and seed "
             f"(seeds {cfg.eval_seed}–{cfg.eval_seed + cfg.eval_episodes - 1}), distillation "
             f"and fine-tuning seeds {', '.join(map(str, cfg.seeds))}; teacher "
             f"`{cfg.teacher}`" + (" (quick spot check: not a result)" if cfg.quick else ""),
             "",
             "", "| perception | policy | return (mean ± std) | seed means (min – max) "
             f"| sticky {cfg.sticky:g} (mean ± std) | agreement | nodes | env steps "
             "| wall-clock s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        agree = "–" if r["agreement"] is None else f"{r['agreement']:.3f}"
        nodes = "–" if r.get("nodes") is None else f"{r['nodes']:.0f}"
        low, high = r.get("seed_range") or (r["mean"], r["mean"])
        sticky = "–" if r.get("sticky_mean") is None else \
            f"{r['sticky_mean']:+.2f} ± {r['sticky_std']:.2f}"
        lines.append(f"| {r['perception']} | {r['method']} | {r['mean']:+.2f} ± {r['std']:.2f} "
                     f"| {low:+.2f} – {high:+.2f} | {sticky} | {agree} | {nodes} "
                     f"| {r['env_steps']:,} | {r['seconds']:.0f} |")
    lines += ["", "Nodes: a decision tree's splits and leaves; a forest's tokens in all its "
              "trees (operators, features and constants)."]
    return "\n".join(lines) + "\n"


def run(cfg: ResultsConfig) -> Run:
    """Every row for every perception; writes results.json and results.md. With ``resume``,
    the killed run's config and finished steps."""
    resumed = None
    if cfg.resume:
        only = cfg.resume_seeds
        cfg, resumed = resume_config(ResultsConfig, cfg.resume, STAGE, cfg.runs_dir, False,
                                     cluster=cfg.cluster, **({"seeds": only} if only else {}))
        if only:
            stored = tuple(resumed.config.get("seeds", ()))
            if not set(only) <= set(stored):
                raise UserError(f"--resume-seeds {only}: the run's seeds are {stored}")
            resumed.manifest["resumed_with_seeds"] = list(only)
    cfg = cfg.effective()
    client = cluster_client(cfg.cluster) if cfg.cluster else None
    if client is not None:
        cfg = replace(cfg, runs_dir=str(Path(cfg.runs_dir).resolve()))
    teacher_run = resolve_run(cfg.teacher, "teacher", cfg.runs_dir)
    detectors = [load_detector(ref, env_id=teacher_run.env_id, runs_dir=cfg.runs_dir,
                               device="cpu") for ref in cfg.detectors]
    starts = {path: SymbolicPolicy.load(Path(path)) for path in cfg.start}
    for path, given in starts.items():
        require_same_game(f"--start {path}", given.env_id, f"teacher {teacher_run.path}",
                          teacher_run.env_id)
        for ref, detector in zip(cfg.detectors, detectors):
            detector_for(given.layout.type_names, detector, path, ref)
    if resumed is None:
        run_ = Run.create(cfg.runs_dir, STAGE, teacher_run.env_id, cfg.name, cfg.seeds[0], cfg)
    else:
        run_ = resumed
        run_.manifest["status"] = "running"
        run_.save()
    table = Table(cfg, teacher_run, run_.path, client, run_.manifest["created"])
    with run_.failing():
        def teacher_row() -> dict[str, Any]:
            model = load_teacher(teacher_run, "cpu")
            returns, seconds = _timed(lambda: play_episodes(
                teacher_run, table.seeds, greedy_teacher(model), {}, cfg.eval_max_steps))
            sticky = play_episodes(teacher_run, table.seeds, greedy_teacher(model), {},
                                   cfg.eval_max_steps, cfg.sticky) if cfg.sticky else []
            return dict(perception="pixels", method="teacher (pixel PPO)", returns=returns,
                        sticky_returns=sticky,
                        agreement=1.0, nodes=None, env_steps=int(teacher_run.manifest.get(
                            "summary", {}).get("timesteps", 0)), seconds=seconds,
                        run_path=str(teacher_run.path))
        try:
            for collecting in ((True, False) if client is not None else (False,)):
                table.collecting = collecting
                table.row("teacher", teacher_row)
                for ref, detector in zip(cfg.detectors, detectors):
                    perception_rows(cfg, table, run_, ref, detector, starts)
        finally:
            if client is not None:
                client.close()
        rows = [row.to_dict() for row in table.rows.values()]
        out = {"env_id": teacher_run.env_id, "teacher": str(teacher_run.path),
               "eval_seeds": table.seeds, "config": run_.manifest.get("config"),
               "rows": rows}
        atomic_write_text(run_.path / "results.json", json.dumps(jsonable(out), indent=2) + "\n")
        atomic_write_text(run_.path / "results.md", markdown(cfg, teacher_run.env_id, rows))
        for name in ("results.json", "results.md"):
            run_.add_output(run_.path / name)
        run_.finish({"rows": len(rows)})
    print(markdown(cfg, teacher_run.env_id, rows))
    print(f"[results] {run_.path / 'results.md'}")
    return run_
