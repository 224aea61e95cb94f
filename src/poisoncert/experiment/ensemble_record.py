"""A run's ``ensemble.json`` and weights files as a model in use reads them.

``write_ensemble_record`` (called by ``train_run`` once every chunk and its weights are on
disk) records the input form, the classes, the selection facts, the model and the weights
files; ``weights_metadata`` is what each chunk's weights file records about its run.
``read_record`` and ``read_weights`` check them for ``Ensemble.load``: format tags, config
hash, classifier seeds, and every tensor's name, index, shape and dtype against the model; a
damaged or foreign file is one ``RunError`` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from poisoncert import runs
from poisoncert.config import ExperimentConfig, config_hash
from poisoncert.experiment.inputform import InputForm, input_form, input_means
from poisoncert.runs import RunDir, RunError
from poisoncert.training.weights import FORMAT_PER_CLASSIFIER, FORMAT_STACKED

__all__ = ["ENSEMBLE_FORMAT", "ENSEMBLE_JSON", "WEIGHTS_FORMATS", "read_record", "read_weights",
           "run_path", "weights_metadata", "write_ensemble_record"]

ENSEMBLE_JSON = runs.ENSEMBLE
ENSEMBLE_FORMAT = "poisoncert.ensemble/1"
#: The weights layouts read (``training.weights``): stacked, and per classifier (runs written
#: before the stacked layout).
WEIGHTS_FORMATS = (FORMAT_STACKED, FORMAT_PER_CLASSIFIER)
#: The quantiles of the training inputs' means (after preprocessing) that ``ensemble.json``
#: records as ``input_means``: the range new inputs are compared with (a warning, nothing
#: else). Quantiles, not the extremes: a few odd training samples (a poisoner's among them)
#: do not widen it.
INPUT_MEAN_QUANTILES = (0.001, 0.999)


# --------------------------------------------------------------------------------------------
# Writing the record (train_run)


def write_ensemble_record(rd: RunDir, cfg: ExperimentConfig, data, ranges) -> Path:
    """Write ``ensemble.json`` for a run whose chunks and weights are all on disk."""
    summary = data.summary
    form = input_form(cfg, summary.input_shape)
    s = cfg.selection
    ns, p = s.size(summary.n)
    model = cfg.training.model
    # the code as it was when the run started (checked then, and on every resume), not as it
    # is now: a file edited while the run trained is not the classifiers' code
    source = rd.load_manifest().get("model_source") or model_source(cfg)
    record = {
        "format": ENSEMBLE_FORMAT,
        "config_hash": config_hash(cfg),
        "input": form.to_dict(),
        "classes": [int(c) for c in summary.classes],
        "class_names": list(summary.class_names),
        "selection": {"scheme": s.scheme, "n": int(summary.n), "ns": ns, "p": p, "k": s.k,
                      "T": int(cfg.T), "n_clean": int(summary.n_clean), "seed": int(s.seed)},
        "model": {"model": str(model), "model_kwargs": cfg.training.model_kwargs,
                  "dtype": cfg.training.dtype, "group_size": _group(rd, cfg),
                  "eval_batch_size": cfg.training.eval_batch_size,
                  "path": run_path(rd, cfg), "source": source},
        "weights": [{"file": f"{runs.WEIGHTS}/{rd.weights_path(cid).name}", "start": a,
                     "stop": b} for cid, (a, b) in enumerate(ranges)],
        # optional (runs before it have none, and give no warning): what Ensemble compares
        # new inputs with, to warn of inputs unlike the training data (an inverted digit)
        "input_means": input_means_record(data.x_train),
    }
    path = rd / ENSEMBLE_JSON
    runs.save_json(path, record)
    return path


def input_means_record(x_train) -> dict:
    """``ensemble.json``'s ``input_means``: the ``INPUT_MEAN_QUANTILES`` of the training
    inputs' means after preprocessing (``inputform.input_means``)."""
    means = input_means(x_train)
    low, high = np.quantile(means, INPUT_MEAN_QUANTILES)
    return {"quantiles": list(INPUT_MEAN_QUANTILES), "low": float(low), "high": float(high),
            "n": int(len(means))}


def _group(rd: RunDir, cfg: ExperimentConfig) -> int:
    """The group size the run trained with (``auto`` resolved, from its manifest)."""
    from poisoncert.training.groups import recorded_group_size

    return recorded_group_size(cfg.training, rd.load_manifest())


def run_path(rd: RunDir, cfg: ExperimentConfig) -> str:
    """The engine path the run trained with (``fast`` resolved, from its manifest)."""
    from poisoncert.training.groups import recorded_path

    return recorded_path(cfg.execution.path, cfg.execution.device, rd.load_manifest(),
                         training=cfg.training)


def weights_metadata(cfg: ExperimentConfig, start: int, stop: int, seeds) -> dict[str, str]:
    """What a chunk's weights file records about its run (checked by ``Ensemble.load``)."""
    return {"start": str(start), "stop": str(stop), "config_hash": config_hash(cfg),
            "seeds_sha256": runs.array_checksum(np.asarray(seeds, dtype=np.uint64))}


# --------------------------------------------------------------------------------------------
# Reading and checking it (Ensemble.load)


def read_record(rd: RunDir, cfg: ExperimentConfig) -> dict:
    path = rd / ENSEMBLE_JSON
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"'{path}' is missing: the run is not finished (run train again to "
                       "finish it).") from None
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise RunError(f"'{path}' is damaged: it is not readable JSON ({e}).") from None
    if not isinstance(record, dict) or record.get("format") != ENSEMBLE_FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise RunError(f"'{path}' is not a poisoncert ensemble record: its format is {got!r}, "
                       f"expected {ENSEMBLE_FORMAT!r}.")
    if record.get("config_hash") != config_hash(cfg):
        raise RunError(f"'{path}' belongs to another run: its config hash "
                       f"{str(record.get('config_hash'))[:12]}... is not this run's "
                       f"{config_hash(cfg)[:12]}....")
    try:
        sel, form = record["selection"], InputForm.from_dict(record["input"])
        ok = (sel["scheme"] == cfg.selection.scheme and int(sel["T"]) == cfg.T
              and len(record["classes"]) == len(record["class_names"]) >= 2
              and len(form.shape) in (1, 3) and form.kind in ("uint8", "integer", "bool",
                                                                "unit"))
        ranges = runs.chunk_ranges(cfg.T, cfg.run.chunk_size, _group(rd, cfg))
        ok = ok and [(int(w["start"]), int(w["stop"])) for w in record["weights"]] == ranges
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise RunError(f"'{path}' is damaged: its fields do not describe this run's config.")
    check_model_source(cfg, (record.get("model") or {}).get("source"))
    return record


def check_model_source(cfg: ExperimentConfig, source: dict | None, *,
                       when: str = "the run was trained",
                       then: str = "its classifiers would not be the certified ones") -> None:
    """A ``RunError`` when the config's user model (``training.model`` naming a factory) is
    not the code ``source`` recorded: its file's SHA-256, and those of the user's modules it
    imports (``ModelRef.source``'s ``files``; runs trained before that recorded only the
    module's own file); nothing for built-in models or runs that recorded none."""
    model = cfg.training.model
    if not source or not source.get("sha256") or not hasattr(model, "source"):
        return
    # the files the module imports, its own among them (runs that recorded them), first:
    # found and read without importing anything (a changed package __init__.py must not run)
    changed = model.changed_files(source)
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise RunError(f"The model code {changed[0]}{more} of '{model}' (its module or a "
                       f"file the module imports) has changed since {when} (or is gone, or "
                       f"was added): {then}.")
    file, digest = model.module_sha256()
    if digest != source["sha256"]:
        raise RunError(f"The model code {file} of '{model}' has changed since "
                       f"{when} (SHA-256 {source['sha256'][:12]}... then, "
                       f"{str(digest)[:12]}... now): {then}.")


def model_source(cfg: ExperimentConfig) -> dict | None:
    """What a run records of its user model's code (``check_model_source`` compares it), or
    None for a built-in model."""
    model = cfg.training.model
    return model.source() if hasattr(model, "source") else None


def _reference(cfg: ExperimentConfig, record: dict) -> dict:
    """Tensor names -> (shape, dtype) of one classifier of the run's model."""
    from poisoncert.training.models import probe_model

    t = cfg.training
    model = probe_model(t.model, InputForm.from_dict(record["input"]).shape,
                        len(record["classes"]))
    return {k: (tuple(v.shape), t.torch_dtype if v.is_floating_point() else v.dtype)
            for k, v in model.state_dict().items()}


def read_weights(rd: RunDir, cfg: ExperimentConfig, record: dict) -> list:
    """Every classifier's state dict (``None`` for an abstaining one), checked."""
    from safetensors import SafetensorError

    from poisoncert.training.weights import WeightsLayoutError, open_weights, unflatten

    seeds = rd.load(runs.SEEDS)
    sizes = rd.load(runs.SUBSET_SIZES)
    n_clean = int(record["selection"]["n_clean"])
    if seeds.shape != (cfg.T,) or sizes.shape != (cfg.T,):
        raise RunError(f"The run '{rd.path}' is damaged: {runs.SEEDS} or {runs.SUBSET_SIZES} "
                       f"does not hold {cfg.T} classifiers.")
    ref = _reference(cfg, record)
    want_hash = config_hash(cfg)
    out: list = []
    for w in record["weights"]:
        start, stop = int(w["start"]), int(w["stop"])
        path = rd / w["file"]
        if not path.is_file():
            raise RunError(f"The weights file '{path}' is missing: its chunk was trained "
                           "without keeping weights (training.save_weights: false when it "
                           "ran); train the run again into a new run directory.")
        try:
            with open_weights(path) as f:
                meta = f.metadata() or {}
                keys = list(f.keys())
                tensors = {k: f.get_tensor(k) for k in keys}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise RunError(f"The weights file '{path}' is damaged or not a safetensors file "
                           f"({' '.join(str(e).split())}).") from None
        expect_meta = weights_metadata(cfg, start, stop, seeds[start:stop])
        if meta.get("format") not in WEIGHTS_FORMATS:
            raise RunError(f"The weights file '{path}' is not a poisoncert weights file (format "
                           f"{meta.get('format')!r}, expected one of "
                           f"{', '.join(map(repr, WEIGHTS_FORMATS))}).")
        if (meta.get("start"), meta.get("stop"), meta.get("n_models")) != (
                str(start), str(stop), str(stop - start)):
            raise RunError(f"The weights file '{path}' does not hold classifiers "
                           f"{start}..{stop - 1} (it says {meta.get('start')}.."
                           f"{meta.get('stop')}).")
        if meta.get("config_hash") != want_hash or meta.get("seeds_sha256") != expect_meta[
                "seeds_sha256"]:
            raise RunError(f"The weights file '{path}' belongs to another run (its config hash "
                           f"or classifier seeds are not this run's).")
        try:
            chunk = unflatten(tensors, meta, ref)
        except WeightsLayoutError as e:
            raise RunError(f"The weights file '{path}' is damaged or does not fit the run's "
                           f"model: {e}.") from None
        for j, sd in enumerate(chunk):
            empty = int(sizes[start + j]) == 0 and n_clean == 0
            if (sd is None) != empty:
                raise RunError(f"The weights file '{path}' is damaged: classifier {start + j} "
                               + ("has weights but its sub-dataset is empty." if empty else
                                  "has no weights."))
        out.extend(chunk)
    return out
