"""Ray against Dask distributed as the cluster engine: install size, start and connect time,
overhead per task and one small search's fitness evaluation, on a local cluster of two
one-CPU workers started with each engine's own CLI.

    python benchmarks/bench_engines.py                     # the engines that import here
    PYTHONPATH=/tmp/ray PATH=/tmp/ray/bin:$PATH python benchmarks/bench_engines.py \
        --install-size               # with Ray installed by pip install --target /tmp/ray

``--install-size`` installs each engine with pip into an empty folder and measures it (the
engine and every dependency, as on a fresh machine). The evaluation is the offset-catch game of
``tests/objenv.py``: ``--population`` forests of one generation, ``--episodes`` games each, scored
in this process and on the cluster (the same scores). Writes benchmarks/results/bench_engines.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import objenv  # noqa: E402
from diffses.io import atomic_write_json  # noqa: E402
from gplearn_custom import forest as fo  # noqa: E402
from gplearn_custom.fitness import Evaluator, FitnessSpec  # noqa: E402
from gplearn_custom.parallel import _cluster_score  # noqa: E402
from localcluster import DaskCluster  # noqa: E402

PINS = {"dask": ["dask==2026.8.0", "distributed==2026.8.0"], "ray": ["ray==2.60.0"]}


def noop(token: str, x: int) -> int:
    return x


def shared(iterables: tuple[list[Any], ...], put: Callable[[Any], Any]) -> list[list[Any]]:
    """The argument lists with each fitness spec sent once (``put``) and passed by reference."""
    refs: dict[int, Any] = {}
    out = []
    for xs in iterables:
        for a in xs:
            if isinstance(a, FitnessSpec) and id(a) not in refs:
                refs[id(a)] = put(a)
        out.append([refs.get(id(a), a) if isinstance(a, FitnessSpec) else a for a in xs])
    return out


def install_size(engine: str) -> float:
    """MB that ``pip install --target`` writes for the engine and its dependencies."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir",
                        "--target", folder, *PINS[engine]], check=True)
        return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


class Ray:
    """``ray start --head`` with two CPUs (two one-CPU workers), a driver connected to it."""

    def __init__(self, env: dict[str, str]):
        self.env, self.port = env, 6390

    def start(self) -> None:
        subprocess.run(["ray", "start", "--head", f"--port={self.port}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats"], env=self.env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connect(self) -> None:
        import ray
        ray.init(address=f"127.0.0.1:{self.port}", logging_level="ERROR")

    def map(self, fn: Callable[..., Any], *iterables: list[Any]) -> list[Any]:
        import ray
        remote = ray.remote(num_cpus=1)(fn)
        args = shared(iterables, ray.put)
        return ray.get([remote.remote("bench", *a) for a in zip(*args)])

    def stop(self) -> None:
        import ray
        ray.shutdown()
        subprocess.run(["ray", "stop", "--force"], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


class Dask:
    """``dask scheduler`` and two ``dask worker --nthreads 1``, a client connected to it."""

    def __init__(self, env: dict[str, str]):
        self.cluster = DaskCluster(2, env=env)

    def start(self) -> None:
        self.cluster.start()

    def connect(self) -> None:
        from distributed import Client
        self.client = Client(self.cluster.address, set_as_default=False)

    def map(self, fn: Callable[..., Any], *iterables: list[Any]) -> list[Any]:
        args = shared(iterables, lambda a: self.client.scatter(a, broadcast=True, hash=False))
        n = len(args[0])
        return self.client.gather(self.client.map(fn, ["bench"] * n, *args, pure=False))

    def stop(self) -> None:
        self.client.close()
        self.cluster.stop()


def measure(name: str, engine: Any, spec: FitnessSpec, forests: list, n_tasks: int
            ) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine.start()
    started = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.connect()
    connect = time.perf_counter() - t0
    try:
        engine.map(noop, list(range(8)))
        t0 = time.perf_counter()
        engine.map(noop, list(range(n_tasks)))
        per_task = (time.perf_counter() - t0) / n_tasks
        engine.map(_cluster_score, [spec] * len(forests), forests, [None] * len(forests))
        t0 = time.perf_counter()
        scores = engine.map(_cluster_score, [spec] * len(forests), forests,
                            [None] * len(forests))
        search = time.perf_counter() - t0
    finally:
        engine.stop()
    return {"engine": name, "start_s": round(started, 2), "connect_s": round(connect, 3),
            "task_overhead_ms": round(1e3 * per_task, 3), "evaluation_s": round(search, 3),
            "fitness": [s.fitness for s in scores]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=48)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=400, help="no-op tasks for the overhead")
    parser.add_argument("--install-size", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_engines.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    forests = [fo.jitter_constants(rng, objenv.BEST, 0.3) for _ in range(args.population)]
    spec = FitnessSpec("reward", objenv.make_env, episodes=args.episodes, seed=1000)
    t0 = time.perf_counter()
    local = [Evaluator(spec)(f) for f in forests]
    local_s = time.perf_counter() - t0
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    engines = {"dask": Dask, "ray": Ray}
    rows = []
    for name, cls in engines.items():
        if importlib.util.find_spec("distributed" if name == "dask" else name) is None:
            print(f"[engines] {name} is not installed here: skipped")
            continue
        row = measure(name, cls(env), spec, forests, args.tasks)
        row["same_scores_as_local"] = row.pop("fitness") == [s.fitness for s in local]
        row["speedup_vs_local"] = round(local_s / row["evaluation_s"], 2)
        if args.install_size:
            row["install_mb"] = round(install_size(name), 1)
        rows.append(row)
    out = {"population": args.population, "episodes": args.episodes,
           "local_evaluation_s": round(local_s, 3), "engines": rows}
    print(f"{'engine':<6} {'install MB':>10} {'start s':>8} {'connect s':>9} "
          f"{'ms/task':>8} {'eval s':>7} {'vs local':>8} same")
    for r in rows:
        print(f"{r['engine']:<6} {r.get('install_mb', '-'):>10} {r['start_s']:>8} "
              f"{r['connect_s']:>9} {r['task_overhead_ms']:>8} {r['evaluation_s']:>7} "
              f"{r['speedup_vs_local']:>7}x {r['same_scores_as_local']}")
    print(f"local, one process: {local_s:.3f} s")
    atomic_write_json(Path(args.out), out)
    print(f"[engines] {args.out}")


if __name__ == "__main__":
    main()
