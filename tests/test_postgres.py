"""Many workers, one study, on a real PostgreSQL server started for these tests.

The server is Debian's ``postgresql`` package (``.ci/run`` installs it when it is missing),
run from a temporary folder on a loopback port and stopped at the end. Without it the tests
fail, naming what to install: a study database that was never exercised is not a pass.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import psycopg
import pytest
import yaml

from conftest import run_cli
from diffses.tune import TuneConfig, run
from planted import write_planted
from test_tune import TINY, kill_mid_trial_and_resume



def _server_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"the PostgreSQL server ({name}) is not installed: install Debian's "
                    f"'postgresql' package (apt-get install postgresql; .ci/run does)")
    return str(found)


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh server on a free loopback port; its URL, with trust authentication."""
    initdb, pg_ctl = _server_binary("initdb"), _server_binary("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="diffses-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run([*as_owner, initdb, "-D", str(data), "-A", "trust", "-U", "diffses"],
                   check=True, capture_output=True)
    subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w",
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://diffses@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def planted_file(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("planted"), n=300)


def test_two_workers_fill_one_study_and_its_best_distils(postgres_url, planted_file, tmp_path):
    done = run(TuneConfig(dataset=str(planted_file), n_trials=4, n_workers=2,
                          storage=postgres_url, study_name="pg", runs_dir=str(tmp_path), **TINY))
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 4
    assert {t.user_attrs["worker"] for t in finished} == {0, 1}
    assert done.manifest["storage"] == postgres_url
    best = done.path / "best.yaml"
    assert yaml.safe_load(best.read_text())["dataset"]
    proc = run_cli("distill_teacher.py", "--config", str(best), "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "validation agreement" in proc.stdout


def test_a_killed_worker_leaves_the_postgres_study_usable(postgres_url, planted_file,
                                                          tmp_path):
    def find_running() -> list[int]:
        try:
            with psycopg.connect(postgres_url) as con, con.cursor() as cur:
                cur.execute("SELECT t.number FROM trials t JOIN studies s ON "
                            "t.study_id = s.study_id JOIN trial_heartbeats h ON "
                            "h.trial_id = t.trial_id WHERE s.study_name = 'killed' AND "
                            "t.state = 'RUNNING' AND t.number >= 1")
                return [n for (n,) in cur.fetchall()]
        except psycopg.Error:
            return []
    kill_mid_trial_and_resume(planted_file, tmp_path, ["--storage", postgres_url,
                                                       "--study-name", "killed"],
                              find_running, "killed")
