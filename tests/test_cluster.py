"""Searches on a real Dask cluster started with its CLIs on loopback: the same result as the
local pool, a SIGKILLed worker's tasks rerun elsewhere, clear errors for bad clusters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from distributed import Client

import objenv
from diffses.results import ResultsConfig
from diffses.results import run as results
from gplearn_custom import forest as fo
from gplearn_custom.cluster import ClusterError, connect
from gplearn_custom.ppo import PPOConfig
from gplearn_custom.tuning import ConstantTuner
from localcluster import ROOT, DaskCluster, project_env
from test_gplearn_custom import REWARD, evolution
from test_results import killed_results_run

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


def killing_a_busy_worker(running: DaskCluster, work):
    """``work()`` while the first worker is SIGKILLed as soon as it holds a task; what it
    gave."""
    with Client(running.address, set_as_default=False) as client:
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
        out = work()
        done = killed.is_set()
        killed.set()
        watcher.join()
        assert done and victim.poll() is not None  # killed while it held a task
        assert len(client.scheduler_info()["workers"]) == 1
    return out


def test_a_worker_killed_mid_search_costs_only_its_tasks():
    local = search(None, generations=4, p_gradient=0.0)
    with DaskCluster(2) as running:
        remote = killing_a_busy_worker(
            running, lambda: search(running.address, generations=4, p_gradient=0.0))
    assert same(local, remote)


def test_the_results_table_on_a_cluster_with_a_killed_worker_is_the_local_table(teacher_run,
                                                                                tmp_path):
    cfg = ResultsConfig(teacher=str(teacher_run.path), detectors=("ocatari",), seeds=(0, 1),
                        eval_episodes=2, eval_max_steps=30, dataset_episodes=1,
                        population_size=30, generations=2, restarts=1, finetunes=("cmaes",),
                        finetune_steps=64, finetune_max_steps=20, select_episodes=1,
                        tune_trials=1, tune_episodes=1, sticky=0.0)

    def table(folder):
        rows = json.loads((folder / "results.json").read_text())["rows"]
        return [(r["method"], r["returns"], r["agreement"], r["nodes"], r["env_steps"])
                for r in rows]

    local = results(replace(cfg, runs_dir=str(tmp_path / "local")))
    with DaskCluster(2) as running:
        remote = killing_a_busy_worker(running, lambda: results(replace(
            cfg, cluster=running.address, runs_dir=str(tmp_path / "cluster"))))
    assert len(table(local.path)) == 5  # teacher, forest, tree, CMA-ES, Optuna best
    assert table(remote.path) == table(local.path)
    steps = json.loads((remote.path / "steps.json").read_text())
    assert {"teacher", "ocatari/s0/distilled forest (gplearn)",
            "ocatari/s1/fine-tuned: CMA-ES on constants", "ocatari/tune"} <= set(steps)


def test_an_unreachable_address_fails_fast_with_a_clear_error():
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match="cannot reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        connect("tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ClusterError, match="cannot reach"):
        connect("no-such-host.invalid:8786", timeout=2)


@pytest.mark.parametrize("script", ["symbolic_finetuning.py", "results.py",
                                    "gplearn_optuna.py"])
def test_the_cli_refuses_an_unreachable_cluster_before_writing_anything(script, tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("cluster: tcp://127.0.0.1:9\n")
    out = subprocess.run([sys.executable, script, "--config", str(config), "--runs-dir",
                          str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: cannot reach a Dask scheduler")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_worker_without_the_project_is_refused(tmp_path):
    bare = {k: v for k, v in project_env().items() if k != "PYTHONPATH"}
    with DaskCluster(0) as running:
        running.add_worker(bare, tmp_path)
        running.wait_for(1)
        with pytest.raises(ClusterError, match="cannot import this project .*gplearn_custom"):
            connect(running.address)


def test_a_scheduler_without_the_project_is_refused():
    bare = {k: v for k, v in project_env().items() if k != "PYTHONPATH"}
    with DaskCluster(1, scheduler_env=bare) as running:
        with pytest.raises(ClusterError, match="the scheduler cannot import this project"):
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


def test_a_results_run_killed_on_the_cluster_resumes_there(teacher_run, cluster, tmp_path):
    steps = killed_results_run(teacher_run.path, tmp_path, "--cluster", cluster.address,
                               env=project_env())
    folder = next(tmp_path.glob("results/*"))
    done = results(ResultsConfig(resume=str(folder), cluster=cluster.address,
                                 runs_dir=str(tmp_path)))
    assert done.path == folder and done.manifest["status"] == "complete"
    assert len(list(tmp_path.glob("distill/*"))) == len(list(tmp_path.glob("dataset/*"))) == 1
    rows = {r["method"]: r for r in json.loads((folder / "results.json").read_text())["rows"]}
    assert "fine-tuned: CMA-ES on constants" in rows
    assert rows["teacher (pixel PPO)"]["returns"] == steps["teacher"]["returns"]
    assert rows["distilled forest (gplearn)"]["runs"] == [next(
        v["run_path"] for k, v in steps.items() if "distilled forest" in k)]
