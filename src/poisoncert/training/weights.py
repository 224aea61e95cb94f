"""Weights of trained base classifiers in safetensors files (never pickle).

One file holds the ``state_dict`` s of several classifiers (a chunk of a run): tensor
``"{i}.{name}"`` is ``state_dicts[i][name]``; the metadata holds ``format``
(``poisoncert.training.weights/1``), ``n_models`` (so classifiers without weights, ``None``,
are kept in place) and the caller's ``metadata``. The run directory stores one file per chunk
(``weights/chunk-00000.safetensors``, with ``training.save_weights``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["load_weights", "save_weights", "weights_from_bytes", "weights_to_bytes"]

_FORMAT = "poisoncert.training.weights/1"


def _flatten(state_dicts: Sequence[dict | None], metadata: dict | None):
    tensors = {}
    for i, sd in enumerate(state_dicts):
        if sd is None:
            continue
        for name, t in sd.items():
            tensors[f"{i}.{name}"] = t.detach().cpu().contiguous().clone()
    meta = {"format": _FORMAT, "n_models": str(len(state_dicts))}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    return tensors, meta


def _unflatten(tensors: dict, meta: dict) -> list[dict | None]:
    n = int(meta.get("n_models", 0))
    out: list[dict | None] = [None] * n
    for key, t in tensors.items():
        i, name = key.split(".", 1)
        i = int(i)
        if i >= len(out):
            out.extend([None] * (i + 1 - len(out)))
        if out[i] is None:
            out[i] = {}
        out[i][name] = t
    return out


def save_weights(path: str | Path, state_dicts: Sequence[dict | None],
                 metadata: dict | None = None) -> Path:
    """Write per-classifier state dicts (``None`` = no classifier) to one safetensors file;
    tensor ``"{i}.{name}"`` is ``state_dicts[i][name]``; ``metadata`` (str -> str) is kept."""
    from safetensors.torch import save_file

    tensors, meta = _flatten(state_dicts, metadata)
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_weights(path: str | Path) -> list[dict | None]:
    """The state dicts written by ``save_weights`` (``None`` where there was no classifier)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _unflatten(tensors, meta)


def weights_to_bytes(state_dicts: Sequence[dict | None], metadata: dict | None = None) -> bytes:
    """``save_weights`` to bytes (safetensors format)."""
    from safetensors.torch import save

    tensors, meta = _flatten(state_dicts, metadata)
    return save(tensors, metadata=meta)


def weights_from_bytes(data: bytes) -> list[dict | None]:
    """The inverse of ``weights_to_bytes`` (read by safetensors' own reader, through a
    temporary file: its reader of bytes drops the metadata that holds ``n_models``)."""
    with tempfile.TemporaryDirectory(prefix="poisoncert-weights-") as folder:
        path = Path(folder) / "weights.safetensors"
        path.write_bytes(data)
        return load_weights(path)

