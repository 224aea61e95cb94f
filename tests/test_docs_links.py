"""Nothing in the repository's documentation links outside the repository.

README.md and docs/*.md may link only to files inside the repository (relative paths that
exist and do not climb above its root, with anchors that match a heading); papers are cited by
title, authors and venue, not by URL. The math the code follows is docs/certificates.md, and
no file refers to a copy of it outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_URL = re.compile(r"\b(?:https?|ftp)://|\bwww\.", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (neither renders as a link)."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*|_(?=\W)|(?<=\W)_", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = _slug(m.group(1))
        k = seen.get(s, 0)
        out.add(s if k == 0 else f"{s}-{k}")
        seen[s] = k + 1
    return out


def link_problems(path: Path, text: str) -> list[str]:
    """Every link of ``text`` (the content of ``path``) that leaves the repository or breaks."""
    prose = _prose(text)
    targets = _INLINE.findall(prose) + _REFDEF.findall(prose)
    problems = [f"a URL in the text: {m.group(0)!r}" for m in _URL.finditer(prose)]
    for target in targets:
        if not target:
            problems.append("an empty link target")
            continue
        if _SCHEME.match(target):
            if not _URL.match(target):  # URLs are reported above already
                problems.append(f"a link outside the repository: {target!r}")
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        try:
            dest.relative_to(ROOT)
        except ValueError:
            problems.append(f"a link that leaves the repository: {target!r}")
            continue
        if not dest.exists():
            problems.append(f"a link to a missing file: {target!r}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"a link to a missing heading: {target!r}")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_markdown_links_stay_inside_the_repository(path):
    problems = link_problems(path, path.read_text(encoding="utf-8"))
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_math_page_exists_and_readme_points_to_it():
    assert (ROOT / "docs" / "certificates.md").is_file()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/certificates.md)" in readme


def test_nothing_refers_to_the_spec_outside_the_repository():
    needles = ("shared/" + "spec", "seed-" + "paper")
    roots = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "docs", ROOT / "src",
             ROOT / "experiments", ROOT / "examples", ROOT / "scripts"]
    hits = []
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for f in files:
            if not f.is_file() or f.suffix not in (".md", ".py", ".toml", ".yaml", ".yml",
                                                   ".sh", ".txt", ".cfg"):
                continue
            text = f.read_text(encoding="utf-8", errors="replace")
            hits += [f"{f.relative_to(ROOT)}: {n}" for n in needles if n in text]
    assert not hits, "references to files outside the repository: " + ", ".join(hits)


@pytest.mark.parametrize("text,problem", [
    ("see [the spec](../shared/spec/certificates.md)", "leaves the repository"),
    ("[paper](https://arxiv.org/abs/2008.04495)", "URL"),
    ("cite https://example.org here", "URL"),
    ("<https://example.org>", "URL"),
    ("[x]: ../../outside.md", "leaves the repository"),
    ("[mail](mailto:someone@example.org)", "outside the repository"),
    ("[gone](docs/no-such-file.md)", "missing file"),
    ("[bad anchor](docs/certificates.md#no-such-heading)", "missing heading"),
])
def test_link_checker_catches(text, problem):
    problems = link_problems(ROOT / "README.md", text)
    assert any(problem in p for p in problems), problems


def test_link_checker_accepts_links_inside_and_code():
    text = ("[math](docs/certificates.md#what-alpha-covers) and `https://in.code` and\n"
            "```bash\ncurl https://example.org\n```\n")
    assert link_problems(ROOT / "README.md", text) == []


def test_sections_the_source_cites_exist():
    """A docstring that sends the reader to a section (``docs/certificates.md, "Heading"``)
    names a heading of that file."""
    cite = re.compile(r'docs/([\w-]+\.md)`*,? "([^"]+)"')
    missing = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for doc, heading in cite.findall(path.read_text(encoding="utf-8")):
            target = ROOT / "docs" / doc
            headings = {line.lstrip("#").strip() for line in
                        target.read_text(encoding="utf-8").splitlines()
                        if line.startswith("#")} if target.exists() else set()
            if heading not in headings:
                missing.append(f"{path.relative_to(ROOT)}: docs/{doc}, {heading!r}")
    assert not missing, missing


def test_files_the_code_sends_the_reader_to_exist():
    """A docstring or comment that sends the reader to a file (``docs/predict.md``,
    ``README.md in this folder``, ``config.yaml beside this file``) names one that exists:
    ``examples/custom_model``'s package docstring sent its readers to a README.md the folder
    never had."""
    docs = re.compile(r"\bdocs/[\w-]+\.md\b")
    here = re.compile(r"([\w.-]+\.(?:md|ya?ml|py|txt))`*,? (?:in|beside) this (?:folder|file)")
    missing = []
    for top in ("src", "examples", "benchmarks", "experiments", "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for name in docs.findall(text):
                if not (ROOT / name).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: {name}")
            for name in here.findall(text):
                if not (path.parent / name).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: {name} beside it")
    assert not missing, missing
