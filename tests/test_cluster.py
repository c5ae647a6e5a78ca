"""Searches on a real Dask cluster started with its CLIs on loopback: the same result as the
local pool, a SIGKILLed worker's tasks rerun elsewhere, clear errors for bad clusters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client

import objenv
from gplearn_custom import forest as fo
from gplearn_custom.cluster import ClusterError, connect
from gplearn_custom.ppo import PPOConfig
from gplearn_custom.tuning import ConstantTuner
from localcluster import ROOT, DaskCluster, project_env
from test_gplearn_custom import REWARD, evolution

TUNER = ConstantTuner(objenv.make_env, ppo=PPOConfig(n_timesteps=200, n_envs=2, n_steps=50,
                                                     batch_size=100))


@pytest.fixture(scope="module")
def cluster():
    with DaskCluster(2) as running:
        yield running


def search(cluster: str | None, **overrides):
    params = dict(generations=3, p_crossover=0.5, p_gradient=0.3)
    params.update(overrides)
    return evolution(cluster=cluster, **params).fit(
        REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1), tuner=TUNER)


def same(a, b) -> bool:
    def trace(s):
        return [h["best_fitness"] for h in s.history_], [fo.key(i.trees) for i in s.population_]
    return trace(a) == trace(b)


def test_a_search_on_the_cluster_gives_the_local_result(cluster):
    local, remote = search(None), search(cluster.address)
    assert local.history_[1]["tuned"] > 0
    assert same(local, remote)
    with Client(cluster.address, set_as_default=False) as client:
        ran = client.run(lambda: __import__("gplearn_custom.cluster").cluster._STATE.copy())
    assert all(not state for state in ran.values())  # each worker's envs were released


def test_a_worker_killed_mid_search_costs_only_its_tasks():
    local = search(None, generations=4, p_gradient=0.0)
    with DaskCluster(2) as running, Client(running.address, set_as_default=False) as client:
        victim = running.workers[0]
        address = next(a for a, pid in client.run(os.getpid).items() if pid == victim.pid)
        killed = threading.Event()

        def kill_when_busy() -> None:
            while not killed.is_set():
                if client.processing().get(address):
                    running.kill(victim)
                    killed.set()
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_when_busy, daemon=True)
        watcher.start()
        remote = search(running.address, generations=4, p_gradient=0.0)
        done = killed.is_set()
        killed.set()
        watcher.join()
        assert done and victim.poll() is not None  # killed while it held tasks of the search
        assert len(client.scheduler_info()["workers"]) == 1
    assert same(local, remote)


def test_an_unreachable_address_fails_fast_with_a_clear_error():
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match="cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        connect("tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ClusterError, match="cannot reach"):
        connect("no-such-host.invalid:8786", timeout=2)


def test_the_cli_refuses_an_unreachable_cluster_before_writing_anything(tmp_path):
    out = subprocess.run([sys.executable, "symbolic_finetuning.py", "--policy", "sample.json",
                          "--cluster", "tcp://127.0.0.1:9", "--runs-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: cannot reach a Dask scheduler")
    assert "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())


def test_a_worker_without_the_project_is_refused(tmp_path):
    bare = {k: v for k, v in project_env().items() if k != "PYTHONPATH"}
    with DaskCluster(0) as running:
        running.add_worker(bare, tmp_path)
        running.wait_for(1)
        with pytest.raises(ClusterError, match="cannot import this project .*gplearn_custom"):
            connect(running.address)


def test_a_worker_with_another_version_of_the_project_is_refused(tmp_path):
    for name in ("gplearn_custom", "see", "diffses", "space"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.yaml"))
    with (tmp_path / "see" / "operators.py").open("a") as f:
        f.write("\nOLDER = True\n")
    env = {**project_env(), "PYTHONPATH": str(tmp_path)}
    with DaskCluster(1) as running:
        running.add_worker(env, tmp_path)
        running.wait_for(2)
        with pytest.raises(ClusterError, match=r"differs: project \w+ here, \w+ there"):
            connect(running.address)
