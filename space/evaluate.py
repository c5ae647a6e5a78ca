"""Score detections against ground truth: per-class precision, recall, F1, centre error, purity.

Predictions and truths are matched per frame by the Hungarian algorithm on centre distance;
a pair farther apart than ``gate`` pixels is no match. Learned type ids need not equal the
ground-truth class ids: each predicted type is mapped to the class it matches most often (its
purity is the share of its matches in that class), and a prediction counts towards the class
its type maps to. A true positive is a matched pair whose truth class is the prediction's
mapped class; a type's offset is the mean of its true positives' centres minus their truths'.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from diffses.detection import Detection


def match(pred: Sequence[Detection], truth: Sequence[Detection], gate: float
          ) -> list[tuple[int, int, float]]:
    """(pred index, truth index, centre distance) of matched pairs within ``gate`` pixels."""
    if not pred or not truth:
        return []
    p = np.array([[d.x, d.y] for d in pred])       # (P, 2)
    t = np.array([[d.x, d.y] for d in truth])      # (T, 2)
    dist = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=-1)  # (P, T)
    rows, cols = linear_sum_assignment(np.where(dist <= gate, dist, 1e6))
    return [(int(r), int(c), float(dist[r, c])) for r, c in zip(rows, cols) if dist[r, c] <= gate]


def evaluate(preds: Sequence[Sequence[Detection]], truths: Sequence[Sequence[Detection]],
             class_names: dict[int, str], gate: float = 6.0) -> dict[str, Any]:
    """Scores over a set of frames; ``class_names`` names the truth classes."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} prediction lists for {len(truths)} frames")
    matches = [match(p, t, gate) for p, t in zip(preds, truths)]
    votes: dict[int, Counter] = defaultdict(Counter)
    for p, t, m in zip(preds, truths, matches):
        for i, j, _ in m:
            votes[p[i].type][t[j].type] += 1
    mapping = {ptype: c.most_common(1)[0][0] for ptype, c in votes.items()}
    purity = {ptype: c.most_common(1)[0][1] / sum(c.values()) for ptype, c in votes.items()}

    tp: Counter = Counter()
    n_pred: Counter = Counter()
    n_true: Counter = Counter()
    errors: dict[int, list[float]] = defaultdict(list)
    offsets: dict[int, list[tuple[float, float]]] = defaultdict(list)
    matched_any = 0
    for p, t, m in zip(preds, truths, matches):
        for d in p:
            n_pred[mapping.get(d.type, -1)] += 1
        for d in t:
            n_true[d.type] += 1
        matched_any += len(m)
        for i, j, dist in m:
            if mapping.get(p[i].type) == t[j].type:
                tp[t[j].type] += 1
                errors[t[j].type].append(dist)
                offsets[p[i].type].append((p[i].x - t[j].x, p[i].y - t[j].y))

    def prf(hits: int, npred: int, ntrue: int) -> dict[str, float]:
        precision = hits / npred if npred else 0.0
        recall = hits / ntrue if ntrue else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}

    per_class = {}
    for cid, cname in class_names.items():
        if not n_true[cid] and not n_pred[cid]:
            continue
        row = prf(tp[cid], n_pred[cid], n_true[cid])
        row.update(support=n_true[cid], predicted=n_pred[cid],
                   centre_error=float(np.mean(errors[cid])) if errors[cid] else None)
        per_class[cname] = row
    total_pred, total_true = sum(len(p) for p in preds), sum(len(t) for t in truths)
    all_votes = sum(sum(c.values()) for c in votes.values())
    return {
        "frames": len(preds),
        "gate_px": gate,
        "per_class": per_class,
        "overall": prf(sum(tp.values()), total_pred, total_true),
        "localisation": prf(matched_any, total_pred, total_true),
        "type_to_class": {int(k): class_names.get(v, str(v)) for k, v in mapping.items()},
        "type_purity": {int(k): v for k, v in purity.items()},
        "type_offset": {int(k): np.mean(v, axis=0).tolist() for k, v in offsets.items()},
        "purity": (sum(c.most_common(1)[0][1] for c in votes.values()) / all_votes
                   if all_votes else 0.0),
    }
