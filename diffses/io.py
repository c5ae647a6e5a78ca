"""Atomic file writes, reading JSON and yaml files, hashing: a crash never leaves a
half-written file behind, and a bad file is an error that names it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import yaml

from diffses.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(path: str | Path, save: Callable[[BinaryIO], Any]) -> Path:
    """Let ``save`` write into memory (``torch.save``, an SB3 model's ``save``, a figure's
    ``savefig``), then write those bytes to ``path`` atomically."""
    buf = io.BytesIO()
    save(buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path, error: type[Exception] = UserError) -> Any:
    """Parse a JSON file; a missing, unreadable or invalid file raises ``error`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file") from None


def read_yaml_mapping(path: str | Path, hint: str = "") -> dict[str, Any]:
    """A yaml config file that holds a mapping (empty: ``{}``); a missing file (``hint`` is
    added to that message), invalid yaml or another kind of document is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist{hint}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid yaml: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, "
                        f"not {type(data).__name__}")
    return data


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class JsonListWriter:
    """Write a JSON list one item at a time; the file appears whole, by a rename, on close.

    Memory stays flat however many items are written. Leaving the ``with`` block by an
    exception removes the partial file, unless ``keep_partial``: then the partial file
    (``.<name>.partial`` beside the target) stays, and a later writer continues it from a
    :meth:`checkpoint` (``resume``), dropping whatever was written after it.
    """

    def __init__(self, path: str | Path, keep_partial: bool = False,
                 resume: dict[str, int] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.keep_partial = keep_partial
        if keep_partial:
            self._tmp = self.path.with_name(f".{self.path.name}.partial")
            if resume is not None:
                self._fh = open(self._tmp, "r+")
                self._fh.truncate(resume["bytes"])
                self._fh.seek(resume["bytes"])
                self.count = resume["count"]
                return
            self._fh = open(self._tmp, "w")
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial",
                                       dir=self.path.parent)
            self._tmp = Path(tmp)
            self._fh = os.fdopen(fd, "w")
        self._fh.write("[")
        self.count = 0

    def write(self, item: Any) -> None:
        self._fh.write(("\n" if self.count == 0 else ",\n") + json.dumps(item, allow_nan=False))
        self.count += 1

    def checkpoint(self) -> dict[str, int]:
        """Flush to disk; a writer given the returned mark resumes right here."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return {"bytes": self._fh.tell(), "count": self.count}

    def __enter__(self) -> "JsonListWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._fh.close()
            if not self.keep_partial:
                self._tmp.unlink(missing_ok=True)
            return
        self._fh.write("\n]\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
