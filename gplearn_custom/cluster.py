"""Tasks on a Dask distributed cluster: connect, check the workers, run functions there.

A cluster is a ``dask scheduler`` and ``dask worker`` processes started by the user (see
docs/cluster.md); ``--cluster ADDRESS`` names the scheduler. :func:`connect` fails fast on an
address nothing answers at, a scheduler without workers, a worker that cannot import this
project, and a worker whose project files or key packages differ from this process's (its
results could differ), before any work is sent. The scheduler reruns the tasks of a worker that
dies on the others, so a task must not depend on where it runs: tasks carry their seeds.

Worker-side state (an :class:`Evaluator` with its env) is built once per search, thread and
worker process, keyed by a search token, and released when the search ends.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from distributed import Client, Future

#: Seconds to reach the scheduler, and to wait for its first worker.
CONNECT_TIMEOUT = 5.0
WORKER_TIMEOUT = 10.0
#: Packages whose versions must match between this process and every worker.
PACKAGES = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "numpy", "torch",
            "gymnasium", "ale-py", "scikit-learn", "gplearn")
#: The project's packages: their source is fingerprinted, since tasks run their code.
PROJECT_PACKAGES = ("gplearn_custom", "see", "diffses", "space")
STARTING = ("start a scheduler with `dask scheduler` and workers with `dask worker ADDRESS "
            "--nthreads 1`, both with the project on PYTHONPATH (docs/cluster.md)")

_STATE: dict[tuple[str, int], Any] = {}
_STATE_LOCK = threading.Lock()


class ClusterError(RuntimeError):
    """The cluster cannot run this project's tasks; the message says what to fix."""


@functools.cache
def project_fingerprint() -> str:
    """sha256 of the project packages' Python sources (paths and contents)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in PROJECT_PACKAGES:
        for path in sorted((root / name).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def facts() -> dict[str, str | None]:
    """What must match between a worker and the process sending it tasks."""
    out: dict[str, str | None] = {"python": platform.python_version(),
                                  "project": project_fingerprint()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def connect(address: str, timeout: float = CONNECT_TIMEOUT,
            worker_timeout: float = WORKER_TIMEOUT) -> "Client":
    """A client of the scheduler at ``address`` whose workers are checked (:func:`check`)."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ClusterError(f"--cluster needs Dask distributed ({err}); "
                           "pip install -r requirements.txt") from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        raise ClusterError(f"cannot reach a Dask scheduler at {address!r} within {timeout:g} s "
                           f"({err}); {STARTING}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except TimeoutError:
            raise ClusterError(f"the scheduler at {address} has no workers after "
                               f"{worker_timeout:g} s; {STARTING}") from None
        check(client)
    except BaseException:
        client.close()
        raise
    return client


def check(client: "Client") -> None:
    """Refuse a scheduler or workers that cannot import the project, and workers whose
    :func:`facts` differ."""
    mine = facts()
    problems = []
    try:
        client.run_on_scheduler(facts)
    except Exception as err:  # raised on the scheduler, whatever it was
        problems.append(f"the scheduler cannot import this project ({err!r}): start it with "
                        f"the project on PYTHONPATH (docs/cluster.md)")
    for worker, theirs in sorted(client.run(facts, on_error="return").items()):
        if isinstance(theirs, BaseException):
            problems.append(f"worker {worker} cannot import this project ({theirs}): start "
                            f"it with the project on PYTHONPATH after "
                            f"`pip install -r requirements.txt`")
            continue
        differ = [f"{k} {mine[k]} here, {theirs.get(k)} there" for k in mine
                  if theirs.get(k) != mine[k]]
        if differ:
            problems.append(f"worker {worker} differs: {'; '.join(differ)} (install the same "
                            "requirements.txt and the same checkout of the project on it)")
    if problems:
        raise ClusterError("the cluster cannot run these tasks:\n  " + "\n  ".join(problems))


def local_state(token: str, build: Callable[[], Any]) -> Any:
    """This worker thread's state for the search ``token``, built on first use."""
    key = (token, threading.get_ident())
    with _STATE_LOCK:
        if key not in _STATE:
            _STATE[key] = build()
        return _STATE[key]


def release(token: str) -> int:
    """Close and drop every thread's state of ``token`` in this worker; how many there were."""
    with _STATE_LOCK:
        keys = [k for k in _STATE if k[0] == token]
        states = [_STATE.pop(k) for k in keys]
    for state in states:
        close = getattr(state, "close", None)
        if close is not None:
            close()
    return len(states)


class Session:
    """One search's tasks on a cluster: its shared inputs are sent once, its worker state is
    released by :meth:`close`."""

    def __init__(self, address: str):
        self.client = connect(address)
        self.token = uuid.uuid4().hex

    def share(self, value: Any) -> "Future":
        """``value`` on every worker, for tasks to take as an argument."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def map(self, fn: Callable[..., Any], *iterables: Sequence[Any]) -> list[Any]:
        """``fn(token, *args)`` for each tuple of ``iterables``, as tasks; results in order."""
        n = len(iterables[0])
        futures = self.client.map(fn, [self.token] * n, *iterables, pure=False)
        return self.client.gather(futures)

    def close(self) -> None:
        try:
            self.client.run(release, self.token, on_error="ignore")
        finally:
            self.client.close()
