"""Seeding, device selection and the cluster check shared by every stage."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

from diffses.errors import UserError
from gplearn_custom import cluster


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (envs are seeded through ``reset(seed=...)``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: The device names the stages take.
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when present else ``cpu``; a CUDA device that is not there errs."""
    if not DEVICE.fullmatch(name):
        raise UserError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' was asked for but CUDA is not available here; "
                            f"use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' does not exist: {torch.cuda.device_count()} "
                            f"CUDA device(s) here")
        return name
    return name


def cluster_client(address: str) -> Any:
    """A client of the Dask cluster at ``address`` whose workers are checked; a bad address or
    worker is a clear error, before any work starts."""
    try:
        return cluster.connect(address)
    except cluster.ClusterError as err:
        raise UserError(str(err)) from None


def require_cluster(address: str | None) -> None:
    """Check the Dask cluster at ``address``, if one is given (:func:`cluster_client`)."""
    if address is not None:
        cluster_client(address).close()
