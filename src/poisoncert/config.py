"""Experiment configuration: typed sections, YAML files and dotted command-line overrides.

An experiment is one YAML file with five sections::

    data:      {name: digits, classes: null, n_clean: 0, test_limit: null, ...}
    selection: {scheme: binomial, ns: 30, T: 300, seed: 0}
    training:  {model: mlp, steps: 100, batch_size: 32, ...}
    certify:   {alpha: 0.001, method: bonferroni, model: P6, rhos: [0, 1, 2, 5]}
    run:       {chunk_size: 50}

``load_config(path, overrides)`` reads it, applies overrides such as ``--training.steps 300``
(spaCy style; values are coerced to the field's type) and validates every value before anything
runs. Every error is a ``ConfigError`` (a ``ValueError``) of the project's one shape, naming the
key, the allowed values and what was given::

    The 'selection.scheme' parameter of the config must be one of 'without_replacement', ...
    Got 'bagging' instead.

Checks that need the data (``ns`` at most ``|D^p|``, class labels, clean indices) are made by
``poisoncert.pipeline`` after loading it, still before any file is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from poisoncert import bounds
from poisoncert._validation import INT_LIMIT, check_int, check_real, param_error
from poisoncert.data import registry as data_registry
from poisoncert.selection import PARTITION
from poisoncert.stats import METHODS

__all__ = [
    "CertifyConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "RunConfig",
    "SelectionConfig",
    "TrainingConfig",
    "DATASETS",
    "SCHEMES",
    "config_error",
    "config_hash",
    "from_dict",
    "load_config",
    "parse_overrides",
    "to_dict",
    "to_yaml",
]

#: Dataset names ``poisoncert.data.load_dataset`` knows, besides ``npz:<path>``.
DATASETS = tuple(data_registry.list_datasets())
#: Selection schemes: the paper's three random ones and the deterministic partition (DPA).
SCHEMES = (*bounds.SCHEMES, PARTITION)
_SCHEME_ALIASES = {**bounds.SCHEME_ALIASES, "dpa": PARTITION}
PATHS = ("fast", "reference")
DEVICES = ("cpu", "cuda")
#: Learners from scikit-learn take the prefix ``sklearn:`` (``sklearn:knn``); the others are
#: the torch models of ``poisoncert.training``.
SKLEARN_PREFIX = "sklearn:"

_WHERE = "the config"


class ConfigError(ValueError):
    """An invalid experiment configuration (unknown key, bad type or value)."""


@dataclass
class DataConfig:
    """The data set and its split into a known-clean part ``D^c`` and an attackable ``D^p``.

    At most one of ``n_clean``, ``clean_fraction`` and ``clean_indices`` chooses ``D^c`` (the
    paper's case 2): ``n_clean`` / ``clean_fraction`` take a random subset of the training set
    (drawn with ``clean_seed``), ``clean_indices`` lists training-set indices. ``D^c`` joins every
    sub-dataset and is never sampled; ``D^p`` is the rest, and ``n = |D^p|`` enters the bounds.
    ``test_limit`` keeps the first test points only. ``deskew`` deskews every training and
    test image (``poisoncert.data.transforms.deskew``: a fixed per-image preprocessing, so the
    certificates are unchanged).

    ``poisoned_classes`` (the paper's case 3; original class ids, e.g. ``[9]``) instead makes
    ``D^p`` the training samples of those classes and ``D^c`` all the others; it excludes the
    three options above. With ``training.two_phase`` it gives Algorithm 3.
    """

    name: str = "digits"
    classes: list[int] | None = None
    data_dir: str | None = None
    download: bool = False
    n_clean: int = 0
    clean_fraction: float | None = None
    clean_indices: list[int] | None = None
    clean_seed: int = 0
    test_limit: int | None = None
    poisoned_classes: list[int] | None = None
    deskew: bool = False


@dataclass
class SelectionConfig:
    """How the ``T`` sub-datasets are drawn from ``D^p`` (``poisoncert.selection``).

    ``ns`` is the sub-dataset size (bagging) or, for ``binomial`` without ``p``, means
    ``p = ns / n``; ``k`` is the number of parts of ``partition`` (then ``T = k``). ``seed`` is
    the root seed: classifier ``i`` uses ``selection.model_seed(seed, i)``.

    ``ns``/``p`` and ``T`` have no defaults: a config that has a ``selection`` section states
    them (only a config without one gets ``DEFAULT_SELECTION``).
    """

    scheme: str = "binomial"
    ns: int | None = None
    p: float | None = None
    k: int | None = None
    T: int | None = None
    seed: int = 0


#: The selection of a config that has no ``selection`` section.
DEFAULT_SELECTION = {"scheme": "binomial", "ns": 50, "T": 100}


@dataclass
class TrainingConfig:
    """How each base classifier is trained (``poisoncert.training.TrainConfig`` and the call).

    ``model`` is a torch model of ``poisoncert.training`` (``mlp``, ``lenet5``, ``resnet18``)
    or a scikit-learn learner ``sklearn:<name>`` (``sklearn:knn``, ...; see
    ``training.SKLEARN_LEARNERS``). ``optimizer``, ``lr``, ``lr_schedule``, ``momentum``,
    ``weight_decay``, ``balance``, ``augment``, ``max_shift``, ``rotation``, ``scale``,
    ``shear``, ``elastic`` (random warps; 0 is off), ``dtype``, ``group_size`` (``null``: the
    engine's default) and ``eval_batch_size`` go to ``TrainConfig``, which checks them when a
    run starts. ``path`` is ``fast`` or ``reference``; ``workers`` is the number of local
    processes and never changes the predictions.

    ``two_phase`` (needs ``data.poisoned_classes``): the paper's Algorithm 3
    (``poisoncert.twophase``): each base classifier's phase 1 separates "a clean class" from
    each poisoned class with these settings; one phase-2 model, trained on ``D^c`` alone for
    ``phase2_steps`` steps (same settings otherwise), resolves the clean classes.
    """

    model: str = "mlp"
    steps: int = 200
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    balance: bool = True
    augment: bool = False
    max_shift: int = 2
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic: float = 0.0
    dtype: str = "float32"
    group_size: int | None = None
    eval_batch_size: int = 500
    path: str = "fast"
    workers: int = 1
    device: str = "cpu"
    save_weights: bool = False
    two_phase: bool = False
    phase2_steps: int = 2000


@dataclass
class CertifyConfig:
    """Defaults for certifying a run; ``alpha`` is the failure probability per test point."""

    alpha: float = 0.001
    method: str = "bonferroni"
    model: str = "P6"
    rhos: list[int] = field(default_factory=lambda: [0, 1, 2, 5, 10, 20, 50])


@dataclass
class RunConfig:
    """``chunk_size`` classifiers are trained, saved and resumed as one unit."""

    chunk_size: int = 50


@dataclass
class ExperimentConfig:
    """A whole experiment; ``to_dict`` / ``from_dict`` round-trip it through YAML."""

    data: DataConfig = field(default_factory=DataConfig)
    selection: SelectionConfig = field(
        default_factory=lambda: SelectionConfig(**DEFAULT_SELECTION))
    training: TrainingConfig = field(default_factory=TrainingConfig)
    certify: CertifyConfig = field(default_factory=CertifyConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        validate(self)

    @property
    def T(self) -> int:
        """The number of base classifiers (``k`` for the partition scheme)."""
        s = self.selection
        return int(s.k if s.scheme == "partition" else s.T)


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "selection": SelectionConfig,
    "training": TrainingConfig,
    "certify": CertifyConfig,
    "run": RunConfig,
}

#: Keys added after the first runs, and their defaults: left out of ``config_hash`` at the
#: default, so run directories written before they existed keep their hash (and resume).
_LATER_KEYS = {"training.rotation": 0.0, "training.scale": 0.0, "training.shear": 0.0,
               "training.elastic": 0.0, "training.lr_schedule": "constant",
               "data.deskew": False}

#: Keys that never change a run's predictions, so they may differ when a run is resumed.
RESUMABLE_KEYS = ("training.workers",)


# --------------------------------------------------------------------------------------------
# Building a config from dicts, YAML and overrides


def to_dict(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The config as plain nested dicts (YAML/JSON-ready)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text, sections in their fixed order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def config_hash(cfg: ExperimentConfig) -> str:
    """SHA-256 of the settings that determine a run's predictions.

    The ``certify`` section (certification is re-run freely) and ``RESUMABLE_KEYS`` are left
    out, so a run may be resumed with other workers or other certification defaults.
    """
    d = to_dict(cfg)
    d.pop("certify")
    for key in RESUMABLE_KEYS:
        section, name = key.split(".")
        d[section].pop(name)
    if not d["training"].get("two_phase"):
        d["training"].pop("phase2_steps", None)  # no phase 2 is trained: cannot matter
    for key, default in _LATER_KEYS.items():  # at their defaults: earlier runs' hashes
        section, name = key.split(".")
        if name in d[section] and d[section][name] == default:
            del d[section][name]
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_diff(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ, as ``'key: a -> b'`` lines."""
    da, db = to_dict(a), to_dict(b)
    out = []
    for section, values in da.items():
        for key, va in values.items():
            vb = db[section][key]
            if va != vb:
                out.append(f"{section}.{key}: {va!r} -> {vb!r}")
    return out


def from_dict(d: dict | None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Build and validate a config from nested dicts plus dotted ``overrides``.

    Missing keys take their defaults (a missing ``selection`` section: ``DEFAULT_SELECTION``);
    unknown sections or keys raise a ``ConfigError`` that names the closest known key.
    """
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"A config must be a mapping of sections ({', '.join(_SECTIONS)}). "
                          f"Got {type(d).__name__} instead.")
    values: dict[str, dict[str, tuple[Any, bool]]] = {s: {} for s in _SECTIONS}
    for section, body in d.items():
        _check_section(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"The config section {section!r} must be a mapping of keys. "
                              f"Got {body!r} instead.")
        for key, value in body.items():
            _check_key(section, key)
            values[section][key] = (value, False)
    for dotted, value in (overrides or {}).items():
        section, key = _split_key(dotted)
        values[section][key] = (value, isinstance(value, str))
    sections = {}
    for section, cls in _SECTIONS.items():
        if not values[section]:
            continue  # the ExperimentConfig default
        hints = typing.get_type_hints(cls)
        kwargs = {key: _coerce(value, hints[key], f"{section}.{key}", from_text)
                  for key, (value, from_text) in values[section].items()}
        sections[section] = cls(**kwargs)
    return ExperimentConfig(**sections)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None
                = None) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``overrides``.

    ``overrides`` is a dict of dotted keys (``{"training.steps": "300"}``) or a list of
    command-line words (``["--training.steps", "300", "--selection.ns=10"]``).
    """
    d = None
    if path is not None:
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
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"The config file '{path}' must hold a mapping of sections (data, "
                              f"selection, training, ...); it holds a {type(d).__name__}.")
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    return from_dict(d, overrides)


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
                              f"Got {word!r} instead.")
        name = word[2:]
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 2
        else:
            value = "true"
            i += 1
        name = name.replace("-", "_")
        _split_key(name)
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# Keys and types


def _all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_section(section) -> None:
    if section not in _SECTIONS:
        shown = ", ".join(repr(s) for s in _SECTIONS)
        raise ConfigError(f"Unknown config section {section!r}: the sections are {shown}."
                          + _suggest(str(section), list(_SECTIONS)))


def _check_key(section: str, key) -> None:
    names = [f.name for f in dataclasses.fields(_SECTIONS[section])]
    if key not in names:
        shown = ", ".join(repr(n) for n in names)
        raise ConfigError(f"Unknown config key '{section}.{key}': the {section!r} section "
                          f"takes {shown}." + _suggest(f"{section}.{key}", _all_keys()))


def _split_key(dotted: str) -> tuple[str, str]:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"Unknown config key {dotted!r}: keys are 'section.key', such as "
                          f"'training.steps'." + _suggest(dotted, _all_keys()))
    _check_section(parts[0])
    _check_key(parts[0], parts[1])
    return parts[0], parts[1]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"null", "none", "~", ""}


def _type_text(tp) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type_text(a) for a in inner) + " or null"
    if origin is list:
        return f"a list of {_type_text(args[0])}s"
    return {int: "an int", float: "a real number", bool: "a boolean (true or false)",
            str: "a string"}.get(tp, str(tp))


def _coerce(value, tp, key: str, from_text: bool):
    """``value`` as type ``tp``; text from the command line is parsed first."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = param_error(key, _WHERE, _type_text(tp), value)
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_text and value.strip().lower() in _NONE):
            return None
        inner = [a for a in args if a is not type(None)]
        (tp,) = inner
        try:
            return _coerce(value, tp, key, from_text)
        except ConfigError:
            raise ConfigError(str(bad)) from None
    if origin is list:
        if from_text:
            text = value.strip()
            if text.startswith("["):
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError:
                    raise ConfigError(str(bad)) from None
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        try:
            return [_coerce(v, args[0], key, from_text and isinstance(v, str)) for v in value]
        except ConfigError:
            raise ConfigError(str(bad)) from None
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


# --------------------------------------------------------------------------------------------
# Validation (everything that does not need the data)


def config_error(key: str, allowed: str, got) -> ConfigError:
    """The one error shape, for a config key: "The 'selection.ns' parameter of the config
    must be ... Got ... instead."."""
    return ConfigError(str(param_error(key, _WHERE, allowed, got)))


def _choice(value: str, key: str, choices, aliases=None) -> str:
    key_text = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
    for c in choices:
        if key_text == c.lower():
            return c
    if aliases and key_text in aliases:
        return aliases[key_text]
    raise config_error(key, "one of " + ", ".join(repr(c) for c in choices), value)


def _int(value, key: str, low=None, high=None):
    if value is None:
        return None
    try:
        return check_int(value, key, _WHERE, low=low, high=high)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _real(value, key: str, low: float, high: float | None, low_open=True, high_open=True):
    if value is None:
        return None
    try:
        return check_real(value, key, _WHERE, low=low, high=high, low_open=low_open,
                          high_open=high_open)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate(cfg: ExperimentConfig) -> None:
    """Check every value that can be checked without the data; canonicalise choices in place.

    Raises a ``ConfigError`` naming the first bad key.
    """
    d, s, t, c, r = cfg.data, cfg.selection, cfg.training, cfg.certify, cfg.run
    # data
    if not (isinstance(d.name, str) and d.name.startswith("npz:") and len(d.name) > 4):
        d.name = _choice(d.name, "data.name", DATASETS + ("npz:<path>",), data_registry.ALIASES)
        if d.name == "npz:<path>":
            raise config_error("data.name", "one of " + ", ".join(repr(x) for x in DATASETS)
                               + " or 'npz:<path>'", d.name)
    if d.classes is not None:
        if len(d.classes) < 2 or len(set(d.classes)) != len(d.classes) or min(d.classes) < 0:
            raise config_error("data.classes", "null or a list of at least two distinct "
                               "class labels >= 0", d.classes)
    _int(d.n_clean, "data.n_clean", low=0)
    _real(d.clean_fraction, "data.clean_fraction", 0.0, 1.0, low_open=False)
    given = [k for k, v in (("n_clean", d.n_clean or None), ("clean_fraction", d.clean_fraction),
                            ("clean_indices", d.clean_indices),
                            ("poisoned_classes", d.poisoned_classes)) if v is not None]
    if len(given) > 1:
        raise ConfigError("At most one of 'data.n_clean', 'data.clean_fraction', "
                          "'data.clean_indices' and 'data.poisoned_classes' may be given. "
                          f"Got {', '.join(given)}.")
    if d.poisoned_classes is not None and (
            not d.poisoned_classes or len(set(d.poisoned_classes)) != len(d.poisoned_classes)
            or min(d.poisoned_classes) < 0):
        raise config_error("data.poisoned_classes", "null or a non-empty list of distinct "
                           "class labels >= 0", d.poisoned_classes)
    if d.clean_indices is not None:
        if len(set(d.clean_indices)) != len(d.clean_indices) or min(d.clean_indices,
                                                                   default=0) < 0:
            raise config_error("data.clean_indices", "a list of distinct training-set indices "
                               ">= 0", d.clean_indices)
    _int(d.clean_seed, "data.clean_seed", low=0)
    _int(d.test_limit, "data.test_limit", low=1)
    # selection
    s.scheme = _choice(s.scheme, "selection.scheme", SCHEMES, _SCHEME_ALIASES)
    _int(s.seed, "selection.seed", low=0)
    if s.scheme == "partition":
        if s.k is None:
            raise config_error("selection.k", "an int >= 1 for the partition scheme", None)
        _int(s.k, "selection.k", low=1)
        if s.T is not None and s.T != s.k:
            raise config_error("selection.T", f"null or equal to selection.k = {s.k} for the "
                               "partition scheme (one classifier per part)", s.T)
        for key in ("ns", "p"):
            if getattr(s, key) is not None:
                raise config_error(f"selection.{key}", "null for the partition scheme (it uses "
                                   "selection.k)", getattr(s, key))
    else:
        if s.k is not None:
            raise config_error("selection.k", f"null for the {s.scheme} scheme (k is for "
                               "partition)", s.k)
        _int(s.ns, "selection.ns", low=1)
        _real(s.p, "selection.p", 0.0, 1.0)
        if s.scheme == "binomial":
            if s.ns is None and s.p is None:
                raise config_error("selection.p", "a real number in the range (0, 1) (or give "
                                   "selection.ns, meaning p = ns / n) for the binomial scheme",
                                   None)
            if s.ns is not None and s.p is not None:
                raise ConfigError("Give one of 'selection.ns' and 'selection.p' for the "
                                  f"binomial scheme. Got ns={s.ns} and p={s.p}.")
        else:
            if s.ns is None:
                raise config_error("selection.ns", f"an int >= 1 for the {s.scheme} scheme", None)
            if s.p is not None:
                raise config_error("selection.p", f"null for the {s.scheme} scheme (it uses "
                                   "selection.ns)", s.p)
        if s.T is None:
            raise config_error("selection.T", "an int >= 1 (the number of base classifiers)",
                               None)
        _int(s.T, "selection.T", low=1)
    # training
    if not isinstance(t.model, str) or not t.model.strip():
        raise config_error("training.model", "a model name", t.model)
    t.model = t.model.strip()
    if t.model.startswith(SKLEARN_PREFIX) and len(t.model) == len(SKLEARN_PREFIX):
        raise config_error("training.model", "'sklearn:<learner>' or a torch model name",
                           t.model)
    _int(t.steps, "training.steps", low=1)
    _int(t.batch_size, "training.batch_size", low=1)
    _real(t.lr, "training.lr", 0.0, None)
    _real(t.weight_decay, "training.weight_decay", 0.0, None, low_open=False)
    _int(t.max_shift, "training.max_shift", low=0)
    for key, high, high_open in (("rotation", 180.0, False), ("scale", 1.0, True),
                                 ("shear", 90.0, True), ("elastic", None, True)):
        setattr(t, key, float(_real(getattr(t, key), f"training.{key}", 0.0, high,
                                    low_open=False, high_open=high_open)))
    _int(t.group_size, "training.group_size", low=1)
    _int(t.eval_batch_size, "training.eval_batch_size", low=1)
    t.path = _choice(t.path, "training.path", PATHS)
    t.lr_schedule = _choice(t.lr_schedule, "training.lr_schedule", ("constant", "cosine"))
    _int(t.workers, "training.workers", low=1)
    t.device = _choice(t.device, "training.device", DEVICES)
    _int(t.phase2_steps, "training.phase2_steps", low=1)
    if t.two_phase:
        if d.poisoned_classes is None:
            raise config_error("training.two_phase", "false unless data.poisoned_classes is "
                               "given (the two-phase classifier needs clean classes)", True)
        if t.model.startswith(SKLEARN_PREFIX):
            raise config_error("training.two_phase", "false for a scikit-learn learner", True)
    # certify
    _real(c.alpha, "certify.alpha", 0.0, 1.0)
    c.method = _choice(c.method, "certify.method", METHODS)
    c.model = _choice(c.model, "certify.model", bounds.MODELS, bounds.MODEL_ALIASES)
    if any(not 0 <= rho <= INT_LIMIT for rho in c.rhos):  # no int64 overflow later
        raise config_error("certify.rhos", f"a list of ints in the range [0, "
                           f"{INT_LIMIT}]", c.rhos)
    c.rhos = sorted(set(c.rhos))
    # run
    _int(r.chunk_size, "run.chunk_size", low=1)
