"""Every experiment config loads and validates, and so does every run of experiments/run.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from poisoncert.config import load_config

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))


def _runner():
    spec = importlib.util.spec_from_file_location("experiments_run", EXPERIMENTS / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.T >= 1


def test_runner_groups_validate():
    run = _runner()
    names = set()
    for group, items in run.GROUPS.items():
        assert items, group
        for name, config, overrides in items:
            assert name not in names, f"duplicate run name {name}"
            names.add(name)
            load_config(EXPERIMENTS / config,
                        {k: str(v) if isinstance(v, bool) else v for k, v in overrides.items()})
            assert run._group_of(name) == group
