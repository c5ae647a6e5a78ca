"""Every figure of the README, regenerated from run folders: teacher learning curves, returns
of the results table with error bars, fine-tuning curves, the transfer chart, per-action
formula sizes and SPACE's box grid. PNG (and SVG for the charts) into a run folder under
``<runs-dir>/figures/``; ``--docs`` copies them to docs/figures/.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffses.cli import arg
from diffses.curves import plot_learning_curves, pyplot, save_figure
from diffses.detection import Detector
from diffses.envs import game_name
from diffses.errors import UserError
from diffses.perception import Perception
from diffses.play import load_player
from diffses.policy import POLICY, SymbolicPolicy
from diffses.runs import Run, resolve_run
from diffses.teacher import load_teacher
from diffses.transfer import chart as transfer_chart
from diffses.video import record

STAGE = "figures"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "figures"


@dataclass(frozen=True)
class FiguresConfig:
    """Draw the README's figures from runs: teacher curves, the results table's returns and
    fine-tuning curves, the transfer chart, formula sizes and the SPACE box grid."""

    teachers: tuple[str, ...] = arg(("pretrained/pong_teacher", "pretrained/breakout_teacher"),
                                    "teacher runs (their TensorBoard logs) or shipped teachers "
                                    "(their learning_curve.png)")
    results: tuple[str, ...] = arg(("latest",), "results run folders, 'latest' (none: "
                                                "skipped) or results.json files (such as the "
                                                "tracked docs/results/<game>.json); figures "
                                                "are named by game")
    transfer: tuple[str, ...] = arg(("latest",), "transfer run folders, 'latest' (none: "
                                                 "skipped) or transfer.json files; figures are "
                                                 "named by game")
    space_eval: str | None = arg(None, "folder of a SPACE evaluation (its box grid PNG)")
    video_policy: str | None = arg(None, "a symbolic policy (run or policy.json) to film: one "
                                         "game beside its teacher, as <game>_symbolic.gif")
    video_seed: int = arg(5000, "seed of the filmed game")
    video_steps: int = arg(240, "agent steps filmed")
    docs: bool = arg(False, "also copy the figures to docs/figures/")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("figures", "run name, part of the run folder's name")

    def __post_init__(self) -> None:
        if self.video_steps < 1:
            raise UserError("--video-steps must be at least 1")


def returns_chart(result: dict[str, Any], path: Path) -> list[Path]:
    """Mean return ± std of every row of a results table, one bar each."""
    plt = pyplot()
    rows = result["rows"]
    labels = [textwrap.fill(f"{r['method']} [{r['perception']}]", 48) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], capsize=2,
            color=["#555" if r["perception"] == "pixels" else "#3a7" for r in rows])
    sticky = [(yi, r["sticky_mean"]) for yi, r in zip(y, rows)
              if r.get("sticky_mean") is not None]
    if sticky:
        ax.plot([v for _, v in sticky], [yi for yi, _ in sticky], "D", color="#c33",
                markersize=5, label="mean under sticky actions")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"return, {len(result['eval_seeds'])} seeded games per seed")
    ax.set_title(result["env_id"])
    fig.tight_layout()
    return save_figure(fig, path, ("png", "svg"))


def finetune_chart(result: dict[str, Any], path: Path) -> list[Path] | None:
    """Return and teacher agreement against env steps for each fine-tuning run."""
    runs = [(r["method"], r["perception"], Path(p)) for r in result["rows"]
            if r["method"].startswith("fine-tuned") for p in r["runs"]
            if (Path(p) / "history.json").is_file()]
    if not runs:
        return None
    plt = pyplot()
    fig, (ret, agree) = plt.subplots(1, 2, figsize=(11, 4))
    colours: dict[str, str] = {}
    for method, perception, folder in runs:
        history = json.loads((folder / "history.json").read_text())["history"]
        steps = [h.get("env_steps", i) for i, h in enumerate(history)]
        label = f"{method.removeprefix('fine-tuned: ')} [{perception}]"
        first = label not in colours
        colour = colours.setdefault(label, f"C{len(colours) % 10}")
        ret.plot(steps, [h.get("mean_return", h.get("best_return")) for h in history],
                 color=colour, alpha=0.8, label=label if first else None)
        if any(h.get("agreement") is not None for h in history):
            agree.plot(steps, [h.get("agreement") for h in history], color=colour, alpha=0.8)
    ret.set_xlabel("env steps")
    ret.set_ylabel("return (training games)")
    agree.set_xlabel("env steps")
    agree.set_ylabel("agreement with the teacher (online)")
    ret.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path, ("png", "svg"))


def sizes_chart(result: dict[str, Any], path: Path) -> list[Path] | None:
    """Nodes per action of each distilled forest of the table."""
    policies = [(r["perception"], SymbolicPolicy.load(Path(p) / POLICY))
                for r in result["rows"] if r["method"] == "distilled forest (gplearn)"
                for p in r["runs"] if (Path(p) / POLICY).is_file()]
    if not policies:
        return None
    plt = pyplot()
    meanings = policies[0][1].action_meanings
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(meanings), 3.4))
    for i, (perception, policy) in enumerate(policies):
        ax.bar(np.arange(len(meanings)) + (i - (len(policies) - 1) / 2) * width,
               [len(t) for t in policy.trees], width, label=f"{perception} #{i}")
    ax.set_xticks(np.arange(len(meanings)), meanings, rotation=30, ha="right")
    ax.set_ylabel("nodes")
    ax.set_title("formula size per action")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path, ("png", "svg"))


def _tables(refs: tuple[str, ...], stage: str, file: str, runs_dir: str
            ) -> list[dict[str, Any]]:
    """The json of every ref: a json file as it is (a tracked table), else ``file`` of the run
    folder it names (see :func:`_runs`)."""
    out = []
    for ref in refs:
        if ref.endswith(".json"):
            if not Path(ref).is_file():
                raise UserError(f"{ref} does not exist (a {file} or a {stage} run folder)")
            out.append(json.loads(Path(ref).read_text()))
        else:
            out += [json.loads((r.path / file).read_text())
                    for r in _runs((ref,), stage, runs_dir)]
    return out


def _runs(refs: tuple[str, ...], stage: str, runs_dir: str) -> list[Run]:
    """The runs named; 'latest' with no run of the stage yet is skipped with a line."""
    out = []
    for ref in refs:
        try:
            out.append(resolve_run(ref, stage, runs_dir))
        except UserError:
            if ref != "latest":
                raise
            print(f"[figures] no {stage} run yet: its figures are skipped")
    return out


def film(player: tuple[SymbolicPolicy, Run, Detector], cfg: FiguresConfig, folder: Path
         ) -> Path:
    """One game of the player (``load_player``'s) beside its teacher, as a GIF."""
    policy, teacher, detector = player
    target = folder / f"{game_name(teacher.env_id)}_symbolic.gif"
    video, _, _ = record(policy, Perception(detector), teacher, cfg.video_seed, target,
                         cfg.video_steps, load_teacher(teacher, "cpu"))
    return video


def run(cfg: FiguresConfig) -> Run:
    """Draw every figure the inputs allow; returns the run folder holding them."""
    teachers = [resolve_run(ref, "teacher", cfg.runs_dir) for ref in cfg.teachers]
    tables = _tables(cfg.results, "results", "results.json", cfg.runs_dir)
    transfers = _tables(cfg.transfer, "transfer", "transfer.json", cfg.runs_dir)
    grids = sorted(Path(cfg.space_eval).glob("*.png")) if cfg.space_eval else []
    if cfg.space_eval and not grids:
        raise UserError(f"--space-eval {cfg.space_eval} holds no PNG")
    player = load_player(cfg.video_policy, cfg.runs_dir) if cfg.video_policy else None
    run_ = Run.create(cfg.runs_dir, STAGE, "all", cfg.name, 0, cfg)
    made: list[Path] = []
    with run_.failing():
        for teacher in teachers:
            target = run_.path / f"teacher_{game_name(teacher.env_id)}.png"
            if (teacher.path / "learning_curve.png").is_file():
                made.append(Path(shutil.copyfile(teacher.path / "learning_curve.png", target)))
                continue
            try:
                made.append(plot_learning_curves([(teacher.env_id, teacher.path)], target,
                                                 teacher.env_id))
            except UserError as err:
                print(f"[figures] no learning curve for {teacher.path}: {err}")
        shown: dict[str, int] = {}
        for table in tables:
            game = game_name(table["env_id"])
            shown[game] = shown.get(game, 0) + 1
            game += f"_{shown[game]}" if shown[game] > 1 else ""
            made += returns_chart(table, run_.path / f"results_returns_{game}")
            made += finetune_chart(table, run_.path / f"finetune_curves_{game}") or []
            made += sizes_chart(table, run_.path / f"formula_sizes_{game}") or []
        for out in transfers:
            made.append(run_.path / f"transfer_{game_name(out['source'])}.png")
            transfer_chart(out, made[-1])
        made += [Path(shutil.copyfile(g, run_.path / f"space_{g.name}")) for g in grids]
        if player is not None:
            made.append(film(player, cfg, run_.path))
        for path in made:
            run_.add_output(path)
            if cfg.docs:
                DOCS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, DOCS / path.name)
        run_.finish({"figures": [p.name for p in made]})
    for path in made:
        print(f"[figures] {path}")
    return run_
