"""Fitness evaluations and constant tuning in worker processes (``n_jobs``) or on a cluster.

Workers are spawned once per search and keep their envs between tasks. Every task carries
its own seed, so results do not depend on which worker ran it, on ``n_jobs`` or on the
cluster. With ``n_jobs=1`` tasks run in this process; ``-1`` means one worker per CPU
(gplearn's meaning). With ``cluster`` (a Dask scheduler's address) they run on that
cluster's workers instead (:mod:`gplearn_custom.cluster`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterator, Sequence

import torch

from gplearn_custom import cluster as cl
from gplearn_custom.fitness import Evaluator, FitnessSpec, Score
from gplearn_custom.tuning import ConstantTuner
from see.tree import Forest

_WORKER: dict[str, Any] = {}


def resolve_n_jobs(n_jobs: int) -> int:
    """``n_jobs`` as a worker count: -1 is every CPU, -2 all but one, and so on."""
    if n_jobs == 0:
        raise ValueError("n_jobs must not be 0")
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def _init_worker(spec: FitnessSpec | None, tuner: ConstantTuner | None) -> None:
    torch.set_num_threads(1)
    _WORKER["evaluator"] = Evaluator(spec) if spec is not None else None
    _WORKER["tuner"] = tuner


def _score(forest: Forest, seed: int | None) -> Score:
    return _WORKER["evaluator"](forest, seed)


def _tune(forest: Forest, seed: int) -> tuple[Forest, dict[str, Any]]:
    return _WORKER["tuner"](forest, seed)


def _evaluator(spec: FitnessSpec) -> Evaluator:
    torch.set_num_threads(1)
    return Evaluator(spec)


def _cluster_score(token: str, spec: FitnessSpec, forest: Forest, seed: int | None) -> Score:
    return cl.local_state(token, lambda: _evaluator(spec))(forest, seed)


def _cluster_tune(token: str, tuner: ConstantTuner, forest: Forest, seed: int
                  ) -> tuple[Forest, dict[str, Any]]:
    torch.set_num_threads(1)
    return tuner(forest, seed)


class WorkerPool:
    """Scores forests under one fitness spec and tunes constants with one tuner: in this
    process, in ``n_jobs`` local workers, or on the Dask ``cluster`` at that address."""

    def __init__(self, spec: FitnessSpec | None, tuner: ConstantTuner | None = None,
                 n_jobs: int = 1, cluster: str | None = None):
        self.n_jobs = resolve_n_jobs(n_jobs)
        self._executor: ProcessPoolExecutor | None = None
        self._session: cl.Session | None = None
        self._evaluator: Evaluator | None = None
        if cluster is not None:
            self._session = cl.Session(cluster)
            try:
                self._spec = self._session.share(spec) if spec is not None else None
                self._tuner = self._session.share(tuner) if tuner is not None else None
            except BaseException:
                self.close()
                raise
        elif self.n_jobs == 1:
            self._evaluator = Evaluator(spec) if spec is not None else None
            self._tuner = tuner
        else:
            self._executor = ProcessPoolExecutor(
                self.n_jobs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(spec, tuner))

    def score(self, forests: Sequence[Forest], seed: int | None = None) -> list[Score]:
        """One :class:`Score` per forest, in order."""
        if self._session is not None:
            n = len(forests)
            return self._session.map(_cluster_score, [self._spec] * n, list(forests),
                                     [seed] * n)
        if self._executor is None:
            return [self._evaluator(f, seed) for f in forests]
        return list(self._executor.map(_score, forests, [seed] * len(forests)))

    def tune(self, jobs: Sequence[tuple[Forest, int]]) -> list[tuple[Forest, dict[str, Any]]]:
        """Tuned forests for ``(forest, seed)`` jobs, in order."""
        if self._session is not None:
            return self._session.map(_cluster_tune, [self._tuner] * len(jobs),
                                     [f for f, _ in jobs], [s for _, s in jobs])
        if self._executor is None:
            return [self._tuner(f, s) for f, s in jobs]
        return list(self._executor.map(_tune, [f for f, _ in jobs], [s for _, s in jobs]))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        elif self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None
        elif self._evaluator is not None:
            self._evaluator.close()

    @contextlib.contextmanager
    def running(self) -> Iterator["WorkerPool"]:
        """Close the workers when the block ends."""
        try:
            yield self
        finally:
            self.close()
