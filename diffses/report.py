"""A short table of one pipeline pass: teacher, distilled and fine-tuned policies side by side.

Reads a finetune run: its policy.json holds the returns before and after on the same seeded
games (with the teacher's) and the agreement with the teacher on the dataset; the distilled
policy it started from gives the sizes and formulas before fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffses.cli import arg
from diffses.errors import UserError
from diffses.policy import SymbolicPolicy
from diffses.runs import resolve_run


@dataclass(frozen=True)
class ReportConfig:
    """Print teacher, distilled and fine-tuned returns over the same seeded games, agreement
    with the teacher, tree sizes and the fine-tuned formulas, from one finetune run."""

    finetune: str = arg("latest", "finetune run folder, or 'latest'")
    runs_dir: str = arg("runs", "root folder of all run folders")


def _ret(block: dict[str, Any] | None) -> str:
    if not block:
        return "n/a"
    return f"{block['mean']:+.2f} ± {block['std']:.2f}"


def table(tuned: SymbolicPolicy, start: SymbolicPolicy) -> str:
    """The report's text for a fine-tuned policy and the distilled policy it started from."""
    m = tuned.metrics
    before, after = m.get("before") or {}, m.get("after") or {}
    n = len(before.get("seeds", []))

    def sizes(p: SymbolicPolicy) -> str:
        s = [len(t) for t in p.trees]
        return f"{sum(s) / len(s):.1f} (max {max(s)})"

    def agree(key: str) -> str:
        return f"{m[key]:.3f}" if key in m else "n/a"

    rows = [("teacher (pixel PPO)", _ret(before.get("teacher")), "1.000", "-"),
            ("distilled (gplearn)", _ret(before.get("symbolic")), agree("agreement_before"),
             sizes(start)),
            (f"fine-tuned ({m.get('search', '?')})", _ret(after.get("symbolic")),
             agree("agreement_after"), sizes(tuned))]
    head = ("policy", f"return ({n} seeded games)", "agreement", "nodes per tree")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = [f"{tuned.env_id}: same seeds {before.get('seeds')} for every row; agreement = "
             f"share of dataset states where the policy picks the teacher's action"]
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    lines.append("fine-tuned formulas (simplified; the action is the argmax):")
    width = max(len(a) for a in tuned.action_meanings)
    lines += [f"  {a:<{width}} = {f}" for a, f in zip(tuned.action_meanings,
                                                      tuned.formulas(simplify=True))]
    return "\n".join(lines)


def run(cfg: ReportConfig) -> str:
    """Print and return the report of a finetune run."""
    run_ = resolve_run(cfg.finetune, "finetune", cfg.runs_dir)
    tuned = SymbolicPolicy.load(run_.path)
    start_path = tuned.provenance.get("policy")
    if not start_path:
        raise UserError(f"the policy of {run_.path} does not name the policy it started from")
    text = table(tuned, SymbolicPolicy.load(start_path))
    print(text)
    return text
