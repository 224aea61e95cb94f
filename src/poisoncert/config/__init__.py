"""Experiment configuration: typed sections (``sections``), YAML files and dotted overrides
(``files``). See ``poisoncert.config.files`` for the file layout."""

from poisoncert.config.files import (
    RESUMABLE_KEYS,
    config_diff,
    config_hash,
    from_dict,
    load_config,
    parse_overrides,
    to_dict,
    to_yaml,
)
from poisoncert.config.sections import (
    DATASETS,
    DEFAULT_SELECTION,
    SCHEMES,
    SECTIONS,
    AlgorithmConfig,
    CertifyConfig,
    ConfigError,
    DataConfig,
    ExecutionConfig,
    ExperimentConfig,
    RunConfig,
    SelectionConfig,
    config_error,
)
from poisoncert.training.settings import TrainConfig

__all__ = [
    "DATASETS",
    "DEFAULT_SELECTION",
    "RESUMABLE_KEYS",
    "SCHEMES",
    "SECTIONS",
    "AlgorithmConfig",
    "CertifyConfig",
    "ConfigError",
    "DataConfig",
    "ExecutionConfig",
    "ExperimentConfig",
    "RunConfig",
    "SelectionConfig",
    "TrainConfig",
    "config_diff",
    "config_error",
    "config_hash",
    "from_dict",
    "load_config",
    "parse_overrides",
    "to_dict",
    "to_yaml",
]
