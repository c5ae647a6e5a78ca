"""Transfer without training: the teacher and symbolic policies on their source game and on
target variants (game modes and difficulties, visual shifts, sibling games), the same seeded
games for every agent.

A random agent plays every target too, so each drop can be read against the room above
random play: ``normalised drop = (source - target) / (source - random on source)``. The ratio
of drops is a symbolic agent's normalised drop over the teacher's. Writes transfer.json,
transfer.md and transfer.png into a run folder under ``<runs-dir>/transfer/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from diffses.cli import arg, parse_overrides
from diffses.curves import pyplot, save_figure
from diffses.envs import VisualShift, env_info, resolve_env
from diffses.errors import UserError
from diffses.io import atomic_write_text
from diffses.perception import Perception
from diffses.play import (SymbolicAgent, greedy_teacher, load_player, play_episodes,
                          returns_summary)
from diffses.policy import POLICY
from diffses.runs import Run, jsonable, resolve_run
from diffses.teacher import load_teacher
from gplearn_custom.params import at_least, require

STAGE = "transfer"


@dataclass(frozen=True)
class Target:
    """One variant of the source game: its label, env id and what changes."""

    label: str
    env_id: str
    game_kwargs: dict[str, Any] = field(default_factory=dict)
    visual_shift: VisualShift | None = None

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the agents' envs."""
        out: dict[str, Any] = {"env_id": self.env_id}
        if self.game_kwargs:
            out["env_kwargs"] = dict(self.game_kwargs)
        if self.visual_shift is not None:
            out["visual_shift"] = self.visual_shift
        return out


def parse_target(text: str, source: str) -> Target:
    """``mode=N``, ``difficulty=N``, ``background=R,G,B``, ``noise=STD``, ``shift=DX,DY`` or
    ``game=ENV_ID``."""
    key, sep, value = text.partition("=")
    if not sep or not value:
        raise UserError(f"--targets {text!r}: expected key=value (mode=1, difficulty=1, "
                        f"background=0,0,0, noise=20, shift=4,0, game=ENV_ID)")
    if key == "game":
        return Target(text, resolve_env(value).env_id)
    if key in ("mode", "difficulty"):
        if resolve_env(source).backend != "ale":
            raise UserError(f"--targets {text}: game modes and difficulties are ALE's")
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"--targets {text}: {key} takes an integer") from None
        plural = {"mode": "modes", "difficulty": "difficulties"}[key]
        known = env_info(source)[plural]
        if number not in known:
            raise UserError(f"--targets {text}: {source} has {plural} "
                            f"{', '.join(map(str, known))}")
        return Target(text, source, {key: number})
    if key in VisualShift.KINDS:
        try:
            numbers = tuple(float(v) for v in value.split(","))
        except ValueError:
            raise UserError(f"--targets {text}: expected numbers separated by commas") from None
        return Target(text, source, visual_shift=VisualShift(key, numbers))
    raise UserError(f"--targets {text}: unknown target '{key}' (mode, difficulty, background, "
                    f"noise, shift, game)")


@dataclass(frozen=True)
class TransferConfig:
    """Play a teacher and symbolic policies, without further training, on the source game and
    on target variants, the same seeded games for every agent; report each agent's returns,
    its drop from the source and the ratio of drops."""

    teacher: str = arg("pretrained/pong_teacher", "teacher run folder or shipped teacher")
    policies: tuple[str, ...] = arg((), "symbolic policies: distill or finetune run folders or "
                                        "policy.json files")
    detector: str | None = arg(None, "perception of the symbolic agents: 'ocatari' or a SPACE "
                                     "checkpoint/run (default: each policy's own)")
    detector_set: tuple[str, ...] = arg((), "detection settings of a SPACE detector, KEY=VALUE "
                                            "(e.g. detect.palette=true; see docs/space.md)")
    targets: tuple[str, ...] = arg(("difficulty=1", "background=0,0,0", "noise=20",
                                    "shift=4,0"),
                                   "variants: mode=N, difficulty=N, background=R,G,B, "
                                   "noise=STD, shift=DX,DY, game=ENV_ID")
    episodes: int = arg(10, "games per agent and target")
    seed: int = arg(6000, "first seed of the games")
    max_steps: int | None = arg(None, "cap on agent steps per game")
    runs_dir: str = arg("runs", "root folder of all run folders")
    name: str = arg("transfer", "run name, part of the run folder's name")

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise UserError("--episodes must be at least 1")
        require([at_least(self.max_steps, 1, "--max-steps")], UserError)


def _random_actor(n_actions: int, seed: int) -> Callable[[], Callable[..., int]]:
    rng = np.random.default_rng(seed)
    return lambda: lambda obs, info: int(rng.integers(n_actions))


def run(cfg: TransferConfig) -> Run:
    """Every agent on the source and every target; writes the table and the chart."""
    teacher_run = resolve_run(cfg.teacher, "teacher", cfg.runs_dir)
    source = teacher_run.env_id
    targets = [Target("source", source)] + [parse_target(t, source) for t in cfg.targets]
    n_actions = env_info(source)["n_actions"]
    for t in targets:
        if env_info(t.env_id)["n_actions"] != n_actions:
            raise UserError(f"--targets {t.label}: {t.env_id} has "
                            f"{env_info(t.env_id)['n_actions']} actions, the teacher's "
                            f"{source} has {n_actions}")
    agents: list[tuple[str, Callable[[], Callable[..., int]], dict[str, Any]]] = []
    model = load_teacher(teacher_run, "cpu")
    agents.append(("teacher (pixel PPO)", greedy_teacher(model), {}))
    agents += [symbolic_agent(cfg, ref, name) for ref, name in
               zip(cfg.policies, policy_names(cfg.policies))]
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    run_ = Run.create(cfg.runs_dir, STAGE, source, cfg.name, cfg.seed, cfg)
    table: dict[str, dict[str, Any]] = {}
    with run_.failing():
        for target in targets:
            row = table.setdefault(target.label, {})
            for label, actor, extra in [*agents, ("random", _random_actor(n_actions, cfg.seed),
                                                  {})]:
                returns = play_episodes(teacher_run, seeds, actor,
                                        {**extra, **target.env_kwargs()}, cfg.max_steps)
                row[label] = returns_summary(returns)
                print(f"[transfer] {target.label:<20} {label:<40} {np.mean(returns):+7.2f} "
                      f"+/- {np.std(returns):.2f}", flush=True)
        drops = drop_table(table, [a[0] for a in agents])
        out = {"source": source, "teacher": str(teacher_run.path), "seeds": seeds,
               "policies": list(cfg.policies),
               "targets": [t.label for t in targets], "returns": table, "drops": drops}
        atomic_write_text(run_.path / "transfer.json", json.dumps(jsonable(out), indent=2) + "\n")
        atomic_write_text(run_.path / "transfer.md", markdown(out))
        chart(out, run_.path / "transfer.png")
        for name in ("transfer.json", "transfer.md", "transfer.png"):
            run_.add_output(run_.path / name)
        run_.finish({"targets": len(targets), "agents": len(agents)})
    print(markdown(out))
    print(f"[transfer] {run_.path / 'transfer.md'}")
    return run_


def policy_names(refs: Sequence[str]) -> list[str]:
    """A short name per policy reference: its file's stem, or its run folder's name for a
    run folder or a ``policy.json`` inside one; a name given twice gets its position."""
    names = []
    for ref in refs:
        path = Path(ref)
        names.append(path.parent.name if path.name == POLICY else
                     path.name if path.is_dir() or not path.suffix else path.stem)
    return [f"{n} #{k}" if names.count(n) > 1 else n for k, n in enumerate(names)]


def symbolic_agent(cfg: TransferConfig, ref: str, name: str
                   ) -> tuple[str, Callable[[], Callable[..., int]], dict[str, Any]]:
    """A symbolic policy of ``--policies`` with its perception, as an agent named ``name``."""
    policy, _, detector = load_player(ref, cfg.runs_dir, cfg.teacher, cfg.detector,
                                      parse_overrides(cfg.detector_set))
    label = f"{name} ({Path(detector.name).name})"
    return label, lambda: SymbolicAgent(policy, Perception(detector)), \
        Perception(detector).env_kwargs


def drop_table(table: dict[str, dict[str, Any]], agents: list[str]) -> dict[str, Any]:
    """Per target and agent: drop from the source, normalised by the room above random play
    on the source (none for an agent no better than random there), and (symbolic agents)
    the ratio of that to the teacher's."""
    source = table["source"]
    out: dict[str, Any] = {}
    for target, row in table.items():
        if target == "source":
            continue
        out[target] = {}
        for agent in agents:
            drop = source[agent]["mean"] - row[agent]["mean"]
            room = source[agent]["mean"] - source["random"]["mean"]
            out[target][agent] = {"drop": drop,
                                  "normalised_drop": drop / room if room > 1e-9 else None}
        teacher = out[target][agents[0]]["normalised_drop"]
        for agent in agents[1:]:
            mine = out[target][agent]["normalised_drop"]
            out[target][agent]["ratio_to_teacher"] = (
                mine / teacher if mine is not None and teacher and abs(teacher) > 1e-9 else None)
    return out


def markdown(out: dict[str, Any]) -> str:
    """Returns per target (rows) and agent (columns), then the drops."""
    agents = list(out["returns"]["source"])
    lines = [f"Transfer from `{out['source']}`, {len(out['seeds'])} games per cell (seeds "
             f"{out['seeds'][0]}–{out['seeds'][-1]}), no training on any target", "",
             *[f"{n}: `{p}`" for n, p in zip(policy_names(out["policies"]), out["policies"])],
             "",
             "| target | " + " | ".join(agents) + " |", "|---" * (len(agents) + 1) + "|"]
    for target, row in out["returns"].items():
        lines.append(f"| {target} | " + " | ".join(
            f"{row[a]['mean']:+.2f} ± {row[a]['std']:.2f}" for a in agents) + " |")
    shown = [a for a in agents if a != "random"]
    lines += ["", "Drop from the source (normalised by the source's room above random play; "
              "ratio to the teacher's in brackets)", "",
              "| target | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]

    def cell(d: dict[str, Any]) -> str:
        norm = "–" if d["normalised_drop"] is None else f"{d['normalised_drop']:.2f}"
        ratio = d.get("ratio_to_teacher")
        return f"{d['drop']:+.2f} ({norm}" + ("" if ratio is None else f"; ×{ratio:.2f}") + ")"
    for target, row in out["drops"].items():
        lines.append(f"| {target} | " + " | ".join(cell(row[a]) for a in shown) + " |")
    return "\n".join(lines) + "\n"


def chart(out: dict[str, Any], path: Path) -> None:
    """Grouped bars: mean return ± std per target, one bar per agent."""
    targets = list(out["returns"])
    agents = list(out["returns"]["source"])
    width = 0.8 / len(agents)
    fig, ax = pyplot().subplots(figsize=(1.6 + 1.4 * len(targets), 3.6))
    for i, agent in enumerate(agents):
        means = [out["returns"][t][agent]["mean"] for t in targets]
        stds = [out["returns"][t][agent]["std"] for t in targets]
        ax.bar(np.arange(len(targets)) + (i - (len(agents) - 1) / 2) * width, means, width,
               yerr=stds, capsize=2, label=agent)
    ax.set_xticks(np.arange(len(targets)), targets, rotation=20, ha="right")
    ax.set_ylabel("return")
    ax.set_title(f"transfer from {out['source']}, {len(out['seeds'])} seeded games each")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
