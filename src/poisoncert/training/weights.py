"""Weights of trained base classifiers in safetensors files (never pickle).

One file holds the ``state_dict`` s of several classifiers (a chunk of a run). Its metadata
holds ``format``, ``n_models`` (so classifiers without weights, ``None``, are kept in place)
and the caller's ``metadata``. Two layouts, both read:

- ``poisoncert.training.weights/2`` (written whenever the classifiers share tensor names,
  shapes and dtypes, as the classifiers of one model do): tensor ``"{name}"`` stacks
  ``state_dicts[i][name]`` over the classifiers that have weights, in order; metadata
  ``absent`` lists the others' indices (comma-separated). One tensor per name, so writing
  and reading a chunk of a thousand classifiers costs a few copies, not thousands of small
  ones (``benchmarks/bench_weights.py``).
- ``poisoncert.training.weights/1`` (runs written before it, and classifiers whose tensors
  differ): tensor ``"{i}.{name}"`` is ``state_dicts[i][name]``.

The run directory stores one file per chunk (``weights/chunk-00000.safetensors``, with
``training.save_weights``). ``unflatten`` checks a file's tensors against one classifier's
names, shapes and dtypes (``Ensemble.load``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["FORMAT_PER_CLASSIFIER", "FORMAT_STACKED", "WeightsLayoutError", "load_weights",
           "open_weights", "same_layout", "save_weights", "unflatten", "weights_from_bytes",
           "weights_to_bytes"]

FORMAT_PER_CLASSIFIER = "poisoncert.training.weights/1"
FORMAT_STACKED = "poisoncert.training.weights/2"


class WeightsLayoutError(ValueError):
    """A weights file whose tensors or metadata do not describe its classifiers."""


def _is_index(text: str) -> bool:
    """Whether ``text`` is a classifier index as the writer writes it (ASCII digits, no
    leading zero: ``"01"`` and ``"²"`` would name an index twice or crash ``int``)."""
    return re.fullmatch(r"0|[1-9][0-9]*", text) is not None


def same_layout(state_dicts: Sequence[dict]) -> bool:
    """Whether the state dicts (at least one) have the same names, and for each name the same
    shape, dtype and device: what stacking them over classifiers needs."""
    first = state_dicts[0]
    for sd in state_dicts[1:]:
        if sd.keys() != first.keys():
            return False
        for k, v in sd.items():
            f = first[k]
            if v.shape != f.shape or v.dtype != f.dtype or v.device != f.device:
                return False
    return True


def _flatten(state_dicts: Sequence[dict | None], metadata: dict | None, stacked: bool = True):
    """Tensors and metadata to write (``stacked=False``: the per-classifier layout whatever
    the tensors; ``benchmarks/bench_weights.py`` compares the two)."""
    import torch

    present = [i for i, sd in enumerate(state_dicts) if sd is not None]
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["n_models"] = str(len(state_dicts))  # the layout's own keys win over the caller's
    if stacked and (not present or same_layout([state_dicts[i] for i in present])):
        tensors = {name: torch.stack([state_dicts[i][name].detach() for i in present]).cpu()
                   for name in (state_dicts[present[0]] if present else ())}  # one copy per
        absent = [i for i, sd in enumerate(state_dicts) if sd is None]  # name off a device
        meta.update(format=FORMAT_STACKED, absent=",".join(map(str, absent)))
    else:
        tensors = {f"{i}.{name}": t.detach().cpu().contiguous().clone()
                   for i in present for name, t in state_dicts[i].items()}
        meta["format"] = FORMAT_PER_CLASSIFIER
        meta.pop("absent", None)
    return tensors, meta


def unflatten(tensors: dict, meta: dict, ref: dict | None = None) -> list[dict | None]:
    """The state dicts a file's ``tensors`` and ``meta`` hold (either layout), ``None`` for
    a classifier without weights. With ``ref`` (tensor name -> (shape, dtype) of one
    classifier), every tensor is checked against it; a tensor or metadata that does not fit
    raises ``WeightsLayoutError`` (also without ``ref`` where the layout contradicts itself).
    Each classifier's tensors are its own (copies, not views of a stack: saving one
    classifier saves that classifier alone)."""
    fmt = meta.get("format")
    n_text = meta.get("n_models", "")
    if not _is_index(n_text):
        raise WeightsLayoutError(f"its n_models is {n_text!r}, not a count of classifiers")
    n = int(n_text)
    if fmt == FORMAT_STACKED:
        return _unflatten_stacked(tensors, meta, n, ref)
    if fmt == FORMAT_PER_CLASSIFIER:
        return _unflatten_per_classifier(tensors, n, ref)
    raise WeightsLayoutError(f"its format is {fmt!r}, not one of {FORMAT_STACKED!r} or "
                             f"{FORMAT_PER_CLASSIFIER!r}")


def _check(key: str, t, shape: tuple, dtype, ref: dict | None, name: str):
    if ref is None:
        return
    if name not in ref:
        raise WeightsLayoutError(f"tensor {key!r} is not a tensor of this model")
    want_shape, want_dtype = ref[name]
    if shape != tuple(want_shape) or t.dtype != want_dtype:
        raise WeightsLayoutError(f"tensor {key!r} is {t.dtype} {shape}, the model's is "
                                 f"{want_dtype} {tuple(want_shape)}")


def _unflatten_stacked(tensors: dict, meta: dict, n: int, ref: dict | None) -> list:
    text = meta.get("absent", "")
    parts = text.split(",") if text else []
    if not all(_is_index(p) for p in parts):
        raise WeightsLayoutError(f"its list of classifiers without weights is {text!r}")
    absent = [int(p) for p in parts]
    if absent != sorted(set(absent)) or any(i >= n for i in absent):
        raise WeightsLayoutError(f"its classifiers without weights ({text}) are not distinct "
                                 f"indices 0..{n - 1} in order")
    present = sorted(set(range(n)) - set(absent))
    out: list = [None] * n
    if not present:
        if tensors:
            raise WeightsLayoutError("it holds tensors but no classifier with weights")
        return out
    if ref is not None and set(tensors) != set(ref):
        missing = sorted(set(ref) - set(tensors))
        extra = sorted(set(tensors) - set(ref))
        raise WeightsLayoutError(f"its tensors are not the model's (missing: "
                                 f"{', '.join(missing) or 'none'}; not the model's: "
                                 f"{', '.join(extra) or 'none'})")
    for name, t in tensors.items():
        if t.dim() == 0 or t.shape[0] != len(present):
            raise WeightsLayoutError(f"tensor {name!r} stacks {t.shape[0] if t.dim() else 0} "
                                     f"classifiers, the file has {len(present)} with weights")
        _check(name, t, tuple(t.shape[1:]), t.dtype, ref, name)
    for j, i in enumerate(present):
        out[i] = {name: t[j].clone() for name, t in tensors.items()}
    return out


def _unflatten_per_classifier(tensors: dict, n: int, ref: dict | None) -> list:
    out: list = [None] * n
    for key, t in tensors.items():
        i_text, _, name = key.partition(".")
        if not _is_index(i_text) or int(i_text) >= n:
            raise WeightsLayoutError(f"tensor {key!r} is not a tensor of classifier "
                                     f"0..{n - 1}")
        _check(key, t, tuple(t.shape), t.dtype, ref, name)
        i = int(i_text)
        if out[i] is None:
            out[i] = {}
        out[i][name] = t
    if ref is not None:
        for i, sd in enumerate(out):
            if sd is not None and set(sd) != set(ref):
                missing = sorted(set(ref) - set(sd))
                raise WeightsLayoutError(f"classifier {i} of the file lacks "
                                         f"{', '.join(missing)}")
    return out


def save_weights(path: str | Path, state_dicts: Sequence[dict | None],
                 metadata: dict | None = None) -> Path:
    """Write per-classifier state dicts (``None`` = no classifier) to one safetensors file
    (the stacked layout where they share names, shapes and dtypes); ``metadata`` (str ->
    str) is kept."""
    path = Path(path)
    path.write_bytes(weights_to_bytes(state_dicts, metadata))
    return path


def load_weights(path: str | Path) -> list[dict | None]:
    """The state dicts written by ``save_weights`` (either layout; ``None`` where there was
    no classifier)."""
    with open_weights(path) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return unflatten(tensors, meta)


@contextlib.contextmanager
def open_weights(path: str | Path, framework: str = "pt") -> Iterator:
    """safetensors' ``safe_open`` of the file ``path``, also where the path is not valid
    UTF-8 (a folder named in another encoding: Python holds its bytes as surrogates), which
    safetensors' torch reader refuses ("Path ... is not valid UTF-8": ``predict`` called the
    weights damaged, ``update`` and ``attack`` failed with a traceback). Such a file is
    opened, and safetensors reads it by its descriptor's name (``/proc/self/fd/N``)."""
    from safetensors import safe_open

    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        fds = next((d for d in ("/proc/self/fd", "/dev/fd") if os.path.isdir(d)), None)
        if fds is not None:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                with safe_open(f"{fds}/{fd}", framework=framework) as f:
                    yield f
            finally:
                os.close(fd)
            return
    with safe_open(name, framework=framework) as f:
        yield f


def weights_to_bytes(state_dicts: Sequence[dict | None], metadata: dict | None = None) -> bytes:
    """``save_weights`` to bytes (safetensors format), the same bytes for the same tensors and
    metadata (``_canonical_header``)."""
    from safetensors.torch import save

    tensors, meta = _flatten(state_dicts, metadata)
    return _canonical_header(save(tensors, metadata=meta))


def _canonical_header(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its header's metadata in sorted key order.

    safetensors writes the metadata from a Rust ``HashMap``, in an order that changes from
    one call to the next, so the same weights gave files of other bytes (and SHA-256s in the
    chunk files and the manifest) on every run. The header is written again with the same
    entries, sorted, compact, and padded with spaces to its former length (what safetensors
    pads with), so the tensors' offsets and bytes are untouched."""
    import json

    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {})
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text = text.ljust(n, b" ")
    if len(text) > n or text == data[8:8 + n]:  # another escaping than serde_json's (keep
        return data                             # safetensors' bytes), or already in order
    # one copy of the tensors' bytes (a slice of data, then +, made two: 0.4 s for 200 MB)
    return b"".join((data[:8], text, memoryview(data)[8 + n:]))


def weights_from_bytes(data: bytes) -> list[dict | None]:
    """The inverse of ``weights_to_bytes`` (read by safetensors' own reader, through a
    temporary file: its reader of bytes drops the metadata that holds ``n_models``)."""
    with tempfile.TemporaryDirectory(prefix="poisoncert-weights-") as folder:
        path = Path(folder) / "weights.safetensors"
        path.write_bytes(data)
        return load_weights(path)
