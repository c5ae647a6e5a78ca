"""Every user mistake, in every stage, ends in one clear message and exit code 2: no
traceback, no half-made run. One parametrized case per class of mistake (a value out of
range, a value of the wrong kind in a config file, a path of the wrong kind, a broken run
folder, inputs of two different games), run through each stage's real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diffses.cli import main, parse, yaml_values
from diffses.dataset import DatasetConfig, run as build_dataset
from diffses.distill import DistillConfig, run as distill
from diffses.figures import FiguresConfig, run as figures
from diffses.finetune import FinetuneConfig, run as finetune
from diffses.frames import FramesConfig, run as save_frames
from diffses.pretrained import ShipTeacherConfig, run as ship_teacher
from diffses.report import ReportConfig, run as report
from diffses.results import ResultsConfig, run as results
from diffses.teacher import TeacherConfig, run as train_teacher
from diffses.transfer import TransferConfig, run as transfer
from diffses.tune import TuneConfig, run as tune
from diffses.video import PlayConfig, run as play

ROOT = Path(__file__).resolve().parent.parent
PONG = str(ROOT / "pretrained" / "pong_teacher")
BREAKOUT = str(ROOT / "pretrained" / "breakout_teacher")
DATASET = str(ROOT / "sample.json")
PONG_POLICY = str(ROOT / "docs" / "policies" / "pong_tracking.json")
BREAKOUT_POLICY = str(ROOT / "docs" / "policies" / "breakout_tracking.json")
PNG = str(ROOT / "pretrained" / "pong_teacher" / "learning_curve.png")

STAGES = {"teacher": (TeacherConfig, train_teacher), "frames": (FramesConfig, save_frames),
          "dataset": (DatasetConfig, build_dataset), "distill": (DistillConfig, distill),
          "tune": (TuneConfig, tune), "finetune": (FinetuneConfig, finetune),
          "play": (PlayConfig, play), "transfer": (TransferConfig, transfer),
          "ship": (ShipTeacherConfig, ship_teacher), "results": (ResultsConfig, results),
          "report": (ReportConfig, report), "figures": (FiguresConfig, figures)}

#: Yaml config files with one bad value each, by name.
CONFIGS = {"const_range": "const_range: 3\n", "generations": "generations: [1, 2]\n",
           "population": "population_size: 50.5\n", "mode": "mode: classifer\n",
           "search": "search: gradiant\n", "lr_list": "learning_rate: [0.1]\n",
           "bad_yaml": "generations: [1,\n", "flat": "atari-cpu: 3\n"}

CASES = [
    # values out of range, or of the wrong kind, on the command line
    ("teacher", ["--n-envs", "0"], "--n-envs must be at least 1"),
    ("teacher", ["--hyperparams", "n_steps=-4"], "n_steps must be at least 1"),
    ("teacher", ["--hyperparams", "gamma=1.5"], "gamma must be in (0, 1]"),
    ("teacher", ["--hyperparams", "learning_rate:abc"], "learning_rate must be a number"),
    ("teacher", ["--hyperparams", "clip_range=lin_-1"], "clip_range must be > 0"),
    ("teacher", ["--keep-checkpoints", "-1"], "--keep-checkpoints must be at least 1"),
    ("teacher", ["--eval-freq", "-5"], "--eval-freq must be >= 0"),
    ("teacher", ["--eval-max-steps", "0"], "--eval-max-steps must be at least 1"),
    ("teacher", ["--device", "tpu"], "unknown device 'tpu'"),
    ("teacher", ["--device", "cuda:x"], "unknown device 'cuda:x'"),
    ("frames", ["--policy", "random", "--n-frames", "-3"], "--n-frames and --every"),
    ("dataset", ["--teacher", PONG, "--gate", "-5"], "--gate must be"),
    ("dataset", ["--teacher", PONG, "--max-missing", "-2"], "--max-missing must be >= 0"),
    ("dataset", ["--teacher", PONG, "--detector", "ocatri"], "did you mean ocatari"),
    ("distill", ["--dataset", DATASET, "--max-slots", "0"], "--max-slots must be at least 1"),
    ("distill", ["--dataset", DATASET, "--n-jobs", "0"], "--n-jobs must be"),
    ("distill", ["--dataset", DATASET, "--eval-episodes", "-2"], "--eval-episodes must be"),
    ("distill", ["--dataset", DATASET, "--eval-max-steps", "0"], "--eval-max-steps must be"),
    ("distill", ["--dataset", DATASET, "--device", "tpu"], "unknown device 'tpu'"),
    ("tune", ["--dataset", DATASET, "--timeout", "-5"], "--timeout must be > 0"),
    ("finetune", ["--policy", PONG_POLICY, "--n-jobs", "0"], "--n-jobs must be"),
    ("finetune", ["--policy", PONG_POLICY, "--learning-rate", "-1"], "learning_rate and critic_learning_rate must be > 0"),
    ("finetune", ["--policy", PONG_POLICY, "--gamma", "1.5"], "gamma must be in (0, 1]"),
    ("finetune", ["--policy", PONG_POLICY, "--clip-range", "-0.2"], "clip_range must be > 0"),
    ("play", ["--policy", PONG_POLICY, "--max-steps", "0"], "--max-steps must be at least 1"),
    ("transfer", ["--teacher", PONG, "--policies", PONG_POLICY, "--targets", "mode=99"],
     "mode"),
    ("transfer", ["--teacher", PONG, "--policies", PONG_POLICY, "--targets", "noise=-5"],
     "noise"),
    ("transfer", ["--teacher", PONG, "--policies", PONG_POLICY, "--targets", "difficulty=9"],
     "has difficulties 0, 1"),
    ("transfer", ["--teacher", PONG, "--policies", PONG_POLICY, "--targets",
                  "background=300,0,0"], "in [0, 255]"),
    ("play", ["--policy", PONG_POLICY, "--detector", "ocatri"], "did you mean ocatari"),
    ("play", ["--policy", PONG_POLICY, "--video", "{file}/game.gif"], "is a file"),
    ("finetune", ["--policy", PONG_POLICY, "--device", "tpu"], "unknown device 'tpu'"),
    ("teacher", ["--hyperparams", "batch_size=1"], "batch_size must be at least 2"),
    ("transfer", ["--teacher", PONG, "--policies", PONG_POLICY, "--max-steps", "-1"],
     "--max-steps must be at least 1"),
    ("ship", ["--teacher", PONG, "--out", "{tmp}/ship", "--max-steps", "-3"],
     "--max-steps must be at least 1"),
    ("results", ["--teacher", PONG, "--eval-episodes", "0"], "--eval-episodes"),
    # config files: not yaml, a folder, a value of the wrong kind or not among the choices
    ("distill", ["--dataset", DATASET, "--config", PNG], "cannot be read as yaml"),
    ("distill", ["--dataset", DATASET, "--config", "{tmp}"], "is a folder"),
    ("distill", ["--dataset", DATASET, "--config", "{bad_yaml}"], "is not valid yaml"),
    ("distill", ["--dataset", DATASET, "--config", "{const_range}"],
     "const_range takes a list of numbers, not 3"),
    ("distill", ["--dataset", DATASET, "--config", "{generations}"],
     "generations must be an integer, not [1, 2]"),
    ("distill", ["--dataset", DATASET, "--config", "{population}"],
     "population_size must be an integer, not 50.5"),
    ("distill", ["--dataset", DATASET, "--config", "{mode}"], "mode must be one of"),
    ("tune", ["--dataset", DATASET, "--distill-config", PNG], "cannot be read as yaml"),
    ("finetune", ["--policy", PONG_POLICY, "--config", "{search}"], "search must be one of"),
    ("finetune", ["--policy", PONG_POLICY, "--config", "{lr_list}"],
     "learning_rate must be a number"),
    ("teacher", ["--hyperparams-file", "{tmp}/none.yml"], "--hyperparams-file"),
    ("teacher", ["--hyperparams-file", PNG], "cannot be read as yaml"),
    ("teacher", ["--hyperparams-file", "{tmp}"], "is a folder"),
    ("teacher", ["--hyperparams-file", "{bad_yaml}"], "is not valid yaml"),
    ("teacher", ["--hyperparams-file", "{flat}"], "entry 'atari-cpu' must be a mapping"),
    # paths of the wrong kind, broken run folders, files that are not what they should be
    ("teacher", ["--runs-dir", "{file}"], "is a file"),
    ("frames", ["--teacher", "{no_model}", "--n-frames", "2"], "has no model.zip"),
    ("frames", ["--teacher", "{not_zip}", "--n-frames", "2"], "not a readable"),
    ("frames", ["--teacher", "{no_env}", "--n-frames", "2"], "names no env_id"),
    ("frames", ["--policy", "random", "--env", "ALE/Pong-v5", "--n-frames", "2",
                "--out", "{file}"], "--out"),
    ("dataset", ["--teacher", "{no_model}", "--episodes", "1"], "has no model.zip"),
    ("dataset", ["--teacher", "{not_zip}", "--episodes", "1"], "not a readable"),
    ("dataset", ["--teacher", "{no_env}", "--episodes", "1"], "names no env_id"),
    ("dataset", ["--teacher", PONG, "--episodes", "1", "--out", "{tmp}"], "is a folder"),
    ("dataset", ["--teacher", PONG, "--episodes", "1", "--out", "{file}/d.json"], "is a file"),
    ("frames", ["--policy", "random", "--env", "ALE/Pong-v5", "--n-frames", "2",
                "--out", "{file}/frames"], "is a file"),
    ("finetune", ["--policy", str(ROOT / "sample.meta.json")], "not a policy"),
    ("play", ["--policy", str(ROOT / "sample.meta.json")], "not a policy"),
    ("ship", ["--teacher", "{no_env}", "--out", "{tmp}/ship"], "names no env_id"),
    ("report", ["--finetune", PONG], "is a 'teacher' run, expected a 'finetune' run"),
    ("figures", ["--video-steps", "-3"], "--video-steps must be at least 1"),
    ("figures", ["--video-policy", DATASET], "not a policy"),
    ("figures", ["--space-eval", "{tmp}"], "holds no PNG"),
    ("figures", ["--teachers", "{file}"], "is not a run folder"),
    # inputs of two different games
    ("distill", ["--dataset", DATASET, "--eval-episodes", "1", "--teacher", BREAKOUT],
     "plays Breakout"),
    ("play", ["--policy", PONG_POLICY, "--teacher", BREAKOUT, "--teacher-too"],
     "plays Breakout"),
    ("transfer", ["--teacher", PONG, "--policies", BREAKOUT_POLICY], "plays Breakout"),
    # a dataset whose objects another detector named
    ("finetune", ["--policy", PONG_POLICY, "--dataset", "{learned_types}"],
     "names its object types"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Paths the cases name: a plain file, broken teacher folders, bad config files."""
    tmp = tmp_path_factory.mktemp("mistakes")
    (tmp / "file.txt").write_text("not a folder\n")
    out = {"file": str(tmp / "file.txt")}
    for name, change in [("no_model", "model"), ("not_zip", "zip"), ("no_env", "env")]:
        folder = tmp / name
        folder.mkdir()
        manifest = json.loads((Path(PONG) / "manifest.json").read_text())
        if change == "env":
            del manifest["env_id"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
        if change == "zip":
            (folder / "model.zip").write_text("not a zip file\n")
        elif change == "env":
            shutil.copy(Path(PONG) / "model.zip", folder / "model.zip")
        out[name] = str(folder)
    for name, text in CONFIGS.items():
        (tmp / f"{name}.yaml").write_text(text)
        out[name] = str(tmp / f"{name}.yaml")
    meta = json.loads((ROOT / "sample.meta.json").read_text())
    meta["type_names"] = {t: f"type{t}" for t in meta["type_names"]}
    shutil.copy(DATASET, tmp / "learned.json")
    (tmp / "learned.meta.json").write_text(json.dumps(meta))
    out["learned_types"] = str(tmp / "learned.json")
    return out


@pytest.mark.parametrize("stage, argv, message", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_mistake_is_one_clear_message_and_exit_2(places, tmp_path, capsys, stage, argv,
                                                   message):
    cls, run = STAGES[stage]
    runs = tmp_path / "runs"
    argv = [a.format(tmp=tmp_path, **places) for a in argv]
    if "--runs-dir" not in argv and stage != "ship":
        argv += ["--runs-dir", str(runs)]
    try:
        code = main(cls, run, argv, prog=stage)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    made = [m for m in runs.rglob("manifest.json")] if runs.is_dir() else []
    assert made == [], f"a run folder was left behind: {made}"


def test_a_config_file_is_read_as_its_flags_are(tmp_path):
    """Values of a yaml config file take the flags' types: yaml's ``1e1`` (a string to yaml)
    is an integer, a list is a tuple of the option's kind, a choice is kept."""
    path = tmp_path / "distill.yaml"
    path.write_text("generations: 1e1\nconst_range: [-1, 2]\nmode: classifier\n"
                    "max_slots: null\n")
    values = yaml_values(DistillConfig, path)
    assert values == {"generations": 10, "const_range": (-1.0, 2.0), "mode": "classifier",
                      "max_slots": None}
    assert isinstance(values["generations"], int)
    cfg = parse(DistillConfig, ["--config", str(path), "--generations", "3"])
    assert cfg.gp.generations == 3 and cfg.gp.const_range == (-1.0, 2.0)
