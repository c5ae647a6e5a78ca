"""The fast student of a trained SPACE detector (``--task fast``).

SPACE finds an object in three passes: the image encoder gives every grid cell a presence
probability and a box, a glimpse of each present box is encoded to z_what, and z_what is decoded
again for the box's alpha mask; the type is the nearest k-means centroid of z_what. At batch 1
on one CPU thread that costs several times a pixel teacher's step. The student is one small
convolutional network that gives, per grid cell, what those passes give there: the presence
probability, the box (its offset from the cell centre and its log size, in cells) and the type.
It learns them from the SPACE model itself on the training frames, so no labels enter.

    python space/main.py --task fast --checkpoint pretrained/space_pong.pt --frames RUN
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffses.errors import UserError
from diffses.runs import Run
from diffses.utils import resolve_device, seed_everything
from space.config import DataConfig, FastConfig, SpaceConfig, config_from, to_dict
from space.data import crop_box, load_frames, preprocess, random_shift, select_records


class FastNet(nn.Module):
    """Images (B, 3, h, w) in [0, 1] -> per cell (B, N, 5 + k): presence logit, centre offset
    (2, in cells from the cell centre), log box size (2, in cells) and k type logits."""

    def __init__(self, fc: FastConfig, grid: tuple[int, int], cell: int, n_types: int,
                 native: bool = False):
        super().__init__()
        first = first_stride(cell)
        if first is None:
            raise UserError(f"the fast student needs grid cells of 2, 3, 4 or 5 times a power of "
                            f"2 pixels, not {cell}")
        #: whether the input is the native frame's crop (else SPACE's resized input)
        self.native = native
        #: input pixels per grid cell
        self.cell = cell
        layers: list[nn.Module] = [nn.Conv2d(3, fc.channels, first, stride=first),
                                   nn.ReLU(inplace=True)]
        c_in, left = fc.channels, cell // first
        while left > 1:
            layers += [nn.Conv2d(c_in, fc.feat_channels, 3, stride=2, padding=1),
                       nn.ReLU(inplace=True)]
            c_in, left = fc.feat_channels, left // 2
        for _ in range(fc.feat_layers):
            layers += [nn.Conv2d(c_in, fc.feat_channels, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = fc.feat_channels
        layers.append(nn.Conv2d(c_in, 5 + n_types, 1))
        self.net = nn.Sequential(*layers)
        gh, gw = grid
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        centres = torch.stack([(2 * cols + 1) / gw - 1, (2 * rows + 1) / gh - 1], -1)
        self.register_buffer("cell_centres", centres.reshape(-1, 2).float())  # (N, 2) x, y
        self.register_buffer("cell_extent", torch.tensor([2 / gw, 2 / gh]))   # (2,)

    def inputs(self, frames: np.ndarray, data: DataConfig) -> np.ndarray:
        """The network's inputs (B, 3, h, w) uint8 of native frames (B, H, W, 3): their crop as
        it is, or SPACE's resized input."""
        if not self.native:
            return preprocess(frames, data)
        top, bottom, left, right = crop_box(data, frames.shape[1:])
        return np.ascontiguousarray(frames[:, top:bottom, left:right].transpose(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)                     # (B, N, 5 + k)

    def boxes(self, out: torch.Tensor, cells: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres in [-1, 1] and sizes as a fraction of the image side (..., 2) of the
        network's outputs (..., N, 5 + k), or of rows (M, 5 + k) of grid ``cells`` (M,)."""
        base = self.cell_centres if cells is None else self.cell_centres[cells]
        return (base + out[..., 1:3] * self.cell_extent,
                torch.exp(out[..., 3:5]) * self.cell_extent / 2)

    def targets(self, centre: torch.Tensor, size: torch.Tensor, cells: torch.Tensor
                ) -> torch.Tensor:
        """The offsets and log sizes (M, 4) the network should give for boxes ``centre`` and
        ``size`` (M, 2), as SPACE gives them, of grid cells ``cells`` (M,)."""
        offset = (centre - self.cell_centres[cells]) / self.cell_extent
        return torch.cat([offset, torch.log(size.clamp(min=1e-4) * 2 / self.cell_extent)], 1)

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, threshold: float
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per image: (prob (M,), centre (M, 2), size (M, 2), type (M,)) of the cells whose
        presence probability exceeds ``threshold``, as numpy arrays (the few objects of a
        frame cost less there than as tensors)."""
        out = self(x).cpu().numpy()                                       # (B, N, 5 + k)
        centres = self.cell_centres.cpu().numpy()
        extent = self.cell_extent.cpu().numpy()
        prob = 1 / (1 + np.exp(-out[..., 0]))                             # (B, N)
        found = []
        for p, rows in zip(prob, out):
            cells = np.flatnonzero(p > threshold)
            rows = rows[cells]                                            # (M, 5 + k)
            found.append((p[cells], centres[cells] + rows[:, 1:3] * extent,
                          np.exp(rows[:, 3:5]) * extent / 2, rows[:, 5:].argmax(1)))
        return found


def first_stride(cell: int) -> int | None:
    """The first layer's stride for cells of ``cell`` pixels (the rest halves down to one
    cell): 4, 5, 3 or 2 times a power of 2; None if ``cell`` is none of these."""
    return next((f for f in (4, 5, 3, 2) if cell % f == 0 and not (cell // f) & (cell // f - 1)),
                None)


def native_cell(data: DataConfig, grid: tuple[int, int], frame_shape: tuple[int, ...]
                ) -> int | None:
    """The cell size in native pixels where the crop of a frame of ``frame_shape`` divides
    into square grid cells the student can take as they are; None otherwise."""
    top, bottom, left, right = crop_box(data, frame_shape)
    (h, w), (gh, gw) = (bottom - top, right - left), grid
    if h % gh or w % gw or h // gh != w // gw:
        return None
    return h // gh if first_stride(h // gh) is not None else None


def build_fast(cfg: SpaceConfig, model: Any, n_types: int, native: int | None = None
               ) -> FastNet:
    """A fresh student for the SPACE ``model`` of ``cfg`` with ``n_types`` types, on the
    native crop with cells of ``native`` pixels, or (None) on SPACE's resized input."""
    if native is not None:
        return FastNet(cfg.fast, cfg.model.grid, native, n_types, native=True)
    ch, cw = model.fg.cell
    if ch != cw:
        raise UserError(f"the fast student needs square grid cells, not {ch}x{cw}")
    return FastNet(cfg.fast, cfg.model.grid, ch, n_types)


def cell_targets(detector: Any, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the SPACE ``detector`` (a :class:`space.model.SpaceDetector`) gives on ``inputs``
    (N, 3, h, w) uint8, in batches: ``prob`` (N, cells), and for the cells above its lowest
    threshold their ``frame`` and ``cell`` indices (M,), ``centre``/``size`` (M, 2) and
    ``type`` (M,)."""
    cfg = detector.cfg
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("prob", "frame", "cell", "centre",
                                                          "size", "type")}
    for start in range(0, len(inputs), cfg.detect.batch_size):
        x = inputs[start:start + cfg.detect.batch_size].float() / 255
        found = detector.model.cell_objects(x, detector.lowest, cfg.detect.alpha_boxes)
        frame, cell = found["keep"].nonzero(as_tuple=True)
        types = detector.types.predict(found["z_what"].double().cpu().numpy())
        out["prob"].append(found["prob"])
        out["frame"].append(frame + start)
        out["cell"].append(cell)
        out["centre"].append(found["centre"])
        out["size"].append(found["size"])
        out["type"].append(torch.from_numpy(types).to(inputs.device))
    return {k: torch.cat(v) for k, v in out.items()}


def batch_targets(target: dict[str, torch.Tensor], frames: torch.Tensor, moves: torch.Tensor,
                  grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The targets of a batch of frames ``frames`` (B,) (indices into ``target``, repeats
    allowed), each picture moved by ``moves`` (B, 2) (model coordinates, x first; zero where
    unmoved): ``prob`` (B, N), and per object the batch row ``b``, ``cell``, ``centre``,
    ``size`` and ``type``. A moved frame's objects move with it, into the cells they land in;
    those moved out of the picture are dropped."""
    j, b = (target["frame"][:, None] == frames[None, :]).nonzero(as_tuple=True)
    moved = (moves != 0).any(1)                                           # (B,)
    centre = target["centre"][j] + moves[b]
    gh, gw = grid
    col = torch.floor((centre[:, 0] + 1) / 2 * gw).long()
    row = torch.floor((centre[:, 1] + 1) / 2 * gh).long()
    inside = (col >= 0) & (col < gw) & (row >= 0) & (row < gh)
    cell = torch.where(moved[b], row * gw + col, target["cell"][j])
    keep = inside | ~moved[b]
    j, b, cell, centre = j[keep], b[keep], cell[keep], centre[keep]
    prob = target["prob"][frames].clone()                                 # (B, N)
    prob[moved] = 0.0
    pick = moved[b]
    prob[b[pick], cell[pick]] = target["prob"][target["frame"][j[pick]], target["cell"][j[pick]]]
    return {"prob": prob, "b": b, "cell": cell, "centre": centre, "size": target["size"][j],
            "type": target["type"][j]}


def fast_loss(net: FastNet, out: torch.Tensor, batch: dict[str, torch.Tensor],
              box_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Per frame: the presence cross-entropy against SPACE's probability over every cell, plus
    the box error (times ``box_weight``) and the type cross-entropy at the cells SPACE found
    something in (``batch``: :func:`batch_targets`)."""
    pres = F.binary_cross_entropy_with_logits(out[..., 0], batch["prob"], reduction="sum")
    picked = out[batch["b"], batch["cell"]]                               # (M, 5 + k)
    box = F.smooth_l1_loss(picked[:, 1:5], net.targets(batch["centre"], batch["size"],
                                                       batch["cell"]), reduction="sum")
    kind = F.cross_entropy(picked[:, 5:], batch["type"], reduction="sum")
    n = len(out)
    return (pres + box_weight * box + kind) / n, {
        "presence": pres.item() / n, "box": box.item() / n, "type": kind.item() / n}


def agreement(net: FastNet, inputs: torch.Tensor, target: dict[str, torch.Tensor],
              threshold: float) -> dict[str, float]:
    """How the student's objects above ``threshold`` match SPACE's cell by cell on ``inputs``:
    the share of SPACE's present cells the student finds, of the student's it shares with
    SPACE, the share of shared cells typed alike and their mean centre gap (pixels of the
    model input)."""
    with torch.no_grad():
        out = torch.cat([net(inputs[i:i + 256].float() / 255) for i in range(0, len(inputs), 256)])
    mine = torch.sigmoid(out[..., 0]) > threshold
    theirs = target["prob"] > threshold
    both = mine & theirs
    strong = target["prob"][target["frame"], target["cell"]] > threshold
    shared = both[target["frame"], target["cell"]] & strong
    f, c = target["frame"][shared], target["cell"][shared]
    centre, _ = net.boxes(out[f, c], c)
    side = torch.tensor(inputs.shape[-1:-3:-1], dtype=torch.float32,
                        device=out.device)                                # (w, h)
    gap = ((centre - target["centre"][shared]) * side / 2).norm(dim=1)
    return {"recall": round(float(both.sum() / theirs.sum().clamp(min=1)), 4),
            "precision": round(float(both.sum() / mine.sum().clamp(min=1)), 4),
            "type_agreement": round(float((out[f, c, 5:].argmax(-1) == target["type"][shared])
                                          .float().mean()) if len(f) else 0.0, 4),
            "centre_gap_px": round(float(gap.mean()) if len(f) else 0.0, 3)}


def train_fast(detector: Any, frames: Run, cfg: SpaceConfig, device: str = "cpu",
               writer: Any | None = None) -> tuple[FastNet, dict[str, Any]]:
    """Fit a student of the SPACE ``detector`` on the training frames of ``frames`` (``cfg.fast``
    says how); returns it and its figures, agreement with SPACE on the validation frames
    included."""
    if detector.types is None:
        raise UserError("the SPACE checkpoint has no fitted types to teach the fast student")
    fc = cfg.fast
    seed_everything(cfg.seed)
    records = select_records(frames.path, "train", fc.frames)
    natives = load_frames(frames.path, records)                           # (N, H, W, 3)
    held = select_records(frames.path, "validation")
    net = build_fast(cfg, detector.model, len(detector.types.centroids),
                     native_cell(cfg.data, cfg.model.grid, natives.shape[1:])).to(device)
    t0 = time.perf_counter()
    target = cell_targets(detector, torch.from_numpy(preprocess(natives, cfg.data)).to(device))
    inputs = torch.from_numpy(net.inputs(natives, cfg.data)).to(device)  # (N, 3, h, w)
    if held:
        held_natives = load_frames(frames.path, held)
        held_target = cell_targets(detector, torch.from_numpy(
            preprocess(held_natives, cfg.data)).to(device))
        held_inputs = torch.from_numpy(net.inputs(held_natives, cfg.data)).to(device)
    print(f"[space] SPACE's cells of {len(inputs)} training frames read in "
          f"{time.perf_counter() - t0:.1f} s: {len(target['frame']) / len(inputs):.2f} objects "
          f"per frame; the student reads " + ("the native crop" if net.native else
                                                "SPACE's input"), flush=True)
    opt = torch.optim.Adam(net.parameters(), lr=fc.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, fc.steps)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    window: list[dict[str, float]] = []
    for step in range(1, fc.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(inputs), fc.batch_size)).to(device)
        if not fc.augment:
            x, moves = inputs[idx].float() / 255, torch.zeros(len(idx), 2, device=device)
        else:
            x, moves = changed(net, natives[idx.cpu().numpy()], cfg, rng)
            x, moves = x.to(device), moves.to(device)
        batch = batch_targets(target, idx, moves, cfg.model.grid)
        loss, parts = fast_loss(net, net(x), batch, fc.box_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        window.append(parts)
        if step % 250 == 0 or step == fc.steps:
            means = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            window.clear()
            if writer is not None:
                for key, value in means.items():
                    writer.add_scalar(f"fast/{key}", value, step)
            print(f"[space] fast step {step}/{fc.steps} " +
                  " ".join(f"{k} {v:.3f}" for k, v in means.items()), flush=True)
    net.eval()
    info: dict[str, Any] = {"steps": fc.steps, "train_seconds": round(time.perf_counter() - t0, 1),
                            "frames": len(inputs)}
    if held:
        info["validation"] = agreement(net, held_inputs, held_target, cfg.detect.threshold)
    return net, info


def changed(net: FastNet, natives: np.ndarray, cfg: SpaceConfig, rng: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's inputs (B, 3, h, w) in [0, 1] of native frames (B, H, W, 3), each shown with
    probability ``fast.augment`` under one of the transfer shifts
    (:func:`space.data.random_shift`, sized by ``train.augment_noise`` and
    ``train.augment_shift``), and how far each picture moved (B, 2) in model coordinates."""
    top, bottom, left, right = crop_box(cfg.data, natives.shape[1:])
    frames, moves = [], np.zeros((len(natives), 2), np.float32)
    for i, frame in enumerate(natives):
        if rng.random() < cfg.fast.augment:
            shift = random_shift(rng, cfg.train.augment_noise, cfg.train.augment_shift)
            frame = shift(frame, rng)
            if shift.kind == "shift":
                moves[i] = (2 * shift.value[0] / (right - left), 2 * shift.value[1] / (bottom - top))
        frames.append(frame)
    x = torch.from_numpy(net.inputs(np.stack(frames), cfg.data)).float() / 255
    return x, torch.from_numpy(moves)


def fast_payload(net: FastNet, info: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint stores of a student: its weights, type count and figures."""
    return {"state": net.state_dict(), "n_types": int(net.net[-1].out_channels - 5),
            "native_cell": net.cell if net.native else None, "info": info}


def load_fast(payload: dict[str, Any], cfg: SpaceConfig, model: Any) -> FastNet:
    """The student stored by :func:`fast_payload` for the SPACE ``model`` of ``cfg``."""
    net = build_fast(cfg, model, payload["n_types"], payload.get("native_cell"))
    net.load_state_dict(payload["state"])
    return net.eval()


def fast_config(payload: dict[str, Any], overrides: dict[str, Any]) -> SpaceConfig:
    """The checkpoint's config with ``overrides``, which may only change ``fast.*``, ``name``,
    ``seed``, ``device`` and ``num_threads``."""
    bad = [k for k in overrides if not k.startswith(("fast.", "name", "seed", "device",
                                                     "num_threads"))]
    if bad:
        raise UserError(f"--task fast can only override fast.*, name, seed, device and "
                        f"num_threads, not {', '.join(bad)}")
    return config_from(payload["config"], overrides)
