"""The detection API every later stage uses: frames (and env info) in, objects out.

A :class:`Detector` turns a batch of native RGB frames into one list of :class:`Detection`
per frame: centre x/y and width/height in native pixels, a type id, a confidence and, for
learned detectors, the ``z_what`` appearance code. Two backends:

- ``ocatari``: OCAtari's RAM objects (perfect perception, for comparison). The env must be
  made with ``ground_truth=True`` so each step's ``info["objects"]`` holds them; type ids are
  the game's object categories in OCAtari's order, so an id always names the same category.
- a SPACE run folder or checkpoint file: the trained detector, types from k-means on z_what;
  it lives in the ``space`` package, which the core reaches only through
  :func:`load_checkpoint`.

``load_detector`` picks the backend from a string; ``Detector.env_kwargs`` says what the env
factory must add to ``info`` for it.
"""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diffses.errors import UserError
from diffses.runs import resolve_run

OCATARI = "ocatari"
#: the learned detector's class, ``module:class``; see :func:`load_checkpoint`
CHECKPOINT_BACKEND = "space.model:SpaceDetector"


@dataclass(frozen=True)
class Detection:
    """One detected object: centre and size in native pixels, type id, confidence, z_what."""

    x: float
    y: float
    w: float
    h: float
    type: int
    confidence: float = 1.0
    z_what: np.ndarray | None = field(default=None, compare=False, repr=False)


class Detector(ABC):
    """Detects objects in batches of native RGB frames."""

    #: a short name recorded in manifests (``ocatari`` or the SPACE run folder)
    name: str
    #: type id -> readable name
    type_names: dict[int, str]
    #: keyword arguments :func:`diffses.envs.make_env` needs for this detector's inputs
    env_kwargs: dict[str, Any]
    #: the env id a learned detector was trained on, when its checkpoint records it
    env_id: str | None = None
    #: learned type id -> the ground-truth class it matched when evaluated (empty: unnamed)
    classes: dict[int, str] = {}
    #: steps the tracker keeps reporting an object this detector missed, at its predicted
    #: place (a learned detector drops small objects for single frames; RAM objects: 0)
    coast: int = 0
    #: detections less confident than this are weak: they only continue a track (RAM: 0)
    confirm: float = 0.0

    @abstractmethod
    def detect(self, frames: np.ndarray, infos: Sequence[dict[str, Any]] | None = None
               ) -> list[list[Detection]]:
        """Objects per frame. ``frames``: (B, H, W, 3) uint8 RGB; ``infos``: env infos."""

    def confident(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections of one frame that are not weak (at least :attr:`confirm`)."""
        return [d for d in detections if d.confidence >= self.confirm]


def names_types_alike(layout_types: dict[int, str], names: dict[int, str]) -> bool:
    """Whether ``names`` (type id -> name) names every type of a layout as the layout does."""
    return all(names.get(t) == n for t, n in layout_types.items())


class NamedDetector(Detector):
    """A learned detector seen through a policy's type ids: each learned type becomes the
    layout type of the class it matched (several learned types may share one); detections of
    the other types are dropped."""

    def __init__(self, inner: Detector, type_map: dict[int, int], type_names: dict[int, str]):
        self.inner, self.type_map, self.type_names = inner, dict(type_map), dict(type_names)
        self.name, self.env_kwargs, self.env_id = inner.name, inner.env_kwargs, inner.env_id
        self.coast, self.confirm = inner.coast, inner.confirm

    def detect(self, frames: np.ndarray, infos: Sequence[dict[str, Any]] | None = None
               ) -> list[list[Detection]]:
        return [[replace(d, type=self.type_map[d.type]) for d in dets if d.type in self.type_map]
                for dets in self.inner.detect(frames, infos)]


def detector_for(layout_types: dict[int, str], detector: Detector, policy: str,
                 detector_ref: str) -> Detector:
    """The detector a policy reading ``layout_types`` plays with: ``detector`` when it names
    them alike, else ``detector`` with its learned types named by ``classes`` when they cover
    every type the policy reads (an ocatari policy on a named SPACE detector); anything else
    is refused."""
    if names_types_alike(layout_types, detector.type_names):
        return detector
    by_class = {n: t for t, n in layout_types.items()}
    if detector.classes and set(by_class) <= set(detector.classes.values()):
        return NamedDetector(detector, {k: by_class[c] for k, c in detector.classes.items()
                                        if c in by_class}, layout_types)
    hint = "" if detector.classes else (
        "; a SPACE detector's types get class names from `space/main.py --task eval "
        "--checkpoint CKPT --frames RUN eval.name_types=true`")
    raise UserError(f"policy {policy} reads object types {layout_types} but detector "
                    f"{detector_ref} names them {detector.type_names}; use the detector "
                    f"the policy was distilled with{hint}")


def boxes_from_objects(objects: Sequence[dict[str, Any]], type_ids: dict[str, int],
                       hud: bool = False) -> list[Detection]:
    """OCAtari object dicts (top-left x, y, w, h) -> detections (centres), HUD dropped
    unless ``hud``; categories not in ``type_ids`` are skipped."""
    out = []
    for obj in objects:
        if (obj.get("hud") and not hud) or obj["category"] not in type_ids:
            continue
        out.append(Detection(x=obj["x"] + obj["w"] / 2, y=obj["y"] + obj["h"] / 2,
                             w=float(obj["w"]), h=float(obj["h"]),
                             type=type_ids[obj["category"]]))
    return out


def ocatari_categories(game: str) -> list[str]:
    """A game's OCAtari object categories (HUD ones included) in OCAtari's own order."""
    from ocatari.ram.extract_ram_info import get_max_objects
    return list(dict.fromkeys(get_max_objects(game, True)))


class OcatariDetector(Detector):
    """OCAtari RAM objects as detections, read from ``info["objects"]``."""

    def __init__(self, env_id: str, hud: bool = False):
        from diffses.envs import ocatari_game, resolve_env
        game = ocatari_game(resolve_env(env_id))
        if game is None:
            raise UserError(f"the ocatari detector needs an Atari game OCAtari knows; "
                            f"{env_id} is not one (train a SPACE detector instead)")
        self.name, self.game, self.hud = OCATARI, game, hud
        categories = ocatari_categories(game)
        self.type_ids = {c: i for i, c in enumerate(categories)}
        self.type_names = {i: c for c, i in self.type_ids.items()}
        self.env_kwargs = {"ground_truth": True}

    def detect(self, frames: np.ndarray, infos: Sequence[dict[str, Any]] | None = None
               ) -> list[list[Detection]]:
        if infos is None or any("objects" not in info for info in infos):
            raise ValueError("the ocatari detector reads info['objects']: make the env with "
                             "ground_truth=True (see Detector.env_kwargs)")
        return [boxes_from_objects(info["objects"], self.type_ids, self.hud) for info in infos]


def load_checkpoint(path: str | Path, device: str = "auto", name: str | None = None,
                    overrides: dict[str, Any] | None = None) -> Detector:
    """The learned detector saved in checkpoint file ``path`` (``name`` for manifests, default
    the path; ``overrides``: detection settings such as ``{"detect.coast": 2}``).

    The backend, a :class:`Detector` subclass with a ``load(path, device=..., name=...)``
    classmethod, is named by the string :data:`CHECKPOINT_BACKEND` and imported by that name
    only here, when a checkpoint is read. So the detector package imports the core, the core
    has no import statement for the detector package, and the two form no import cycle.
    """
    module, _, cls = CHECKPOINT_BACKEND.partition(":")
    backend = getattr(importlib.import_module(module), cls)
    return backend.load(path, device=device, name=name, overrides=overrides)


def load_detector(ref: str | Path, env_id: str | None = None, runs_dir: str | Path = "runs",
                  device: str = "auto", hud: bool = False,
                  overrides: dict[str, Any] | None = None) -> Detector:
    """``ocatari`` (needs ``env_id``), a SPACE run folder / ``latest``, or a SPACE checkpoint
    file (such as ``pretrained/space_pong.pt``), with detection settings changed by
    ``overrides``. A detector trained on another game is refused."""
    if str(ref) == OCATARI:
        if env_id is None:
            raise UserError("the ocatari detector needs the env id")
        if overrides:
            raise UserError(f"the ocatari detector has no settings to change "
                            f"({', '.join(overrides)})")
        return OcatariDetector(env_id, hud=hud)
    from diffses.envs import same_game
    if str(ref) != "latest" and not Path(ref).exists():
        hint = " (did you mean ocatari?)" if difflib.get_close_matches(
            str(ref).lower(), [OCATARI], cutoff=0.6) else ""
        raise UserError(f"detector {ref} does not exist: give 'ocatari', a SPACE run folder "
                        f"or checkpoint, or 'latest'{hint}")
    if Path(ref).is_file():
        detector = load_checkpoint(ref, device=device, overrides=overrides)
        trained_on = detector.env_id
    else:
        run = resolve_run(ref, "space", runs_dir, env_id=env_id)
        detector = load_checkpoint(run.path / "checkpoint.pt", device=device,
                                   name=str(run.path), overrides=overrides)
        trained_on = run.env_id
    if env_id is not None and trained_on is not None and not same_game(trained_on, env_id):
        raise UserError(f"detector {ref} was trained on {trained_on}, not {env_id}")
    return detector
