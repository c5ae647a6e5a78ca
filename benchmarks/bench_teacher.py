"""Teacher training speed: the CPU recipe and its candidates beside the rl-zoo setting.

Every candidate trains PPO on the same env for the same number of agent steps, each in its
own process (so each memory peak is its own), one after the other in this run: plain SB3 PPO
with zoo settings, train_visual_rl.py with the zoo preset (``atari``: NatureCNN, 4 epochs), the
shipped CPU preset (``atari-cpu``: SmallCNN) and variants of it. Prints a table and writes
benchmarks/results/bench_teacher.json. The ratios are the figures to read: these machines are
noisy, absolute numbers less so.

    python benchmarks/bench_teacher.py --env PongNoFrameskip-v4 -n 8192
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


#: name -> (preset, hyperparameter overrides, n_envs) for train_visual_rl.py ("sb3": plain SB3).
CANDIDATES: dict[str, tuple[str, tuple[str, ...], int | None]] = {
    "sb3": ("", (), None),
    "zoo": ("atari", (), None),
    "cpu": ("atari-cpu", (), None),
    "cpu-2-epochs": ("atari-cpu", ("n_epochs=2",), None),
    "cpu-16-envs": ("atari-cpu", ("n_steps=64",), 16),
}
LABELS = {"sb3": "plain SB3 PPO, zoo settings", "zoo": "ours, preset atari (zoo)",
          "cpu": "ours, preset atari-cpu (shipped)", "cpu-2-epochs": "atari-cpu, 2 epochs",
          "cpu-16-envs": "atari-cpu, 16 envs x 64 steps"}


def worker_ours(env_id: str, n: int, device: str, kind: str) -> dict:
    from diffses.teacher import TeacherConfig, run
    preset, overrides, n_envs = CANDIDATES[kind]
    with tempfile.TemporaryDirectory() as runs:
        result = run(TeacherConfig(env=env_id, n_timesteps=n, runs_dir=runs, device=device,
                                   preset=preset, hyperparams=overrides, n_envs=n_envs,
                                   eval_freq=0, final_eval_episodes=0, checkpoint_freq=10**9,
                                   progress=False))
        summary = result.manifest["summary"]
    return {"steps": summary["timesteps"], "seconds": summary["train_seconds"]}


def worker_sb3(env_id: str, n: int, device: str) -> dict:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack
    gym.register_envs(ale_py)
    kwargs = {"frameskip": 1} if env_id.startswith("ALE/") else {}
    venv = VecFrameStack(make_atari_env(env_id, n_envs=8, seed=0, env_kwargs=kwargs), 4)

    def lin(v: float):
        return lambda p: p * v

    model = PPO("CnnPolicy", venv, n_steps=128, n_epochs=4, batch_size=256,
                learning_rate=lin(2.5e-4), clip_range=lin(0.1), ent_coef=0.01, vf_coef=0.5,
                seed=0, device=device, verbose=0)
    t0 = time.perf_counter()
    model.learn(n)
    seconds = time.perf_counter() - t0
    venv.close()
    return {"steps": int(model.num_timesteps), "seconds": round(seconds, 2)}


def child(kind: str, env_id: str, n: int, device: str) -> None:
    out = worker_sb3(env_id, n, device) if kind == "sb3" else worker_ours(env_id, n, device, kind)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="PongNoFrameskip-v4")
    parser.add_argument("-n", "--n-timesteps", type=int, default=8192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_teacher.json"))
    parser.add_argument("--only", nargs="*", choices=tuple(CANDIDATES), default=list(CANDIDATES),
                        help="candidates to run (default: all)")
    parser.add_argument("--child", choices=tuple(CANDIDATES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.env, args.n_timesteps, args.device)
        return
    rows = {}
    for kind in args.only:
        proc = subprocess.run([sys.executable, __file__, "--child", kind, "--env", args.env,
                               "-n", str(args.n_timesteps), "--device", args.device],
                              capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(line[len("RESULT "):])
        row["steps_per_s"] = round(row["steps"] / row["seconds"], 1)
        rows[kind] = row
    base = "zoo" if "zoo" in rows else next(iter(rows))
    for row in rows.values():
        row["ratio_to_" + base] = round(row["steps_per_s"] / rows[base]["steps_per_s"], 3)
    print(f"\nPPO on {args.env}, {args.n_timesteps} agent steps each, device {args.device}, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'setup':<34}{'steps/s':>10}{'seconds':>10}{'peak RSS MB':>14}{'/ ' + base:>10}")
    for kind, row in rows.items():
        print(f"{LABELS[kind]:<34}{row['steps_per_s']:>10}{row['seconds']:>10}"
              f"{row['peak_rss_mb']:>14}{row['ratio_to_' + base]:>10}")
    result = {"env": args.env, "n_timesteps": args.n_timesteps, "device": args.device,
              "baseline": base, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
