"""A Dask cluster on loopback, started with the engine's own CLIs as a user would:
``dask scheduler`` and ``dask worker --nthreads 1`` processes (no nanny, so a SIGKILL kills
a worker for good). Left behind by a killed test, the scheduler stops after 30 idle minutes
(a module's tests may come far apart on a busy machine) and the workers when it is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASK = str(Path(sys.executable).parent / "dask")


def project_env() -> dict[str, str]:
    """This environment with the project and the tests' games importable, one thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


class DaskCluster:
    """A scheduler and ``n_workers`` one-thread workers; ``env`` and ``cwd`` are the
    workers' (default: :func:`project_env`, the project folder), ``scheduler_env`` the
    scheduler's (default: :func:`project_env`)."""

    def __init__(self, n_workers: int = 2, env: dict[str, str] | None = None,
                 cwd: str | Path = ROOT, scheduler_env: dict[str, str] | None = None):
        self.n_workers, self.env, self.cwd = n_workers, env or project_env(), cwd
        self.scheduler_env = scheduler_env or project_env()
        self.folder = tempfile.TemporaryDirectory()
        self.file = Path(self.folder.name) / "scheduler.json"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return json.loads(self.file.read_text())["address"]

    def start(self, timeout: float = 60.0) -> "DaskCluster":
        """Start the scheduler and the workers; return when every worker has registered."""
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--idle-timeout", "1800s", "--scheduler-file", str(self.file)], env=self.scheduler_env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.file.is_file():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.1)
        for _ in range(self.n_workers):
            self.add_worker(self.env, self.cwd)
        if self.n_workers:
            self.wait_for(self.n_workers, deadline - time.monotonic())
        return self

    def add_worker(self, env: dict[str, str], cwd: str | Path) -> subprocess.Popen:
        """One more ``dask worker`` process with this environment and folder."""
        worker = subprocess.Popen(
            [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--host", "127.0.0.1", "--death-timeout", "30"], env=env, cwd=str(cwd),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers.append(worker)
        return worker

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        from distributed import Client
        with Client(self.address, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=max(1.0, timeout))

    def kill(self, worker: subprocess.Popen) -> None:
        """SIGKILL one worker."""
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.folder.cleanup()

    def __enter__(self) -> "DaskCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
