"""Ship a trained teacher (a policy-only ``model.zip`` beside a sidecar ``manifest.json``) or
the best symbolic policy of a results row (a policy file beside its ``.manifest.json``).

The shipped folder is a teacher run folder in miniature, so every stage that takes
``--teacher RUN`` takes it (``--teacher pretrained/pong_teacher``): env id, preprocessing and
hyperparameters come from its manifest. The folder also holds the learning curve and the
greedy evaluation over seeded episodes; no path of the training machine is written into it.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffses.cli import arg
from diffses.curves import plot_learning_curves, read_curve
from diffses.distill import RESELECT_SEED, SELECT_SEED
from diffses.errors import UserError
from diffses.envs import require_same_game
from diffses.io import atomic_write_json, read_json, sha256_file
from diffses.play import greedy_teacher, play_episodes
from diffses.policy import POLICY, SymbolicPolicy
from diffses.runs import MANIFEST, Run, git_commit, package_versions, resolve_run
from diffses.teacher import STAGE, load_teacher, save_model
from gplearn_custom.params import at_least, require

MODEL = "model.zip"
CURVE = "learning_curve.png"


@dataclass(frozen=True)
class ShipTeacherConfig:
    """Export a teacher run as a shipped teacher: policy-only model.zip (no optimizer state),
    manifest.json with the training command, steps, wall-clock and a greedy evaluation over
    seeded episodes, and learning_curve.png."""

    out: str = arg(help="folder to write, e.g. pretrained/pong_teacher")
    teacher: str = arg("latest", "teacher run folder, or 'latest'")
    which: str = arg("model", "the run's final model or its best evaluated one",
                     choices=("model", "best"))
    episodes: int = arg(10, "greedy evaluation episodes, one per seed")
    seed: int = arg(1000, "first evaluation seed (episodes use seed, seed+1, ...)")
    max_steps: int | None = arg(None, "cap on agent steps per evaluation episode")
    runs_dir: str = arg("runs", "root folder of all run folders")
    overwrite: bool = arg(False, "replace a folder that already holds a shipped teacher")

    def __post_init__(self) -> None:
        if self.episodes <= 0:
            raise UserError("--episodes must be positive")
        require([at_least(self.max_steps, 1, "--max-steps")], UserError)


def training_command(run_: Run) -> str:
    """The ``train_visual_rl.py`` calls that made a run, without machine paths: the first,
    then ``--resume RUN -n TOTAL`` for each later call (the manifest's ``segments``)."""
    cfg = run_.config
    totals = [seg["total"] for seg in run_.manifest.get("segments", [])] or \
        [int(run_.manifest["summary"].get("timesteps", cfg.get("n_timesteps")))]
    parts = ["train_visual_rl.py", "--env", run_.env_id, "-n", str(totals[0]),
             "--seed", str(cfg["seed"]), "--preset", run_.manifest.get("preset", "auto")]
    if cfg.get("n_envs") is not None:
        parts += ["--n-envs", str(cfg["n_envs"])]
    if cfg.get("hyperparams"):
        parts += ["--hyperparams", *cfg["hyperparams"]]
    resumes = [shlex.join(["train_visual_rl.py", "--resume", "RUN", "-n", str(total)])
               for total in totals[1:]]
    return " && ".join([shlex.join(parts), *resumes])


def strip_for_shipping(model: Any) -> Any:
    """The model with a fresh (empty) optimizer state and no log path: policy only."""
    policy = model.policy
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=1e-4,
                                              **policy.optimizer_kwargs)
    model.tensorboard_log = None
    return model


def run(cfg: ShipTeacherConfig) -> Path:
    """Write the shipped teacher folder; returns it."""
    source = resolve_run(cfg.teacher, STAGE, cfg.runs_dir)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if (out / MANIFEST).exists() and not cfg.overwrite:
        raise UserError(f"{out} already holds a shipped teacher; pass --overwrite to replace it")
    model = load_teacher(source, "cpu", cfg.which)
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    print(f"[ship] evaluating {source.path.name} ({cfg.which}) greedily on seeds "
          f"{seeds[0]}..{seeds[-1]}")
    returns = play_episodes(source, seeds, greedy_teacher(model), {}, cfg.max_steps)
    save_model(strip_for_shipping(model), out / MODEL)
    outputs = {MODEL: sha256_file(out / MODEL)}
    curve_facts: dict[str, Any] = {}
    try:
        curve = read_curve(source.path)
    except UserError as err:
        print(f"[ship] no learning curve: {err}")
    else:
        plot_learning_curves([(source.env_id, source.path)], out / CURVE,
                             title=f"{source.env_id} teacher, preset "
                                   f"{source.manifest.get('preset')}")
        outputs[CURVE] = sha256_file(out / CURVE)
        curve_facts = {"wall_clock_minutes": round(curve.seconds[-1] / 60, 1),
                       "agent_steps_per_second": round(
                           curve.steps[-1] / max(curve.seconds[-1], 1e-9), 1),
                       "final_train_return": round(curve.values[-1], 2)}
    manifest = {
        "stage": STAGE,
        "env_id": source.env_id,
        "name": out.name,
        "seed": source.manifest["seed"],
        "status": "complete",
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "command": training_command(source),
        "preset": source.manifest.get("preset"),
        "hyperparams": source.manifest["hyperparams"],
        "device": source.manifest.get("device"),
        "git_commit": source.manifest.get("git_commit"),
        "packages": source.manifest.get("packages"),
        "exported": {"from_run": source.path.name, "which": cfg.which,
                     "git_commit": git_commit(), "packages": package_versions()},
        "config": {k: v for k, v in source.config.items()
                   if k not in {"runs_dir", "resume", "hyperparams_file", "progress"}},
        "inputs": {},
        "outputs": outputs,
        "summary": {
            "timesteps": int(model.num_timesteps),
            **curve_facts,
            "eval": {"seeds": seeds, "returns": returns, "mean": float(np.mean(returns)),
                     "std": float(np.std(returns)), "deterministic": True,
                     "max_steps": cfg.max_steps},
        },
    }
    atomic_write_json(out / MANIFEST, manifest)
    print(f"[ship] {out}: {len(returns)} greedy games {np.mean(returns):+.2f} +/- "
          f"{np.std(returns):.2f}; model {(out / MODEL).stat().st_size / 1e6:.1f} MB")
    return out


@dataclass(frozen=True)
class ShipPolicyConfig:
    """Ship the best policy of one results row: of the row's seeds, the policy whose kept
    DAgger round scored best on the selection games (never chosen on the evaluation games);
    writes the policy (its teacher and detector named as shipped) and a manifest with the
    command that made it, the teacher, the seeds, and its return on the results run's
    evaluation games, as they are and sticky."""

    results: str = arg(help="results run folder (results.py) holding the row")
    method: str = arg(help="the row's method, as results.json names it (a unique prefix does)")
    out: str = arg(help="policy file to write, e.g. pretrained/policies/breakout.json")
    teacher: str = arg(help="the shipped teacher the policy names, e.g. "
                            "pretrained/breakout_teacher")
    runs_dir: str = arg("runs", "root folder of all run folders")


def _select_return(policy: SymbolicPolicy) -> float:
    """The selection return of a policy's kept DAgger round: its mean on the fresh selection
    games where the best rounds were replayed (``--dagger-reselect``), else on its loop's
    selection games (-inf without rounds)."""
    if policy.metrics.get("dagger_reselect"):
        return max(r["fresh_return"] for r in policy.metrics["dagger_reselect"])
    rounds = policy.metrics.get("dagger") or []
    kept = policy.metrics.get("dagger_kept")
    return next((r["select_return"] for r in rounds if r["round"] == kept), float("-inf"))


def _selection_games(policy: SymbolicPolicy) -> str:
    """Where :func:`_select_return` was measured, in words."""
    if policy.metrics.get("dagger_reselect"):
        return f"seed {RESELECT_SEED}, where the best rounds were replayed"
    return f"seed {SELECT_SEED}"


def ship_policy(cfg: ShipPolicyConfig) -> Path:
    """Write the shipped policy and its ``.manifest.json``; returns the policy's path."""
    results = resolve_run(cfg.results, "results", cfg.runs_dir)
    table = read_json(results.path / "results.json")
    rows = [r for r in table["rows"] if r["method"] == cfg.method] or \
        [r for r in table["rows"] if r["method"].startswith(cfg.method)]
    if len(rows) != 1:
        raise UserError(f"--method {cfg.method!r} names {len(rows)} rows of {results.path}; "
                        f"its rows: " + "; ".join(r["method"] for r in table["rows"]))
    row = rows[0]
    teacher = resolve_run(cfg.teacher, STAGE, cfg.runs_dir)
    require_same_game(f"--teacher {cfg.teacher}", teacher.env_id, f"results {results.path}",
                      table["env_id"])
    candidates = [(SymbolicPolicy.load(Path(p) / POLICY), i) for i, p in enumerate(row["runs"])]
    policy, index = max(candidates, key=lambda c: _select_return(c[0]))
    config = table["config"]
    games = len(table["eval_seeds"])
    returns = row["returns"][index * games:(index + 1) * games]
    sticky = row["sticky_returns"][index * games:(index + 1) * games]
    policy.provenance = {"teacher_run": cfg.teacher, "detector": policy.provenance.get(
        "detector", "ocatari"), "results_run": results.path.name, "row": row["method"],
                         "seed": config["seeds"][index]}
    out = policy.save(cfg.out)
    manifest = {
        "env_id": table["env_id"], "method": row["method"], "teacher": cfg.teacher,
        "detector": policy.provenance["detector"],
        "command": shlex.join(str(a) for a in results.manifest.get("command") or []),
        "ship_command": shlex.join(["ship_policy.py", "--results", f"RUN({results.path.name})",
                                    "--method", cfg.method, "--out", cfg.out,
                                    "--teacher", cfg.teacher]),
        "seeds": config["seeds"], "seed": config["seeds"][index],
        "chosen_by": "the best selection return of the row's seeds (selection games from "
                     f"{_selection_games(policy)}, as they are and sticky)",
        "selection_return": _select_return(policy),
        "nodes": policy.metrics.get("nodes"), "nodes_kind": policy.metrics.get("nodes_kind"),
        "eval": {"seeds": table["eval_seeds"], "max_steps": config.get("eval_max_steps"),
                 "returns": returns, "mean": float(np.mean(returns)),
                 "std": float(np.std(returns)),
                 "sticky": config.get("sticky"), "sticky_returns": sticky,
                 "sticky_mean": float(np.mean(sticky)) if sticky else None},
        "row": {k: row[k] for k in ("mean", "std", "seed_means", "sticky_mean", "nodes",
                                    "env_steps", "seconds")},
        "git_commit": git_commit(), "packages": package_versions(),
        "sha256": sha256_file(out),
    }
    atomic_write_json(out.with_name(out.stem + ".manifest.json"), manifest)
    print(f"[ship] {out}: {row['method']}, seed {manifest['seed']}, evaluation "
          f"{manifest['eval']['mean']:+.2f} +/- {manifest['eval']['std']:.2f} over {games} "
          f"games, {manifest['nodes']} nodes")
    return out
