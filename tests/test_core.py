"""Core pieces: atomic writes, manifests, the config-to-CLI builder."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from diffses.cli import arg, main, parse
from diffses.errors import UserError
from diffses.io import atomic_write_bytes, atomic_write_json, sha256_file
from diffses.runs import Run, env_slug, find_runs


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "data.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # not bytes: fails inside the write
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # no temp file left


def test_run_folder_manifest_records_inputs_outputs_and_status(tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(b"abc")
    run = Run.create(tmp_path / "runs", "teacher", "ALE/Pong-v5", "demo", 3, {"x": 1})
    assert run.path.parent.name == "teacher"
    assert run.path.name.startswith("ALE-Pong-v5__demo__s3__")
    assert find_runs(tmp_path / "runs", "teacher") == []  # still running
    run.add_input("source", src)
    (run.path / "out.txt").write_text("result")
    run.add_output(run.path / "out.txt")
    run.finish({"score": 1.5})
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["summary"] == {"score": 1.5}
    assert manifest["inputs"]["source"]["sha256"] == sha256_file(src)
    assert manifest["outputs"]["out.txt"] == sha256_file(run.path / "out.txt")
    assert manifest["packages"]["stable-baselines3"]
    assert [r.path for r in find_runs(tmp_path / "runs", "teacher")] == [run.path]


def test_failed_body_marks_the_run_failed(tmp_path):
    run = Run.create(tmp_path, "frames", "ALE/Pong-v5", "x", 0, {})
    with pytest.raises(ValueError):
        with run.failing():
            raise ValueError("bad frame")
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "bad frame" in manifest["error"]


def test_env_slug():
    assert env_slug("ALE/Pong-v5") == "ALE-Pong-v5"


@dataclass(frozen=True)
class Demo:
    """A demo stage."""

    count: int = arg(3, "how many", aliases=("-n",))
    name: str | None = arg(None, "a name")
    sizes: tuple[int, ...] = arg((1, 2), "sizes")
    greedy: bool = arg(False, "act greedily", negative="--stochastic")

    def __post_init__(self):
        if self.count < 0:
            raise UserError("--count must be >= 0")


def test_cli_builds_flags_from_the_dataclass():
    assert parse(Demo, []) == Demo()
    cfg = parse(Demo, ["-n", "5", "--name", "x", "--sizes", "4", "5", "6", "--greedy"])
    assert cfg == Demo(count=5, name="x", sizes=(4, 5, 6), greedy=True)
    assert parse(Demo, ["--greedy", "--stochastic"][1:]).greedy is False


def test_cli_main_turns_user_errors_into_exit_2(capsys):
    assert main(Demo, lambda cfg: None, ["-n", "-1"]) == 2
    assert "error: --count must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(Demo, lambda cfg: None, ["--count", "many"])
