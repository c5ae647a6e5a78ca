"""Optuna search: real SQLite storage, resume, two workers, best.yaml back into distillation."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Callable

import optuna
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_cli
from diffses.errors import UserError
from diffses.tune import TuneConfig, fail_dead_trials, run, study_storage
from planted import write_planted

TINY = dict(max_population=40, max_generations=3)


@pytest.fixture(scope="module")
def planted_file(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("planted"), n=300)


def _study(run_) -> optuna.Study:
    return optuna.load_study(study_name="distill", storage=run_.manifest["storage"])


def test_resumed_study_adds_trials_and_best_yaml_distils(planted_file, tmp_path):
    first = run(TuneConfig(dataset=str(planted_file), n_trials=2, runs_dir=str(tmp_path), **TINY))
    assert (first.path / "study.db").is_file()
    assert len(_study(first).trials) == 2
    again = run(TuneConfig(dataset=str(planted_file), n_trials=2, runs_dir=str(tmp_path),
                           resume=str(first.path), **TINY))
    assert again.path == first.path
    assert len(_study(first).trials) == 4
    trials = pd.read_csv(first.path / "trials.csv")
    assert len(trials) == 4 and trials["number"].tolist() == [0, 1, 2, 3]
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and 0 <= manifest["summary"]["best_value"] <= 1
    best = yaml.safe_load((first.path / "best.yaml").read_text())
    assert best["population_size"] <= 40 and best["generations"] <= 3
    proc = run_cli("distill_teacher.py", "--config", str(first.path / "best.yaml"),
                   "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    policy_manifest = json.loads(next(tmp_path.glob("distill/*/manifest.json")).read_text())
    assert policy_manifest["config"]["population_size"] == best["population_size"]


def test_two_workers_share_one_storage(planted_file, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    result = run(TuneConfig(dataset=str(planted_file), n_trials=4, n_workers=2,
                            storage=storage, study_name="shared", runs_dir=str(tmp_path), **TINY))
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 4
    assert len({t.number for t in finished}) == len(finished)
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == len(finished)
    assert result.manifest["storage"] == storage


def test_bad_tuning_input_is_refused(planted_file, tmp_path):
    with pytest.raises(UserError, match="--n-trials"):
        TuneConfig(n_trials=0)
    bad = tmp_path / "base.yaml"
    bad.write_text("generation: 3\n")
    proc = run_cli("gplearn_optuna.py", "--dataset", str(planted_file), "--distill-config",
                   str(bad), "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown option(s) generation" in proc.stderr
    proc = run_cli("gplearn_optuna.py", "--dataset", str(planted_file), "--storage",
                   "nosuchdb://x", "--runs-dir", str(tmp_path), "--n-trials", "1")
    assert proc.returncode == 2 and "cannot open the study storage" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_that_never_sent_a_heartbeat_is_failed_once_past_the_grace(tmp_path):
    storage = study_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=1)
    study = optuna.create_study(study_name="s", storage=storage)
    unheard, beating = study.ask(), study.ask()
    storage.record_heartbeat(beating._trial_id)
    assert fail_dead_trials(study, storage, grace=60) == []
    study.tell(beating, 1.0)
    time.sleep(0.05)
    assert fail_dead_trials(study, storage, grace=0.01) == [unheard.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {unheard.number: optuna.trial.TrialState.FAIL,
                      beating.number: optuna.trial.TrialState.COMPLETE}


def kill_mid_trial_and_resume(planted_file, tmp_path, extra: list[str],
                              find_running: Callable[[], list[int]], study_name: str
                              ) -> None:
    """Start a worker, SIGKILL it once ``find_running()`` names a running trial, resume the
    study after two heartbeats, and check the killed trial failed and none is stuck."""
    args = [sys.executable, str(ROOT / "gplearn_optuna.py"), "--dataset", str(planted_file),
            "--runs-dir", str(tmp_path), "--n-trials", "200", "--heartbeat", "1",
            "--max-population", "40", "--max-generations", "3", *extra]
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    running: list = []
    while not running:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
        running = find_running()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = next(tmp_path.glob("tune/*"))
    time.sleep(3)  # past the grace period of two heartbeats
    done = run(TuneConfig(dataset=str(planted_file), n_trials=2, resume=str(folder),
                          runs_dir=str(tmp_path), heartbeat=1, **TINY))
    trials = optuna.load_study(study_name=study_name, storage=done.manifest["storage"]).trials
    states = {t.number: t.state for t in trials}
    assert states[running[0]] == optuna.trial.TrialState.FAIL
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert done.manifest["status"] == "complete" and (folder / "best.yaml").is_file()


def test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_the_study_goes_on(planted_file,
                                                                              tmp_path):
    def find_running() -> list[int]:
        # read the study read-only: opening it with optuna would race the worker
        for db in tmp_path.glob("tune/*/study.db"):
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                    return [n for (n,) in con.execute(
                        "SELECT number FROM trials WHERE state = 'RUNNING' AND number >= 1")]
            except sqlite3.Error:
                continue
        return []
    kill_mid_trial_and_resume(planted_file, tmp_path, [], find_running, "distill")
