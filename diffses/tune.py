"""Optuna search over distillation hyperparameters.

Each trial distils the dataset with suggested gplearn settings and scores the forest by
validation agreement with the teacher (or by its return in the game). Trials report their
agreement after each block of generations so the median pruner can stop poor ones. The study
lives in any SQLAlchemy storage (SQLite in the run folder by default; PostgreSQL lets many
machines share one study); the same storage and study name continue a study. With ``cluster``
(a Dask scheduler's address) the ``n_workers`` workers are tasks on that cluster's workers,
which must reach the storage; one whose worker dies is rerun elsewhere. The run folder
gets ``trials.csv`` and ``best.yaml``, which ``distill_teacher.py --config best.yaml`` takes.
"""

from __future__ import annotations

import multiprocessing
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml
from sqlalchemy.exc import SQLAlchemyError

from diffses.arrays import DatasetArrays
from diffses.cli import arg, flat_values, yaml_values
from diffses.distill import DistillConfig, distil, play_metrics, resolve_dataset
from diffses.errors import UserError
from diffses.io import atomic_write_text
from diffses.runs import Run, resolve_run
from diffses.utils import cluster_client

STAGE = "tune"
STUDY_DB = "study.db"
#: Operator subsets the search picks from, by name.
FUNCTION_SUBSETS: dict[str, tuple[str, ...]] = {
    "arith": ("add", "sub", "mul", "div", "neg"),
    "arith_minmax": ("add", "sub", "mul", "div", "neg", "abs", "min", "max"),
    "compare": ("add", "sub", "mul", "neg", "abs", "gt", "lt", "ite"),
    "default": ("add", "sub", "mul", "div", "neg", "abs", "min", "max", "square", "tanh",
                "gt", "lt", "ite", "within"),
}
#: Options a trial chooses; everything else comes from the base distillation config.
SEARCHED = ("population_size", "generations", "tournament_size", "parsimony_coefficient",
            "p_crossover", "p_subtree_mutation", "p_hoist_mutation", "p_point_mutation",
            "init_depth", "function_set")


@dataclass(frozen=True)
class TuneConfig:
    """Search distillation hyperparameters with Optuna; writes trials.csv and best.yaml
    (use it with distill_teacher.py --config best.yaml)."""

    dataset: str = arg("latest", "dataset run folder, 'latest', or a dataset file")
    objective: str = arg("agreement", "what a trial maximises: validation agreement with the "
                                      "teacher, or the mean return in the game",
                         choices=("agreement", "return"))
    distill_config: str | None = arg(None, "yaml of fixed distillation options (the base every "
                                           "trial starts from)")
    storage: str | None = arg(None, "SQLAlchemy URL of the study storage (default: SQLite "
                                    "study.db in the run folder)")
    study_name: str = arg("distill", "study name; an existing study of that name continues")
    n_trials: int = arg(20, "trials to add in this call (over all workers)")
    timeout: float | None = arg(None, "stop starting trials after this many seconds")
    n_workers: int = arg(1, "worker processes sharing the storage")
    cluster: str | None = arg(None, "address of a Dask scheduler (tcp://HOST:8786): the "
                                    "--n-workers workers run as tasks on its workers, which "
                                    "must reach --storage (docs/cluster.md)")
    config: str | None = arg(None, "yaml file of these options (flags on the command line win)")
    max_population: int = arg(2000, "upper bound of the population size searched")
    max_generations: int = arg(40, "upper bound of the generations searched")
    resume: str | None = arg(None, "continue the study of a tune run folder (or 'latest')")
    seed: int = arg(0, "sampler seed (worker i uses seed + i)")
    heartbeat: int = arg(30, "seconds between a running trial's heartbeats; a trial silent "
                             "for twice as long (its worker was killed) is marked failed")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("optuna", "run name, part of the run folder's name")

    def __post_init__(self) -> None:
        if self.n_trials < 1 or self.n_workers < 1:
            raise UserError("--n-trials and --n-workers must be at least 1")
        if self.heartbeat < 1:
            raise UserError("--heartbeat must be at least 1 second")
        if self.max_population < 10 or self.max_generations < 2:
            raise UserError("--max-population must be >= 10 and --max-generations >= 2")
        if self.timeout is not None and self.timeout <= 0:
            raise UserError("--timeout must be > 0 seconds")


def suggest(trial: optuna.Trial, cfg: TuneConfig) -> dict[str, Any]:
    """One trial's distillation options."""
    pop = trial.suggest_int("population_size", 10, cfg.max_population, log=True)
    p_cross = trial.suggest_float("p_crossover", 0.5, 0.95)
    room = (1.0 - p_cross) / 3
    depth_min = trial.suggest_int("init_depth_min", 1, 3)
    return {
        "population_size": pop,
        "generations": trial.suggest_int("generations", 2, cfg.max_generations, log=True),
        "tournament_size": trial.suggest_int("tournament_size", 2, max(2, min(50, pop))),
        "parsimony_coefficient": trial.suggest_float("parsimony_coefficient", 1e-4, 1e-1,
                                                     log=True),
        "p_crossover": p_cross,
        # each mutation gets a share of the probability mass crossover leaves
        "p_subtree_mutation": trial.suggest_float("subtree_share", 0.0, 1.0) * room,
        "p_hoist_mutation": trial.suggest_float("hoist_share", 0.0, 1.0) * room,
        "p_point_mutation": trial.suggest_float("point_share", 0.0, 1.0) * room,
        "init_depth": (depth_min, trial.suggest_int("init_depth_span", 1, 4) + depth_min),
        "function_set": FUNCTION_SUBSETS[trial.suggest_categorical(
            "function_subset", sorted(FUNCTION_SUBSETS))],
    }


class Objective:
    """Distil with a trial's options and score the forest."""

    def __init__(self, cfg: TuneConfig, base: dict[str, Any], data: DatasetArrays,
                 worker: int = 0):
        self.cfg, self.base, self.data, self.worker = cfg, base, data, worker

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", self.worker)
        dcfg = DistillConfig(**{**self.base, **suggest(trial, self.cfg)})
        pruned = False

        def report(generations: int, agreement: float) -> bool:
            nonlocal pruned
            trial.report(agreement, generations)
            pruned = trial.should_prune()
            return not pruned

        policy, metrics = distil(dcfg, self.data, on_generation=report)
        if pruned:
            raise optuna.TrialPruned()
        trial.set_user_attr("validation_agreement", metrics["validation_agreement"])
        trial.set_user_attr("tree_sizes", metrics["tree_sizes"])
        if self.cfg.objective == "agreement":
            return metrics["validation_agreement"]
        play = play_metrics(dcfg, policy, self.data)
        trial.set_user_attr("teacher_return", play["teacher"]["mean"])
        return play["symbolic"]["mean"]


def _base_options(cfg: TuneConfig) -> dict[str, Any]:
    base = yaml_values(DistillConfig, cfg.distill_config) if cfg.distill_config else {}
    base.update(dataset=cfg.dataset, runs_dir=cfg.runs_dir, seed=cfg.seed)
    DistillConfig(**base)  # fixed options are checked before any trial runs
    return base


def study_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """The storage with heartbeats: a trial whose worker died is failed, not left running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat,
                                          grace_period=2 * heartbeat)


def fail_dead_trials(study: optuna.Study, storage: optuna.storages.RDBStorage,
                     grace: float) -> list[int]:
    """Fail the running trials whose worker died: those silent for ``grace`` seconds
    (Optuna's heartbeat check) and those that never sent a heartbeat though they started
    ``grace`` seconds ago (a worker killed between creating a trial and its first heartbeat,
    which Optuna's check never fails). Returns the failed trials' numbers."""
    running = (optuna.trial.TrialState.RUNNING,)
    before = {t.number for t in study.get_trials(deepcopy=False, states=running)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    with storage.engine.connect() as con:
        unheard = {row[0] for row in con.execute(sqlalchemy.text(
            "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h "
            "ON h.trial_id = t.trial_id WHERE t.study_id = :study AND t.state = 'RUNNING' "
            "AND h.trial_id IS NULL"), {"study": study_id})}
    cutoff = datetime.now() - timedelta(seconds=grace)
    for trial in study.get_trials(deepcopy=False, states=running):
        if trial._trial_id in unheard and trial.datetime_start and trial.datetime_start < cutoff:
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return sorted(before - {t.number for t in study.get_trials(deepcopy=False, states=running)})


def _optimize(cfg: TuneConfig, storage: str, target: int, worker: int) -> None:
    """One worker: run trials on the shared study until it holds ``target`` finished trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data, _ = resolve_dataset(cfg.dataset, cfg.runs_dir)
    study = optuna.load_study(study_name=cfg.study_name,
                              storage=study_storage(storage, cfg.heartbeat),
                              sampler=optuna.samplers.TPESampler(seed=cfg.seed + worker),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(Objective(cfg, _base_options(cfg), data, worker), n_trials=target,
                   timeout=cfg.timeout,
                   callbacks=[optuna.study.MaxTrialsCallback(target, states=done)])


def best_yaml(cfg: TuneConfig, study: optuna.Study) -> str:
    """The best trial's options as a distill_teacher.py --config file."""
    trial = study.best_trial
    opts = DistillConfig(**{**_base_options(cfg),
                            **suggest(optuna.trial.FixedTrial(trial.params), cfg)})
    keep = {k: v for k, v in flat_values(opts).items() if k not in ("config", "runs_dir", "name")}
    keep = {k: list(v) if isinstance(v, tuple) else v for k, v in keep.items()}
    header = (f"# best of study '{cfg.study_name}': trial {trial.number}, "
              f"{cfg.objective} = {trial.value:.4f}\n")
    return header + yaml.safe_dump(keep, sort_keys=False)


def open_storage(url: str) -> None:
    """Connect once to the storage, so a bad URL is a clear error before anything runs."""
    try:
        optuna.storages.get_storage(url)
    except (ValueError, ImportError, SQLAlchemyError, optuna.exceptions.StorageInternalError
            ) as err:
        raise UserError(f"cannot open the study storage {url}: {err}") from None


def run(cfg: TuneConfig) -> Run:
    """Create or continue the study, run the trials, write trials.csv and best.yaml."""
    _base_options(cfg)
    if cfg.storage:
        open_storage(cfg.storage)
    client = cluster_client(cfg.cluster) if cfg.cluster else None
    data, data_run = resolve_dataset(cfg.dataset, cfg.runs_dir)
    env_id = (data.meta or {}).get("env_id", "unknown")
    if cfg.resume:
        run_ = resolve_run(cfg.resume, STAGE, cfg.runs_dir, complete_only=False)
        run_.manifest["status"] = "running"
        cfg = replace(cfg, study_name=run_.manifest.get("study_name", cfg.study_name))
    else:
        run_ = Run.create(cfg.runs_dir, STAGE, env_id, cfg.name, cfg.seed, cfg)
    storage = cfg.storage or run_.manifest.get("storage") or \
        f"sqlite:///{(run_.path / STUDY_DB).resolve()}"
    run_.manifest.update(storage=storage, study_name=cfg.study_name)
    run_.save()
    with run_.failing():
        run_.add_input("dataset", data.path)
        rdb = study_storage(storage, cfg.heartbeat)
        study = optuna.create_study(study_name=cfg.study_name, storage=rdb,
                                    direction="maximize", load_if_exists=True)
        dead = fail_dead_trials(study, rdb, 2 * cfg.heartbeat)
        if dead:
            print(f"[tune] trial(s) {', '.join(map(str, dead))} marked failed: their worker "
                  "stopped sending heartbeats")
        finished = [t for t in study.trials if t.state.is_finished()]
        target = len(finished) + cfg.n_trials
        print(f"[tune] study '{cfg.study_name}' at {storage}: {len(finished)} trials so far, "
              f"adding {cfg.n_trials} with {cfg.n_workers} worker(s)")
        if client is not None:
            remote = replace(cfg, dataset=str(Path(data.path).resolve()),
                             runs_dir=str(Path(cfg.runs_dir).resolve()),
                             distill_config=cfg.distill_config and str(
                                 Path(cfg.distill_config).resolve()))
            try:
                client.gather(client.map(_optimize, [remote] * cfg.n_workers,
                                         [storage] * cfg.n_workers, [target] * cfg.n_workers,
                                         range(cfg.n_workers), pure=False))
            finally:
                client.close()
        elif cfg.n_workers == 1:
            _optimize(cfg, storage, target, 0)
        else:
            ctx = multiprocessing.get_context("spawn")
            workers = [ctx.Process(target=_optimize, args=(cfg, storage, target, i))
                       for i in range(cfg.n_workers)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            if any(w.exitcode != 0 for w in workers):
                raise RuntimeError("a tuning worker failed; see its output above")
        study = optuna.load_study(study_name=cfg.study_name, storage=storage)
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            raise UserError("no trial completed (all pruned or timed out); give more trials")
        atomic_write_text(run_.path / "trials.csv", study.trials_dataframe().to_csv(index=False))
        atomic_write_text(run_.path / "best.yaml", best_yaml(cfg, study))
        for out in ("trials.csv", "best.yaml"):
            run_.add_output(run_.path / out)
        run_.finish({"best_value": study.best_value, "best_trial": study.best_trial.number,
                     "trials": len(study.trials), "completed": len(completed),
                     "objective": cfg.objective})
    print(f"[tune] best {cfg.objective} {study.best_value:.4f} (trial "
          f"{study.best_trial.number}); {run_.path / 'best.yaml'}")
    return run_
