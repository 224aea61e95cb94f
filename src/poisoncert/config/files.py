"""An experiment config as files and text: YAML, nested dicts, dotted overrides, its hash.

An experiment is one YAML file with five sections::

    data:      {name: digits, classes: null, n_clean: 0, test_limit: null, ...}
    selection: {scheme: binomial, ns: 30, T: 300, seed: 0}
    training:  {model: mlp, steps: 100, batch_size: 32, ..., workers: 1, two_phase: false}
    certify:   {alpha: 0.001, method: bonferroni, model: P6, rhos: [0, 1, 2, 5]}
    run:       {chunk_size: 50}

``load_config(path, overrides)`` reads it, applies overrides such as ``--training.steps 300``
(spaCy style; values are coerced to the field's type) and builds the typed sections of
``poisoncert.config.sections``, which check every value before anything runs. The ``training``
section holds the keys of three sections (``SECTIONS``): the training settings, the execution
and the algorithm.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from poisoncert import _validation
from poisoncert._validation import Earlier, earlier, param_error, shown
from poisoncert.config.checks import choice
from poisoncert.config.sections import (
    DEFAULT_SELECTION,
    SCHEMES,
    SECTIONS,
    WHERE,
    ConfigError,
    ExperimentConfig,
    fixed_T,
)
from poisoncert.selection import PLAN_SCHEME_ALIASES
from poisoncert.training import settings as _settings
from poisoncert.training.settings import TrainConfig

__all__ = [
    "RESUMABLE_KEYS",
    "as_given",
    "config_diff",
    "config_hash",
    "from_dict",
    "later_bounds",
    "load_config",
    "refuse_earlier",
    "read_config_file",
    "parse_overrides",
    "to_dict",
    "to_yaml",
]

#: Keys added after the recorded runs: left out of ``config_hash`` and of the YAML text
#: (``to_yaml``) at their defaults, so the files of earlier runs keep their bytes.
_QUIET_KEYS = {"selection.d": None, "selection.r": None, "run.store_ranks": False,
               "data.edits": None, "certify.aggregation": "vote", "training.subset_rows": None}

#: Keys added after the first runs, and their defaults: left out of ``config_hash`` at the
#: default, so run directories written before they existed keep their hash (and resume).
_LATER_KEYS = {"training.rotation": 0.0, "training.scale": 0.0, "training.shear": 0.0,
               "training.elastic": 0.0, "training.lr_schedule": "constant",
               "data.deskew": False, "training.model_kwargs": None, **_QUIET_KEYS}

#: Keys whose null default was ``false`` before: hashed as ``false``, so earlier runs keep
#: their hash (``training.save_weights``: null = on for torch models; it never changes a
#: prediction).
_NULL_WAS_FALSE = ("training.save_weights",)

#: Keys that never change a run's predictions, so they may differ when a run is resumed.
RESUMABLE_KEYS = ("training.workers",)

_HINTS = typing.get_type_hints(ExperimentConfig)


def later_bounds() -> dict[str, float]:
    """Upper bounds added after earlier versions had written runs beyond them, by dotted key:
    the root seeds at 2^64 - 1 (d6f8569), ``training.elastic`` at 1e6 (bbe7dd7),
    ``training.lr`` at 10 and ``training.weight_decay`` at 1 (a624e1c). A run's own
    ``config.yaml`` (``load_config(..., stored=True)``) reads a value beyond one as
    ``_validation.Earlier``, in the range the version that wrote it took; every config given
    anew keeps them."""
    return {"selection.seed": _validation.SEED_LIMIT, "data.clean_seed": _validation.SEED_LIMIT,
            "training.lr": _settings.LR_MAX, "training.weight_decay": _settings.WEIGHT_DECAY_MAX,
            "training.elastic": _settings.ELASTIC_MAX}


#: What ``certify.rhos`` must be in a config given anew (the radii of certify's table: an
#: empty list made a run whose every table is empty). Earlier versions took ``[]``: a run's
#: own ``config.yaml`` (``stored``) is read as it was, and that run resumes and certifies so.
RHOS_ALLOWED = (f"a list of at least one int in the range [0, {_validation.INT_LIMIT_TEXT}] "
                "(the radii of certify's table), e.g. [0, 50, 100]")


def _refuse_no_rhos(cfg: ExperimentConfig, given: object = None) -> None:
    """A config given anew with an empty ``certify.rhos``: one line naming the key, its range
    and ``given`` (the text or value the user gave; default the config's ``[]``)."""
    if not cfg.certify.rhos:
        raise ConfigError(str(param_error("certify.rhos", WHERE, RHOS_ALLOWED,
                                          cfg.certify.rhos if given is None else given)))


def _records(section: str) -> list[tuple[str, type]]:
    """``(attribute, class)`` of the typed sections whose keys YAML ``section`` holds."""
    return [(attr, _HINTS[attr]) for attr in SECTIONS[section]]


def _keys(section: str) -> list[str]:
    return [f.name for _, cls in _records(section) for f in dataclasses.fields(cls)]


# --------------------------------------------------------------------------------------------
# Building a config from dicts, YAML and overrides


def to_dict(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The config as the plain nested dicts of its YAML file (JSON-ready), sections and keys
    in their fixed order."""
    return {section: {key: _plain(value) for attr, _ in _records(section)
                      for key, value in dataclasses.asdict(getattr(cfg, attr)).items()}
            for section in SECTIONS}


def _plain(value):
    """A config value as YAML and JSON write it (a ``ModelRef`` is its text)."""
    if isinstance(value, Earlier):  # a stored run's seed or lr beyond a later bound
        return int(value) if isinstance(value, int) else float(value)
    return str(value) if isinstance(value, str) and type(value) is not str else value


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text, sections in their fixed order (``_QUIET_KEYS`` at
    their defaults left out)."""
    d = to_dict(cfg)
    for key, default in _QUIET_KEYS.items():
        section, name = key.split(".")
        if d[section].get(name, default) == default:
            d[section].pop(name, None)
    return yaml.dump(d, Dumper=_Dumper, sort_keys=False, default_flow_style=None)


def config_hash(cfg: ExperimentConfig) -> str:
    """SHA-256 of the settings that determine a run's predictions.

    The ``certify`` section (certification is re-run freely) and ``RESUMABLE_KEYS`` are left
    out, so a run may be resumed with other workers or other certification defaults.
    """
    text = json.dumps(_hashed(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _hashed(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The part of ``to_dict(cfg)`` that ``config_hash`` hashes."""
    d = to_dict(cfg)
    d.pop("certify")
    for key in RESUMABLE_KEYS:
        section, name = key.split(".")
        d[section].pop(name)
    if not d["training"].get("two_phase"):
        d["training"].pop("phase2_steps", None)  # no phase 2 is trained: cannot matter
    if d["training"].get("group_size") == "auto":  # "auto" is the former default, null
        d["training"]["group_size"] = None
    for key in _NULL_WAS_FALSE:
        section, name = key.split(".")
        if d[section].get(name, False) is None:
            d[section][name] = False
    for key, default in _LATER_KEYS.items():  # at their defaults: earlier runs' hashes
        section, name = key.split(".")
        if section in d and name in d[section] and d[section][name] == default:
            del d[section][name]
    return d


def config_diff(a: ExperimentConfig, b: ExperimentConfig, hashed: bool = False) -> list[str]:
    """Dotted keys whose values differ, as ``'key: a -> b'`` lines; ``hashed``: only those
    that make ``config_hash`` differ (not ``training.workers`` or the ``certify`` section)."""
    da, db = to_dict(a), to_dict(b)
    ha, hb = (_hashed(a), _hashed(b)) if hashed else (da, db)
    missing = object()
    out = []
    for section, values in da.items():
        for key, va in values.items():
            vb = db[section][key]
            if va != vb and (ha.get(section, {}).get(key, missing)
                             != hb.get(section, {}).get(key, missing)):
                out.append(f"{section}.{key}: {va!r} -> {vb!r}")
    return out


def from_dict(d: dict | None, overrides: dict[str, Any] | None = None, *,
              dropped: list[str] | None = None, stored: bool = False) -> ExperimentConfig:
    """Build and validate a config from nested dicts plus dotted ``overrides``.

    Missing keys take their defaults (a missing ``selection`` section, or one that names no
    scheme and no size: ``DEFAULT_SELECTION`` for the keys it does not give);
    unknown sections or keys raise a ``ConfigError`` that names the closest known key.
    ``dropped``: a list that receives ``"section.key (value)"`` for each value of ``d`` that
    gave way to the overrides (``_give_way``), so a command can say so. ``stored``: the
    config of a run already written (its ``config.yaml``), whose values beyond a bound added
    since (``later_bounds``) are read in the range the version that wrote it took.
    """
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"A config must be a mapping of sections ({', '.join(SECTIONS)}). "
                          f"Got {type(d).__name__} instead.")
    values: dict[str, dict[str, tuple[Any, bool]]] = {s: {} for s in SECTIONS}
    for section, body in d.items():
        _check_section(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"The config section {section!r} must be a mapping of keys. "
                              f"Got {shown(body)} instead.")
        for key, value in body.items():
            _check_key(section, key)
            values[section][key] = (value, False)
    file_scheme = values["selection"].get("scheme", ("binomial", False))[0]
    given: set[str] = set()  # the dotted keys the overrides give
    for dotted, value in (overrides or {}).items():
        section, key = _split_key(dotted)
        values[section][key] = (value, isinstance(value, str))
        given.add(f"{section}.{key}")
    before = {(section, key): value for section, body in values.items()
              for key, (value, _) in body.items()}
    _give_way(values, given, file_scheme)
    gave = [(section, key) for section, key in before if key not in values[section]]
    texts = [f"{section}.{key} ({shown(before[section, key])})" for section, key in gave]
    if dropped is not None:
        dropped.extend(texts)
    try:
        return _assemble(values, stored)
    except ConfigError as e:
        if not any(f"'{section}." in str(e) for section, _ in gave):
            raise  # nothing gave way in the section refused (say training.lr's): no note
        # a refusal of what is left (say knn's k, once the file's partition k gave way)
        # names what gave way, or the user reads "Got None" for a key the file gives
        raise ConfigError(f"{e} (The config file's {', '.join(texts)} "
                          f"{'is' if len(texts) == 1 else 'are'} not carried over to the "
                          "scheme the command line names.)") from None


def _assemble(values: dict[str, dict[str, tuple[Any, bool]]],
              stored: bool = False) -> ExperimentConfig:
    """``from_dict``'s config from its ``(value, from_text)`` pairs (``stored``: a run's)."""
    later = later_bounds() if stored else {}
    sel = values["selection"]
    if sel and not set(sel) & {"scheme", "ns", "p", "k", "d", "r"}:  # only T, seed, ...:
        for key, value in DEFAULT_SELECTION.items():  # the rest of the default selection
            sel.setdefault(key, (value, False))
    parts = {}
    for section in SECTIONS:
        if not values[section]:
            continue  # the ExperimentConfig defaults
        for attr, cls in _records(section):
            hints = typing.get_type_hints(cls)
            names = {f.name for f in dataclasses.fields(cls)}
            allowed = getattr(cls, "ALLOWED", {})  # keys whose values a type cannot say
            kwargs = {key: _coerce(value, hints[key], f"{section}.{key}", from_text,
                                   allowed.get(key))
                      for key, (value, from_text) in values[section].items() if key in names}
            for key, value in kwargs.items():  # beyond a bound added after the run was made
                bound = later.get(f"{section}.{key}")
                if (bound is not None and isinstance(value, int | float)
                        and not isinstance(value, bool) and value > bound):
                    kwargs[key] = earlier(value)
                elif isinstance(value, Earlier):  # a stored run's value given anew (a dict
                    kwargs[key] = _plain(value)  # of a loaded config's seed): the bound
            parts[attr] = _build(cls, section, kwargs)
    try:
        cfg = ExperimentConfig(**parts)
    except ConfigError as e:
        raise _as_given(e, values) from None
    if not stored:
        _refuse_no_rhos(cfg, values["certify"].get("rhos", (None,))[0])
    return cfg


def _as_given(refused: ConfigError, values: dict[str, dict[str, tuple[Any, bool]]]
              ) -> ConfigError:
    """A refusal across sections (``ExperimentConfig``'s checks) echoes the value its section
    made of the text given (``--training.dtype BFloat16`` on a CPU: "Got 'bfloat16'"): the
    text given instead, where the two differ only as a choice's spelling (case, ``-``/``_``,
    spaces)."""
    text = str(refused)
    m = re.match(r"The '(\w+)\.(\w+)' parameter of ", text)
    got = re.search(r" Got '([^']*)' instead\.$", text)
    if m is None or got is None:
        return refused
    value = values.get(m[1], {}).get(m[2], (None,))[0]

    def spelt(x: str) -> str:
        return x.strip().lower().replace("-", "_")

    if not isinstance(value, str) or value == got[1] or spelt(value) != spelt(got[1]):
        return refused
    return ConfigError(f"{text[:got.start()]} Got {shown(value)} instead.")


def as_given(refused: Exception, d: dict | None = None, overrides: dict | None = None
             ) -> Exception:
    """``refused`` (a ``ConfigError`` raised once the config was built: a run's checks of the
    data, the model or the device) with the text the user gave for the key it names, where
    the config had normalised a choice's spelling (``--training.device CUDA`` on a machine
    without CUDA: "Got 'cuda'", a value never typed): ``d`` is the config file's mapping,
    ``overrides`` the ``--section.key value`` pairs (these win, as in ``from_dict``). Any other
    error, or a value that differs from the one echoed by more than spelling, is returned as
    it is."""
    if not isinstance(refused, ConfigError):
        return refused
    values: dict[str, dict[str, tuple[Any, bool]]] = {s: {} for s in SECTIONS}
    for section, body in (d or {}).items():
        if section in values and isinstance(body, dict):
            for key, value in body.items():
                values[section][key] = (value, False)
    for dotted, value in (overrides or {}).items():
        section, _, key = str(dotted).partition(".")
        if section in values:
            values[section][key] = (value, isinstance(value, str))
    return _as_given(refused, values)


#: The selection keys each scheme reads (``seed`` aside); ``T`` is fixed by the partition,
#: finite_aggregation, knn and rnn schemes.
_SCHEME_KEYS = {"without_replacement": {"ns", "T"}, "with_replacement": {"ns", "T"},
                "binomial": {"ns", "p", "T"}, "partition": {"k", "T"},
                "finite_aggregation": {"k", "d", "T"}, "knn": {"k", "T"}, "rnn": {"r", "T"}}
#: What ``k`` counts: buckets (partition, finite_aggregation) or neighbours (knn).
_K_MEANS = {"partition": "buckets", "finite_aggregation": "buckets", "knn": "neighbours"}


def _give_way(values: dict[str, dict[str, tuple[Any, bool]]], given: set[str],
              file_scheme) -> None:
    """Drop the file's values that the overrides (``given``, dotted keys) contradict
    (``file_scheme``: the scheme the file names, before the overrides).

    ``--selection.scheme knn --selection.k 3`` on a bagging file (``ns: 50``, ``T: 500``) was
    refused on ``selection.T``, then on ``selection.ns``: the user had to find
    ``--selection.T null --selection.ns null`` one error at a time. The command line wins
    over the file, so a value of the file gives way where the overrides make it invalid:

    - a new scheme: the file's selection keys it does not read (``ns`` and ``T`` for
      partition, ``k`` for bagging, ...), its ``k`` where ``k`` counts something else
      (partition's parts are not knn's neighbours: the new scheme's ``k`` must be given),
      and, for a scheme other than partition and finite_aggregation, the file's
      ``run.store_ranks: true`` and ``certify.aggregation: roe`` (the run-off election's);
    - a scheme that fixes ``T`` (``k``, ``k * d``, 1) reached through the overrides
      (``scheme``, ``k``, ``d``): the file's ``T`` where it differs;
    - binomial's ``ns`` and ``p`` are alternatives: the file's one where the other is given.

    A value the overrides give is never dropped (contradictions there stay errors), and
    neither is one where the file alone is inconsistent. But for ``k`` across a change of
    what it counts, only values that would be refused are dropped, so such a config was an
    error before and a valid one reads as before (and keeps its hash).
    """
    sel = values["selection"]
    given_sel = {k.split(".", 1)[1] for k in given if k.startswith("selection.")}
    if not given_sel:
        return
    try:
        scheme = _scheme(sel["scheme"][0]) if "scheme" in sel else "binomial"
    except ConfigError:
        return  # SelectionConfig says what is wrong with the scheme
    try:
        old = _scheme(file_scheme)
    except ConfigError:
        old = None
    filed = set(sel) - given_sel
    if "scheme" in given_sel and scheme != old:
        for key in filed & {"ns", "p", "k", "d", "r", "T"}:
            # k gives way where the file's scheme counted something else with it; a file
            # that names no scheme (or one without k) gives a k the command line's scheme reads
            if key not in _SCHEME_KEYS[scheme] or (
                    key == "k" and old in _K_MEANS and _K_MEANS[old] != _K_MEANS[scheme]):
                del sel[key]
        if scheme not in _K_MEANS or _K_MEANS[scheme] != "buckets":
            for section, key, value in (("run", "store_ranks", True),
                                        ("certify", "aggregation", "roe")):
                held = values[section].get(key, (None,))[0]
                if f"{section}.{key}" not in given and (
                        held is value or (isinstance(held, str) and held.lower() == value)):
                    del values[section][key]
    if "T" in filed and "T" in sel and given_sel & {"scheme", "k", "d"}:
        fixed = _fixed_T(scheme, sel)
        if fixed is not None and sel["T"][0] != fixed:
            del sel["T"]
    if scheme == "binomial":
        for key, other in (("ns", "p"), ("p", "ns")):
            if key in given_sel and other in filed and other in sel \
                    and not _null(*sel[key]):
                del sel[other]


def _null(value, from_text: bool) -> bool:
    return value is None or (from_text and str(value).strip().lower() in _NONE)


def _scheme(value) -> str:
    return choice(value, "selection.scheme", SCHEMES, PLAN_SCHEME_ALIASES)


def _fixed_T(scheme: str, sel: dict[str, tuple[Any, bool]]) -> int | None:
    """``T`` as ``scheme`` fixes it from ``sel``'s ``k`` and ``d`` (None: not fixed, or a
    value SelectionConfig will refuse)."""
    try:
        k = int(sel["k"][0]) if scheme in ("partition", "finite_aggregation") else None
        d = int(sel["d"][0]) if scheme == "finite_aggregation" else None
    except (KeyError, TypeError, ValueError):
        return None
    return fixed_T(scheme, k, d)


def _build(cls: type, section: str, kwargs: dict):
    """One typed section; ``TrainConfig`` is told it belongs to the config, so that its
    errors name the dotted key."""
    if cls is not TrainConfig:
        return cls(**kwargs)
    try:
        return TrainConfig(**kwargs, where=WHERE, key_prefix=f"{section}.")
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def refuse_earlier(cfg: ExperimentConfig) -> None:
    """Refuse ``cfg`` for a new run where it holds a value a stored run's ``config.yaml`` was
    read with beyond a bound added since (``_validation.Earlier``: ``RunDir.load_config`` of
    an earlier version's run, carried into this config as it was or through
    ``dataclasses.replace``): the same one line as that value given anew. Only that run
    itself (resumed, updated, attacked) keeps it; its config given again for another folder
    is refused (``poisoncert train OLD/config.yaml --run-dir NEW``), and so is its config
    object (``train_run(RunDir(OLD).load_config(), NEW)``). An empty ``certify.rhos``, which
    earlier versions stored, is refused here in the same way (``RHOS_ALLOWED``)."""
    _refuse_no_rhos(cfg)
    if any(isinstance(getattr(section, f.name), Earlier)
           for section in (getattr(cfg, g.name) for g in dataclasses.fields(cfg))
           for f in dataclasses.fields(section)):
        from_dict(to_dict(cfg))  # the plain values: the bound's refusal


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None
                = None, *, stored: bool = False) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``overrides``.

    ``overrides`` is a dict of dotted keys (``{"training.steps": "300"}``) or a list of
    command-line words (``["--training.steps", "300", "--selection.ns=10"]``).
    """
    d = None if path is None else read_config_file(path)
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    return from_dict(d, overrides, stored=stored)


def read_config_file(path: str | Path) -> dict | None:
    """The nested dicts a YAML config file holds (None for a file without any: empty or
    comments only), or a ``ConfigError`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"Cannot read the config file '{path}': {e.strerror or e}.") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"The config file '{path}' is not YAML text: byte "
                          f"{e.object[e.start]:#04x} at offset {e.start} is not "
                          "UTF-8.") from None
    try:
        d = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"The config file '{path}' {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"The config file '{path}' is not valid YAML: {e}") from None
    except ValueError as e:  # an int of more than 4,300 digits (Python's limit)
        raise ConfigError(f"The config file '{path}' cannot be read: "
                          f"{' '.join(str(e).split())}.") from None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise ConfigError(f"The config file '{path}' is nested too deeply to be read (a "
                          "config holds sections of keys and values).") from None
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"The config file '{path}' must hold a mapping of sections (data, "
                          f"selection, training, ...); it holds a {type(d).__name__}.")
    return d


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML leaves it to
    the reader; PyYAML would keep the last silently). Merge keys (``<<``) may be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        where = (f"line {line}" if seen[key] == line
                                 else f"lines {seen[key]} and {line}")
                        raise _DuplicateKey(f"has the key {key!r} twice in one mapping "
                                            f"({where}).")
                    seen[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes text the loader would read as a number (below)."""


# YAML 1.1 (PyYAML) reads ``1e-3`` as text: its floats need a point (``1.0e-3``). A config's
# ``lr: 1e-3`` is a number, as YAML 1.2 and the command line (``--training.lr 1e-3``) read it;
# the dumper learns the same rule, so text such as a data_dir named ``1e5`` is written quoted
# and reads back as text.
for _cls in (_UniqueKeyLoader, _Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))


def parse_overrides(args: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Dotted overrides from command-line words: ``--a.b value``, ``--a.b=value``.

    A ``--a.b`` followed by another option (or nothing) is a boolean flag: ``true``.
    Values stay text; ``from_dict`` coerces them to each field's type.
    """
    out: dict[str, str] = {}
    args = list(args)
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--") or len(word) <= 2:
            raise ConfigError(f"Config overrides must look like '--section.key value'. "
                              f"Got {shown(word)} instead.")
        name = word[2:]
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 2
        else:
            value = None
            i += 1
        name = name.replace("-", "_")
        section, key = _split_key(name)
        if value is None:  # a bare flag: a boolean key's ``true``, any other key's error
            tp = _key_type(section, key)
            if tp is not bool and bool not in typing.get_args(tp):
                raise ConfigError(f"The {name!r} parameter of {WHERE} must be "
                                  f"{_type_text(tp)}. Got no value after '--{word[2:]}' "
                                  f"instead.")
            value = "true"
        out[name] = value
    return out


def _key_type(section: str, key: str):
    """The type annotation of the config key ``section.key`` (a known key)."""
    for _, cls in _records(section):
        hints = typing.get_type_hints(cls)
        if key in hints:
            return hints[key]
    raise KeyError(f"{section}.{key}")


# --------------------------------------------------------------------------------------------
# Keys and types


def _all_keys() -> list[str]:
    return [f"{s}.{key}" for s in SECTIONS for key in _keys(s)]


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_section(section) -> None:
    if section not in SECTIONS:
        names = ", ".join(repr(s) for s in SECTIONS)
        raise ConfigError(f"Unknown config section {shown(section)}: the sections are {names}."
                          + _suggest(str(section), list(SECTIONS)))


def _check_key(section: str, key) -> None:
    names = _keys(section)
    if key not in names:
        raise ConfigError(f"Unknown config key {shown(f'{section}.{key}')}: the {section!r} "
                          f"section takes {', '.join(repr(n) for n in names)}."
                          + _suggest(f"{section}.{key}", _all_keys()))


def _split_key(dotted: str) -> tuple[str, str]:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"Unknown config key {shown(dotted)}: keys are 'section.key', such as "
                          f"'training.steps'." + _suggest(dotted, _all_keys()))
    _check_section(parts[0])
    _check_key(parts[0], parts[1])
    return parts[0], parts[1]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"null", "none", "~", ""}


def _plain_types(args) -> list:
    """The types of a union a file can hold (a model is a str there, or else a callable)."""
    return [a for a in args
            if a in (int, float, bool, str) or typing.get_origin(a) in (list, dict)]


def _type_text(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        text = " or ".join(_type_text(a) for a in _plain_types(args))
        return text + " or null" if type(None) in args else text
    if origin is list:  # "a list of ints", "a list of real numbers"
        return "a list of " + _type_text(args[0]).split(" ", 1)[1].replace(
            " (true or false)", "") + "s"
    if origin is dict:
        return "a mapping"
    return {int: "an int", float: "a real number", bool: "a boolean (true or false)",
            str: "a string"}.get(tp, str(tp))


def _coerce(value, tp, key: str, from_text: bool, allowed: str | None = None):
    """``value`` as type ``tp``; text from the command line is parsed first. ``allowed``:
    what the error says the key takes (default: ``tp`` in words)."""
    if not from_text:  # a Python caller's np.int64(8), np.array([1, 7]), Path("data"): as
        value = _validation.plain(value, nested=False)  # a file's (they were refused as
        # "must be an int or null. Got 8 instead.")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = param_error(key, WHERE, allowed or _type_text(tp), value)
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_text and value.strip().lower() in _NONE):
            return None
        for option in _plain_types(args):  # in order: int before str (group_size: auto)
            try:
                return _coerce(value, option, key, from_text)
            except ConfigError:
                continue
        raise ConfigError(str(bad))
    if origin is list:
        if from_text:
            text = value.strip()
            if text.startswith("["):
                try:
                    value = yaml.safe_load(text)
                except (yaml.YAMLError, RecursionError):
                    raise ConfigError(str(bad)) from None
            else:  # "0,,5" and "0,5," have an empty element: refused, not dropped
                value = text.split(",") if text else []
                if any(not v.strip() for v in value):
                    raise ConfigError(str(bad))
        if not isinstance(value, (list, tuple)):
            value = [value]
        try:
            return [_coerce(v, args[0], key, from_text and isinstance(v, str)) for v in value]
        except ConfigError:
            raise ConfigError(str(bad)) from None
    if origin is dict:
        if from_text:
            try:
                value = yaml.safe_load(value)
            except (yaml.YAMLError, RecursionError):
                raise ConfigError(str(bad)) from None
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(str(bad))
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(str(bad))
    if tp is int:
        if from_text:
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(str(bad)) from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(str(bad))
    if tp is float:
        if from_text:
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(str(bad)) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(str(bad))
    if tp is str:
        if isinstance(value, str):
            return value.strip() if from_text else value
        raise ConfigError(str(bad))
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # pragma: no cover
