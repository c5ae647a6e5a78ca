"""Atomic file writes, reading JSON and yaml files, hashing: a crash never leaves a
half-written file behind, and a bad file is an error that names it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, TextIO

import yaml

from diffses.errors import UserError


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Let ``write`` write into a temporary file in ``path``'s folder, then rename it to
    ``path``: nothing of it is held in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    return atomic_write_with(path, lambda fh: fh.write(data))


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


#: Characters :func:`iter_json_list` reads at a time, and the most one item may span.
READ_CHARS = 1 << 20
MAX_ITEM_CHARS = 1 << 26
_SPACE = re.compile(r"[ \t\n\r]*")


class _TextWindow:
    """A sliding window over a text file: what is left to parse of what has been read."""

    def __init__(self, fh: TextIO):
        self.fh, self.text, self.pos, self.lines, self.eof = fh, "", 0, 0, False

    def more(self) -> bool:
        """Drop what was parsed and read on; False at the end of the file."""
        if self.eof:
            return False
        piece = self.fh.read(READ_CHARS)
        self.lines += self.text.count("\n", 0, self.pos)
        self.text, self.pos, self.eof = self.text[self.pos:] + piece, 0, not piece
        return not self.eof

    def next_char(self) -> str:
        """Skip white space; the next character ('' at the end of the file)."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos:self.pos + 1]

    def line(self, pos: int) -> int:
        """The file's line number of window position ``pos``."""
        return self.lines + self.text.count("\n", 0, pos) + 1

    def value(self, decoder: json.JSONDecoder) -> Any:
        """Parse the JSON value that starts here (reading on while it is cut off); raises
        ValueError with the decoder's message and line."""
        while True:
            try:
                item, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as err:
                where = f"{err.msg}, line {self.line(err.pos)}"
                if len(self.text) - self.pos > MAX_ITEM_CHARS or not self.more():
                    raise ValueError(where) from None
                continue
            if end == len(self.text) and self.more():
                continue
            self.pos = end
            return item


def iter_json_list(path: str | Path, error: type[Exception] = UserError,
                   noun: str = "item") -> Iterator[Any]:
    """The items of the JSON list in ``path``, parsed one at a time: memory holds one item and
    a read buffer however long the list, whatever the formatting. A missing file, one that is
    not UTF-8 text, not valid JSON or not a list raises ``error`` naming it (and the item)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    decoder = json.JSONDecoder()
    try:
        with open(path, encoding="utf-8") as fh:
            window = _TextWindow(fh)
            if window.next_char() != "[":
                value = read_json(path, error)
                raise error(f"{path}: expected a JSON list of {noun}s at the top level, got "
                            f"{type(value).__name__}")
            window.pos += 1
            index = 0
            if window.next_char() != "]":
                while True:
                    window.next_char()
                    try:
                        item = window.value(decoder)
                    except ValueError as err:
                        raise error(f"{path}: {noun} {index}: not valid JSON ({err})") from None
                    yield item
                    index += 1
                    char = window.next_char()
                    if char == "]":
                        break
                    if char != ",":
                        raise error(f"{path}: not valid JSON (expected ',' or ']' after {noun} "
                                    f"{index - 1}, line {window.line(window.pos)})")
                    window.pos += 1
            window.pos += 1
            if window.next_char():
                raise error(f"{path}: not valid JSON (extra data after the list, line "
                            f"{window.line(window.pos)})")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file") from None


def check_folder_path(path: str | Path, flag: str) -> None:
    """Refuse a folder path (``flag`` names it) that is a file or lies under one."""
    for part in [Path(path), *Path(path).parents]:
        if part.exists():
            if not part.is_dir():
                raise UserError(f"{flag} {path}: {part} is a file; give a folder")
            return


def check_file_path(path: str | Path, flag: str) -> None:
    """Refuse a path for a file to write (``flag`` names it) that is a folder or lies under a
    file."""
    if Path(path).is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path")
    check_folder_path(Path(path).parent, flag)


def read_yaml_mapping(path: str | Path, hint: str = "") -> dict[str, Any]:
    """A yaml config file that holds a mapping (empty: ``{}``); a missing file (``hint`` is
    added to that message), invalid yaml or another kind of document is a UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a folder: give a yaml file{hint}")
    if not path.is_file():
        raise UserError(f"config file {path} does not exist{hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid yaml: {err}") from None
    except (UnicodeDecodeError, OSError) as err:
        raise UserError(f"config file {path} cannot be read as yaml text "
                        f"({type(err).__name__})") from None
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
