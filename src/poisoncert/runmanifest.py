"""A run's manifest: versions, code revision, start time, data description, config hash.

``RunDir.prepare`` writes ``build_manifest``'s record; ``RunDir.finish`` adds the finish time
and the checksums of the run's files (``poisoncert.runs``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from poisoncert.config import ExperimentConfig, config_hash

__all__ = ["array_checksum", "build_manifest", "device_name", "device_record", "git_revision",
           "now_iso"]


def array_checksum(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (this package by default),
    or None when it is not in one (an installed wheel) or git is missing."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain"],
                                cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}


def device_name(device: str) -> str:
    """What a run's chunks train on, in words: the GPU's name for ``cuda`` / ``cuda:K``
    (torch's), the processor's model for the CPU (``/proc/cpuinfo``, else ``platform``)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return "CUDA not available"
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_record(device: str, devices: list[str] | None = None, *,
                  local: bool = True) -> dict[str, Any]:
    """A manifest's ``device``: the type (``cpu`` / ``cuda``) and the names of the devices a
    local executor trains on (``devices``, else ``device``); chunks that remote workers train
    (Ray) are not named here (``names`` None)."""
    kind = device.split(":")[0]
    if not local:
        return {"type": kind, "names": None}
    return {"type": kind, "names": sorted({device_name(d) for d in (devices or [device])})}


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def build_manifest(cfg: ExperimentConfig, *, data: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Versions, code revision, start time, data description and the config hash."""
    from poisoncert._version import __version__

    return {
        "poisoncert": __version__,
        "config_hash": config_hash(cfg),
        "started": now_iso(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": _version("torch"),
            "scikit-learn": _version("scikit-learn"),
            "scipy": _version("scipy"),
            "poisoncert": __version__,
        },
        "platform": platform.platform(),
        "argv": sys.argv,
        "git": git_revision(),
        "data": data or {},
        "resumed": [],
        "finished": None,
    }
