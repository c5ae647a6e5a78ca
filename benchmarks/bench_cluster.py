"""The genetic search's fitness evaluation on a Dask cluster of 1 and of 2 one-thread workers
(started with ``dask scheduler`` / ``dask worker``), beside the local pool (this process and
``n_jobs=2``), in one run: seconds per population, the speed-up of 2 workers over 1, and the
overhead per task (near-empty tasks: imitation fitness on a handful of records).

    python benchmarks/bench_cluster.py [--population 64 --episodes 20 --repeats 3]

The population is jittered copies of the best forest of the offset-catch game in
``tests/objenv.py``, each scored on ``--episodes`` seeded games; every backend must give the
same scores. Writes benchmarks/results/bench_cluster.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import objenv  # noqa: E402
from diffses.io import atomic_write_json  # noqa: E402
from gplearn_custom import forest as fo  # noqa: E402
from gplearn_custom.fitness import FitnessSpec  # noqa: E402
from gplearn_custom.parallel import WorkerPool  # noqa: E402
from localcluster import DaskCluster  # noqa: E402


def timed(pool: WorkerPool, forests: list, repeats: int) -> tuple[float, list[float]]:
    """Best-of-``repeats`` seconds to score ``forests`` (after one warm-up), and the scores."""
    scores = [s.fitness for s in pool.score(forests)]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pool.score(forests)
        best = min(best, time.perf_counter() - t0)
    return best, scores


def backend(label: str, spec: FitnessSpec, empty: FitnessSpec, forests: list, n_empty: int,
            repeats: int, n_jobs: int = 1, cluster: str | None = None) -> dict[str, Any]:
    with WorkerPool(spec, n_jobs=n_jobs, cluster=cluster).running() as pool:
        seconds, scores = timed(pool, forests, repeats)
    with WorkerPool(empty, n_jobs=n_jobs, cluster=cluster).running() as pool:
        overhead, _ = timed(pool, forests[:1] * n_empty, repeats)
    row = {"backend": label, "seconds": round(seconds, 3),
           "task_overhead_ms": round(1e3 * overhead / n_empty, 3), "scores": scores}
    print(f"{label:<28} {seconds:8.3f} s {row['task_overhead_ms']:10.3f} ms/task", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=20, help="games per fitness task")
    parser.add_argument("--empty-tasks", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_cluster.json"))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    rng = np.random.default_rng(0)
    forests = [fo.jitter_constants(rng, objenv.BEST, 0.3) for _ in range(args.population)]
    spec = FitnessSpec("reward", objenv.make_env, episodes=args.episodes, seed=1000)
    X = np.zeros((4, objenv.LAYOUT.size))
    empty = FitnessSpec("imitation", X=X, actions=np.zeros(4, dtype=np.int64))
    common = (spec, empty, forests, args.empty_tasks, args.repeats)
    print(f"{args.population} forests x {args.episodes} games; {os.cpu_count()} CPUs")
    rows = [backend("local, this process", *common),
            backend("local pool, n_jobs=2", *common, n_jobs=2)]
    for n in (1, 2):
        with DaskCluster(n) as cluster:
            rows.append(backend(f"dask cluster, {n} worker(s)", *common,
                                cluster=cluster.address))
    same = all(r["scores"] == rows[0]["scores"] for r in rows)
    for r in rows:
        del r["scores"]
    by = {r["backend"]: r["seconds"] for r in rows}
    speedup = by["dask cluster, 1 worker(s)"] / by["dask cluster, 2 worker(s)"]
    pool_speedup = by["local, this process"] / by["local pool, n_jobs=2"]
    print(f"dask, 2 workers over 1: {speedup:.2f}x (local pool n_jobs=2 over 1: "
          f"{pool_speedup:.2f}x); same scores everywhere: {same}")
    atomic_write_json(Path(args.out), {
        "population": args.population, "episodes": args.episodes, "cpus": os.cpu_count(),
        "rows": rows, "speedup_2_over_1_workers": round(speedup, 2),
        "local_pool_speedup_2_over_1": round(pool_speedup, 2), "same_scores": same})
    print(f"[cluster] {args.out}")


if __name__ == "__main__":
    main()
