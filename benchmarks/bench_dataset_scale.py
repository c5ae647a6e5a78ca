"""Datasets that outgrow memory: reading, validating and featurising a dataset by streaming,
and distilling from it, at 100k and 1M records.

Pong-like datasets (three objects a record, teacher probabilities, 1000-step episodes, the
meta of sample.json) are written with the dataset builder's writer. Each measurement runs in
a fresh process, so its peak memory (ru_maxrss) is its own:

- streamed, cold: ``DatasetArrays.open`` (one validating pass) and the feature matrix, with
  no cache beside the file;
- streamed, cached: the same again, from the ``.features.npz`` cache the first one wrote;
- records in memory: ``load_dataset`` (every record a dict, as before streaming) and
  ``FeatureLayout.matrix`` of them, the comparison (at the smaller size only);
- imports only: the interpreter with ``diffses.distill`` imported, the floor under all rows;
- distillation: ``diffses.distill.run`` on the file, with a cold cache and a small GP budget.

    python benchmarks/bench_dataset_scale.py                          # 100k and 1M records
    python benchmarks/bench_dataset_scale.py --sizes 20000 --distill 20000 --in-memory 20000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffses.io import JsonListWriter  # noqa: E402
from diffses.schema import meta_path  # noqa: E402

EPISODE = 1000
#: Pong's actions that move the player's paddle: RIGHT is up, LEFT is down.
NOOP, UP, DOWN = 0, 2, 3


def synthesise(path: Path, n: int, seed: int = 0) -> None:
    """``n`` Pong-like records: the ball bounces, the enemy follows it, the player chases it
    with a lag and the teacher moves the player toward the ball."""
    rng = np.random.default_rng(seed)
    block = 10000
    with JsonListWriter(path) as writer:
        for start in range(0, n, block):
            i = np.arange(start, min(n, start + block))
            step, episode = i % EPISODE, i // EPISODE
            phase = (episode * 7919) % 997
            bx = 8 + np.abs((step * 3 + phase) % 288 - 144)
            by = 34 + np.abs((step * 2 + 3 * phase) % 320 - 160)
            vx = np.where((step * 3 + phase) % 288 < 144, -3.0, 3.0)
            vy = np.where((step * 2 + 3 * phase) % 320 < 160, -2.0, 2.0)
            py = np.clip(by + rng.normal(0, 12, len(i)), 34, 194).astype(int)
            ey = np.clip(by + rng.normal(0, 4, len(i)), 34, 194).astype(int)
            action = np.where(by < py - 4, UP, np.where(by > py + 4, DOWN, NOOP))
            logits = rng.normal(0, 0.5, (len(i), 6))
            logits[np.arange(len(i)), action] += 3.0
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            for k in range(len(i)):
                writer.write({"state": [
                    _obj(0, 140, int(py[k]), 0.0, float(rng.normal(0, 2)), 4.0, 15.0),
                    _obj(1, int(bx[k]), int(by[k]), float(vx[k]), float(vy[k]), 2.0, 4.0),
                    _obj(2, 16, int(ey[k]), 0.0, float(vy[k]), 4.0, 15.0)],
                    "teacher_action": int(action[k]), "episode": int(episode[k]),
                    "step": int(step[k]), "reward": 0.0,
                    "teacher_probs": [round(float(p), 5) for p in probs[k]]})
    meta = json.loads((ROOT / "sample.meta.json").read_text())
    meta.update(records=n, episodes=-(-n // EPISODE))
    meta_path(path).write_text(json.dumps(meta, indent=2))


def _obj(kind: int, x: int, y: int, vx: float, vy: float, w: float, h: float) -> dict:
    return {"type": kind, "x_velocity": round(vx, 3), "y_velocity": round(vy, 3),
            "x_position": x, "y_position": y, "width": w, "height": h, "confidence": 1.0,
            "track": kind}


def child(mode: str, path: Path, args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process ("imports": importing what the others use)."""
    t0 = time.perf_counter()
    from diffses.arrays import DatasetArrays, cache_path
    from diffses.distill import DistillConfig, run
    from diffses.features import FeatureLayout
    from diffses.schema import load_dataset
    if mode in ("cold", "distill"):
        cache_path(path).unlink(missing_ok=True)
    out: dict = {}
    if mode != "imports":
        t0 = time.perf_counter()
    if mode in ("cold", "cached"):
        data = DatasetArrays.open(path)
        out["shape"] = list(data.features(data.layout()).shape)
    elif mode == "memory":
        data = load_dataset(path)
        X = FeatureLayout.for_dataset(data.records, data.meta).matrix(
            [r["state"] for r in data.records])
        out["shape"] = list(X.shape)
    elif mode == "distill":
        with tempfile.TemporaryDirectory() as runs:
            done = run(DistillConfig(dataset=str(path), population_size=args.population,
                                     generations=args.generations,
                                     forest_budget=args.forest_budget, restarts=1,
                                     runs_dir=runs, name="scale"))
            out["validation_agreement"] = done.manifest["summary"]["validation_agreement"]
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(mode: str, path: Path, n: int, args: argparse.Namespace) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(path),
                           "--population", str(args.population),
                           "--generations", str(args.generations),
                           "--forest-budget", str(args.forest_budget)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} on {path} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(mode=mode, records=n, records_per_s=n / row["seconds"] if n else None)
    rate = "-" if row["records_per_s"] is None else f"{row['records_per_s']:,.0f}"
    print(f"{n:>10,} {LABELS[mode]:<38}{row['seconds']:>9.1f}{rate:>12}"
          f"{row['peak_mb']:>10,.0f}", flush=True)
    return row


LABELS = {"imports": "imports only", "cold": "streamed, cold (validate + features)",
          "cached": "streamed, from the cache", "memory": "records in memory (load_dataset)",
          "distill": "distillation (cold cache)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--in-memory", nargs="*", type=int, default=[100_000],
                        help="sizes also read into memory as records, for comparison")
    parser.add_argument("--distill", nargs="*", type=int, default=[1_000_000],
                        help="sizes to distil")
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--forest-budget", type=float, default=1.0)
    parser.add_argument("--workdir", help="folder for the datasets (default: a temporary one)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                            "bench_dataset_scale.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        print(f"{'records':>10} {'what':<38}{'seconds':>9}{'records/s':>12}{'peak MB':>10}")
        rows = [measure("imports", Path(work), 0, args)]
        for n in sorted(set(args.sizes + args.in_memory + args.distill)):
            path = Path(work) / f"pong_{n}.json"
            t0 = time.perf_counter()
            synthesise(path, n)
            print(f"{n:>10,} written in {time.perf_counter() - t0:.0f} s, "
                  f"{path.stat().st_size / 2**20:,.0f} MB of JSON", flush=True)
            modes = (["cold", "cached"] if n in args.sizes else []) + \
                (["memory"] if n in args.in_memory else []) + \
                (["distill"] if n in args.distill else [])
            rows += [dict(measure(mode, path, n, args), file_mb=path.stat().st_size / 2**20)
                     for mode in modes]
            path.unlink()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "population": args.population, "generations": args.generations,
        "forest_budget": args.forest_budget, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
