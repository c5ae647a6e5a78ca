"""Learning curves read from a run's TensorBoard logs and drawn with matplotlib, and the
one way every figure of the project is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diffses.errors import UserError
from diffses.io import atomic_save

TRAIN_TAG = "rollout/ep_rew_mean"
EVAL_TAG = "eval/mean_reward"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: str | Path, formats: Sequence[str] = ("png",),
                dpi: int = 110) -> list[Path]:
    """Write ``fig`` atomically as ``path`` in each format (suffix replaced) and close it."""
    try:
        return [atomic_save(Path(path).with_suffix(f".{fmt}"),
                            lambda buf, fmt=fmt: fig.savefig(buf, format=fmt, dpi=dpi))
                for fmt in formats]
    finally:
        pyplot().close(fig)


@dataclass(frozen=True)
class Curve:
    """One scalar of a run: agent steps, values and seconds since the first point."""

    steps: list[int]
    values: list[float]
    seconds: list[float]


def read_curve(run_path: str | Path, tag: str = TRAIN_TAG) -> Curve:
    """The scalar ``tag`` over all TensorBoard event files of a run (resumed runs included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    points: dict[int, tuple[float, float]] = {}
    files = sorted(Path(run_path).glob("tb/**/events.out.tfevents.*"))
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                points[e.step] = (e.value, e.wall_time)
    if not points:
        raise UserError(f"no '{tag}' scalars in the TensorBoard logs under {run_path}/tb")
    steps = sorted(points)
    start = min(w for _, w in points.values())
    return Curve(steps, [points[s][0] for s in steps], [points[s][1] - start for s in steps])


def plot_learning_curves(runs: Sequence[tuple[str, str | Path]], out: str | Path,
                         title: str = "") -> Path:
    """Return vs agent steps and vs wall-clock minutes for each (label, run folder); PNG."""
    fig, (by_steps, by_time) = pyplot().subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, path in runs:
        train = read_curve(path, TRAIN_TAG)
        line, = by_steps.plot([s / 1e6 for s in train.steps], train.values, label=label)
        by_time.plot([t / 60 for t in train.seconds], train.values, color=line.get_color(),
                     label=label)
        try:
            ev = read_curve(path, EVAL_TAG)
        except UserError:
            continue
        times = np.interp(ev.steps, train.steps, train.seconds)  # eval points on the clock
        by_steps.plot([s / 1e6 for s in ev.steps], ev.values, "o", color=line.get_color(),
                      label=f"{label} (greedy eval)")
        by_time.plot([t / 60 for t in times], ev.values, "o", color=line.get_color())
    by_steps.set_xlabel("agent steps (millions)")
    by_time.set_xlabel("wall-clock (minutes)")
    by_steps.set_ylabel("episode return (mean of the last 100 training games)")
    for ax in (by_steps, by_time):
        ax.grid(alpha=0.3)
    by_steps.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out, dpi=100)[0]
