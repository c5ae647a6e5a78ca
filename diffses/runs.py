"""Run folders and manifests.

A run lives in ``<runs_dir>/<stage>/<env-slug>__<name>__s<seed>__<YYYYmmdd-HHMMSS>/`` and
holds ``manifest.json``: stage, resolved config, seed, git commit, package versions, inputs
and outputs with their sha256, summary metrics and status. Downstream stages take a run
folder or ``latest`` and read what they need from its manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, TypeVar

from diffses.cli import known_values
from diffses.errors import UserError
from diffses.io import atomic_write_json, check_folder_path, read_json, sha256_file

T = TypeVar("T")
MANIFEST = "manifest.json"
TRACKED_PACKAGES = ("torch", "numpy", "gymnasium", "ale-py", "stable-retro", "stable-baselines3",
                    "ocatari", "gplearn", "scikit-learn", "optuna", "opencv-python-headless")


def env_slug(env_id: str) -> str:
    """A file-name-safe form of an env id: ``ALE/Pong-v5`` -> ``ALE-Pong-v5``."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in env_id)


def git_commit() -> str | None:
    """The commit of the source tree this code runs from, if it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes a run's results."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths turned into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class Run:
    """One run folder and its manifest; every change to the manifest is written atomically."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def create(cls, runs_dir: str | Path, stage: str, env_id: str, name: str, seed: int,
               config: Any, path: str | Path | None = None) -> "Run":
        """Make a new run folder (or use ``path``) and write its first manifest."""
        now = dt.datetime.now()
        if path is None:
            check_runs_dir(runs_dir)
            folder = f"{env_slug(env_id)}__{name}__s{seed}__{now:%Y%m%d-%H%M%S}"
            path = Path(runs_dir) / stage / folder
            suffix = 1
            while path.exists():
                path = Path(runs_dir) / stage / f"{folder}-{suffix}"
                suffix += 1
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "stage": stage,
            "env_id": env_id,
            "name": name,
            "seed": seed,
            "status": "running",
            "created": now.isoformat(timespec="seconds"),
            "updated": now.isoformat(timespec="seconds"),
            "command": sys.argv,
            "config": jsonable(config),
            "git_commit": git_commit(),
            "packages": package_versions(),
            "inputs": {},
            "outputs": {},
            "summary": {},
        }
        run = cls(path, manifest)
        run.save()
        return run

    @classmethod
    def load(cls, path: str | Path, stage: str | None = None) -> "Run":
        """Open an existing run folder; refuse a folder that is not a run of ``stage``."""
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise UserError(f"{path} is not a run folder (no {MANIFEST} in it)")
        manifest = read_json(mpath)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("env_id"), str):
            raise UserError(f"{mpath} is not a run manifest (it names no env_id)")
        if stage is not None and manifest.get("stage") != stage:
            raise UserError(f"{path} is a '{manifest.get('stage')}' run, expected a '{stage}' run")
        return cls(path, manifest)

    @property
    def env_id(self) -> str:
        return self.manifest["env_id"]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    def save(self) -> None:
        """Write the manifest atomically."""
        self.manifest["updated"] = dt.datetime.now().isoformat(timespec="seconds")
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def add_input(self, role: str, path: str | Path) -> None:
        """Record an upstream file this run read, with its sha256."""
        path = Path(path)
        self.manifest["inputs"][role] = {"path": str(path), "sha256": sha256_file(path)}

    def add_output(self, path: str | Path) -> None:
        """Record a file this run wrote (path relative to the run folder), with its sha256."""
        path = Path(path)
        rel = path.relative_to(self.path) if path.is_relative_to(self.path) else path
        self.manifest["outputs"][str(rel)] = sha256_file(self.path / rel)

    @contextlib.contextmanager
    def failing(self) -> Iterator["Run"]:
        """Mark the run ``failed`` (with the error) if the body raises; a kill leaves it
        ``running``, which ``--resume`` continues."""
        try:
            yield self
        except Exception as err:
            self.manifest.update(status="failed", error=f"{type(err).__name__}: {err}")
            self.save()
            raise

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Mark the run complete with its summary metrics."""
        if summary:
            self.manifest["summary"].update(jsonable(summary))
        self.manifest["status"] = "complete"
        self.save()


def find_runs(runs_dir: str | Path, stage: str, env_id: str | None = None,
              complete_only: bool = True) -> list[Run]:
    """Runs of a stage, oldest first (optionally only those for ``env_id``)."""
    root = Path(runs_dir) / stage
    runs = []
    for mpath in root.glob(f"*/{MANIFEST}"):
        try:
            run = Run.load(mpath.parent, stage)
        except UserError:
            continue
        if complete_only and run.manifest.get("status") != "complete":
            continue
        if env_id is not None and run.env_id != env_id:
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: (r.manifest.get("created", ""), r.path.name))


def earlier_run(runs_dir: str | Path, stage: str, config: dict[str, Any], since: str,
                ignore: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
                ) -> Run | None:
    """The newest run of ``stage``, complete or left ``running`` by a kill, created at or
    after ``since`` (an ISO time) with ``config`` as its stored config, or None. Keys in
    ``ignore`` aside; with ``defaults`` (every option's default), only those options count
    and one the stored config lacks counts as its default."""
    def comparable(values: dict[str, Any]) -> dict[str, Any]:
        full = {**jsonable(defaults or {}), **jsonable(values)}
        keys = set(defaults) if defaults else set(full)
        return {k: full.get(k) for k in keys if k not in ignore}
    want = comparable(config)
    found = [run for run in find_runs(runs_dir, stage, complete_only=False)
             if run.manifest.get("status") in ("running", "complete")
             and run.manifest.get("created", "") >= since
             and isinstance(run.manifest.get("config"), dict)
             and comparable(run.manifest["config"]) == want]
    return found[-1] if found else None


def check_runs_dir(runs_dir: str | Path) -> None:
    """Refuse a ``--runs-dir`` that is a file (or holds a file where a stage folder goes)."""
    check_folder_path(runs_dir, "--runs-dir")


def resolve_run(ref: str | Path, stage: str, runs_dir: str | Path = "runs",
                env_id: str | None = None, complete_only: bool = True) -> Run:
    """A run folder path (or a file in one), or ``latest``: the newest complete run of
    ``stage`` (with ``env_id``: of that env id, else of the same game)."""
    if str(ref) == "latest":
        check_runs_dir(runs_dir)
        runs = find_runs(runs_dir, stage, None, complete_only)
        if env_id is not None:
            from diffses.envs import same_game
            runs = [r for r in runs if r.env_id == env_id] or \
                [r for r in runs if same_game(r.env_id, env_id)]
        if not runs:
            where = f" for {env_id}" if env_id else ""
            which = "complete " if complete_only else ""
            raise UserError(f"no {which}'{stage}' run{where} under {Path(runs_dir) / stage}; "
                            f"run that stage first or pass a run folder")
        return runs[-1]
    path = Path(ref)
    if not path.exists():
        raise UserError(f"run folder {path} does not exist")
    if path.is_file() and (path.parent / MANIFEST).is_file():
        path = path.parent  # a file of a run folder, e.g. a shipped teacher's model.zip
    return Run.load(path, stage)


def resume_config(cls: type[T], ref: str | Path, stage: str, runs_dir: str | Path,
                  allow_complete: bool, **now: Any) -> tuple[T, Run]:
    """For ``--resume``: the run ``ref`` names and its stored config of type ``cls``, with
    ``now`` (this call's values: device, progress, a new total, ...) on top. A complete run
    is refused unless ``allow_complete`` (a teacher may be trained further)."""
    run = resolve_run(ref, stage, runs_dir, complete_only=False)
    if run.manifest.get("status") == "complete" and not allow_complete:
        raise UserError(f"run {run.path} is complete; nothing to resume")
    stored = known_values(cls, run.config)
    stored.update(resume=str(run.path), runs_dir=str(runs_dir), **now)
    return cls(**stored), run
