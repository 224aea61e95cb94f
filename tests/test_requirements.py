"""``constraints-oldest.txt`` pins exactly the floors of ``pyproject.toml``, so installing with it
checks the versions the project says it supports (README, "Supported versions")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_REQ = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)$")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors() -> dict[str, str]:
    """Every requirement of pyproject.toml (dependencies and extras) -> its floor; each one
    must have a floor and nothing else (no upper bound, no marker)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    out: dict[str, str] = {}
    for req in reqs:
        m = _REQ.match(req.strip())
        assert m, f"pyproject.toml: {req!r} is not 'name>=version'"
        name, version = _name(m[1]), m[3]
        assert out.setdefault(name, version) == version, f"two floors for {name}"
    return out


def oldest() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints-oldest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[_name(name)] = version.strip()
    return out


def test_the_oldest_constraints_are_the_floors_of_pyproject():
    assert oldest() == floors()


def test_the_floors_are_parsed():
    f = floors()
    assert f["scipy"] == "1.12.0" and f["ray"] == "2.10.0" and "torch" in f
    assert len(f) == len(oldest()) >= 15
