"""The shell commands of README.md and docs/*.md run as written.

Every command of every fenced ``bash`` block is listed in ``COMMANDS`` (the test fails when the
docs and the list disagree), either to run, as written plus small overrides that make it
cheap (fewer classifiers, steps and test points), or to skip, with the reason. They run in
doc order (README first, then docs/ by name) in one temporary copy of ``experiments/`` and
``examples/``, as a user on a fresh clone would type them one after another, so a command
that collides with an earlier one's output fails here too.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SMALL = ["--selection.T", "2", "--training.steps", "2", "--data.test_limit", "50"]
#: Partitions and Finite Aggregation count their classifiers with selection.k.
AGG_SMALL = ["--selection.k", "2", "--training.steps", "2", "--data.test_limit", "50"]


def _at_most_cpus(workers: int) -> list[str]:
    """On a machine with fewer usable CPUs than a command's ``--workers`` (which it refuses
    there, in one line), the CPUs it has: a later ``--workers`` overrides the written one."""
    from poisoncert.resources import usable_cpus

    cpus = usable_cpus()
    return [] if cpus >= workers else ["--workers", str(cpus)]


#: command as written -> ("run", extra arguments) or ("skip", why). "mnist": needs MNIST.
COMMANDS: dict[str, tuple] = {
    # README.md
    "python3 -m venv .venv": ("skip", "set-up (the test runs in the installed environment)"),
    ". .venv/bin/activate": ("skip", "set-up"),
    'pip install -c constraints-cpu.txt -e ".[torch]"': ("skip", "set-up"),
    "poisoncert demo": ("run", ["--quick", "-q"]),
    "bash scripts/test.sh": ("skip", "the test suite itself"),
    "poisoncert train experiments/mnist17_binomial.yaml --workers 2":
        ("mnist", SMALL + _at_most_cpus(2)),
    "poisoncert train experiments/mnist17_binomial.yaml --selection.scheme with_replacement "
    "--run-dir runs/mnist17_wr": ("mnist", SMALL),
    "poisoncert certify runs/mnist17_binomial --alpha 0.001 --model P6": ("mnist", []),
    "poisoncert certify runs/mnist17_binomial --rhos 0,100,400,800": ("mnist", []),
    "poisoncert train experiments/mnist17.yaml --data.deskew true --training.model cnn_small "
    "--training.steps 1000 --training.lr 0.008 --training.lr_schedule cosine "
    "--training.rotation 15 --training.scale 0.15 --training.shear 10 --training.max_shift 3 "
    "--training.elastic 1 --training.augment true --run-dir runs/mnist17_cnn": ("mnist", SMALL),
    "poisoncert train experiments/mnist17_binomial.yaml --executor ray --address auto":
        ("skip", "needs a Ray cluster"),
    "poisoncert train experiments/mnist17.yaml --device cuda --run-dir runs/mnist17_gpu":
        ("skip", "needs a CUDA device"),
    "poisoncert predict runs/mnist17_binomial my_digits/ --out predictions.csv": ("mnist", []),
    "poisoncert radius --scheme with_replacement --n 13007 --ns 10 --gap 0.98486": ("run", []),
    "poisoncert radius --scheme binomial --n 13007 --ns 10 --counts 995,5 --T 1000 "
    "--alpha 0.001": ("run", []),
    "poisoncert radius --scheme wr --n 60000 --ns 30 --counts 900,60,40 --T 1000 --rule jia":
        ("run", []),
    "poisoncert radius --scheme binomial --n 13007 --p 0.001 --counts 995,5 --T 1000 "
    "--method true_label --labels 0": ("run", []),
    "poisoncert delta --out figure2.png": ("run", []),
    "poisoncert delta --n 60000 --ns 30 --rho-max 400 --steps 40": ("run", []),
    "poisoncert delta --n 100 --ns 100": ("run", []),
    "poisoncert train experiments/mnist_agg.yaml --selection.scheme finite_aggregation "
    "--selection.d 2 --run-dir runs/mnist_fa": ("mnist", AGG_SMALL),
    "poisoncert certify runs/mnist_fa": ("mnist", []),
    "poisoncert certify runs/mnist_fa --aggregation roe": ("mnist", []),
    "poisoncert train experiments/mnist_agg.yaml --selection.scheme knn --selection.k 100 "
    "--run-dir runs/mnist_knn":
        ("mnist", ["--data.test_limit", "50"]),
    "poisoncert attack runs/mnist_fa --budgets 1,2,4,8,16 --targets 20":
        ("mnist", ["--targets", "2", "--attacks", "flip", "--quiet"]),
    "poisoncert attack runs/mnist_fa --attacks insert,backdoor --patch 4 --max-radius 8 "
    "--out runs/mnist_fa_attack2": ("mnist", ["--targets", "2", "--budgets", "1", "--quiet"]),
    "poisoncert update runs/mnist_fa --out runs/mnist_fa_v2 --remove 3,17,42 --relabel 5:1":
        ("mnist", []),
    # docs/certificates.md
    "poisoncert radius --scheme binomial --n 13007 --ns 10 --counts 1000,0 --T 1000 "
    "--alpha 0.001 --method paper": ("run", []),
    # docs/predict.md
    "poisoncert train experiments/mnist17.yaml --selection.T 64 --run-dir runs/mnist17_T64":
        ("mnist", SMALL),
    "poisoncert certify runs/mnist17_T64": ("mnist", []),
    "poisoncert predict runs/mnist17_T64 my_digits/ --out predictions.csv": ("mnist", []),
    "poisoncert train experiments/mnist17.yaml --selection.scheme knn --selection.k 3 "
    "--run-dir runs/mnist17_knn":
        ("mnist", ["--data.test_limit", "50"]),
    "poisoncert predict runs/mnist17_knn my_digits/ --out predictions.csv": ("mnist", []),
    "poisoncert train examples/custom_model/config.yaml --run-dir runs/custom_model":
        ("run", ["--selection.T", "8", "--training.steps", "10"]),
    "poisoncert certify runs/custom_model": ("run", []),
    # docs/ray.md
    'pip install "poisoncert[torch,ray]"': ("skip", "set-up"),
    "poisoncert train experiments/demo.yaml --executor ray --run-dir runs/demo_ray":
        ("run", ["--selection.T", "4", "--training.steps", "2", "-q"]),
    "poisoncert train experiments/demo.yaml --executor ray --workers 2 --run-dir runs/demo_ray":
        ("run", ["--selection.T", "4", "--training.steps", "2", "-q"]),
    "poisoncert train experiments/demo.yaml --executor ray --address auto --run-dir "
    "runs/demo_ray": ("skip", "needs a Ray cluster"),
}


def doc_commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every command of every fenced bash block, in doc order:
    continuation lines joined, comments dropped, ``&&`` chains split."""
    out = []
    for path in DOCS:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), re.S):
            text = re.sub(r"\\\n\s*", " ", block)
            for line in text.splitlines():
                line = line.split(" # ")[0].strip()
                if not line or line.startswith("#"):
                    continue
                for cmd in line.split(" && "):
                    out.append((path.name, " ".join(cmd.split())))
    return out


def test_every_doc_command_is_listed():
    found = [c for _, c in doc_commands()]
    assert sorted(set(found)) == sorted(COMMANDS), (
        "docs and COMMANDS disagree: only in docs "
        f"{sorted(set(found) - set(COMMANDS))}, only here {sorted(set(COMMANDS) - set(found))}")


def _shared_data() -> Path | None:
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "mnist").is_dir():
            return parent / "shared" / "data"
    return None


def _run(cmd: str, extra: list[str], cwd: Path) -> tuple[int, str]:
    """A ``poisoncert`` command on the real app in this process (the same code as the console
    script, without paying for a new Python and torch per command); anything else in a
    subprocess."""
    words = shlex.split(cmd) + extra
    if words[0] == "poisoncert":
        from typer.testing import CliRunner

        from poisoncert.cli import app

        r = CliRunner().invoke(app, words[1:])
        return r.exit_code, r.output + (repr(r.exception) if r.exception else "")
    if words[0] in ("python", "python3"):
        words[0] = sys.executable
    r = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


def _write_pngs(folder: Path, data: Path) -> None:
    from PIL import Image

    from poisoncert.data.idx import read_idx

    images = read_idx(next((data / "mnist").glob("t10k-images*")))
    labels = read_idx(next((data / "mnist").glob("t10k-labels*")))
    folder.mkdir(exist_ok=True)
    for i, img in enumerate(images[np.isin(labels, (1, 7))][:5]):
        Image.fromarray(img, mode="L").save(folder / f"{i:03d}.png")


@pytest.fixture
def no_leftover_examples():
    """The commands import the copied ``examples`` package; forget it afterwards, so other
    tests import the repository's own."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name == "examples" or name.startswith("examples."):
            del sys.modules[name]


def test_doc_commands_run_as_written(tmp_path, monkeypatch, no_leftover_examples):
    pytest.importorskip("torch")
    pytest.importorskip("ray")
    data = _shared_data()
    for name in ("experiments", "examples"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POISONCERT_DATA", raising=False)
    if data is not None:
        monkeypatch.setenv("POISONCERT_DATA", str(data))
        _write_pngs(tmp_path / "my_digits", data)
    ran = []
    for doc, cmd in doc_commands():
        kind, extra = COMMANDS[cmd]
        if kind == "skip" or (kind == "mnist" and data is None):
            continue
        code, output = _run(cmd, extra, tmp_path)
        assert code == 0, f"{doc}: {cmd}\n{output}"
        ran.append(cmd)
    assert (tmp_path / "figure2.png").is_file()
    assert "poisoncert demo" in ran and len(ran) >= (18 if data is not None else 9)


# ----------------------------------------------------------------------------- inline commands
#: Scripts whose first word after the script is a subcommand (its options: ``SUB --help``).
_SUBCOMMANDS = ("benchmarks/gpu_cifar10.py",)


def inline_commands() -> list[tuple[str, list[str]]]:
    """``(file, words)`` for every command written in a ``code span`` of README.md and docs/
    (outside fenced blocks, which ``doc_commands`` covers): ``poisoncert CMD ...``, ``python
    benchmarks/X.py ...``, ``python experiments/X.py ...``; a span may wrap across lines, and
    ``&&`` chains are split."""
    out = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for span in re.findall(r"`([^`]+)`", text):
            for part in " ".join(span.split()).split("&&"):
                words = part.split()
                if len(words) >= 2 and (
                        words[0] == "poisoncert"
                        or (words[0] in ("python", "python3")
                            and re.fullmatch(r"(benchmarks|experiments)/\w+\.py", words[1]))):
                    out.append((path.name, words))
    return out


def _options(words: list[str]) -> list[str]:
    """The option names a command's words give (``--a=b`` as ``--a``; not negative numbers)."""
    return [w.split("=", 1)[0] for w in words if re.match(r"--?[A-Za-z]", w)]


def _script_help_options(script: str, sub: tuple[str, ...]) -> set[str]:
    r = subprocess.run([sys.executable, script, *sub, "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"{script} {' '.join(sub)} --help: {r.stdout}{r.stderr}"
    return set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", r.stdout))


def test_inline_doc_commands_name_options_that_exist():
    """The commands quoted inline in the docs (benchmark lines, results' commands) name
    subcommands, options, config keys and experiment groups that exist: a renamed option
    breaks this test, not a reader's copy of the line."""
    import typer

    from poisoncert.cli import app
    from poisoncert.config import ConfigError, parse_overrides

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import run as runner  # experiments/run.py
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    commands = typer.main.get_command(app).commands
    helps: dict[tuple, set[str]] = {}
    wrong = []
    found = inline_commands()
    assert len(found) > 50, "the inline commands were not found"
    for doc, words in found:
        line = " ".join(words)
        if words[0] == "poisoncert":
            cmd = commands.get(words[1])
            if cmd is None:
                wrong.append(f"{doc}: {line}: no command {words[1]!r}")
                continue
            known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            for opt in _options(words[2:]):
                if opt in known:
                    continue
                try:  # a config override, --section.key, of a command that takes them
                    if not cmd.context_settings.get("allow_extra_args"):
                        raise ConfigError(opt)
                    parse_overrides([opt, "1"])
                except ConfigError:
                    wrong.append(f"{doc}: {line}: {words[1]} takes no {opt}")
            continue
        script = words[1]
        sub = (words[2],) if script in _SUBCOMMANDS and len(words) > 2 else ()
        if (script, sub) not in helps:
            helps[script, sub] = _script_help_options(script, sub)
        for opt in _options(words[2:]):
            if opt not in helps[script, sub]:
                wrong.append(f"{doc}: {line}: {script} takes no {opt}")
        if script == "experiments/run.py":  # its groups, where a real one is named
            for w in words[2:]:
                if w.startswith("-"):
                    break
                if w.isupper():  # a placeholder: GROUP
                    continue
                if w not in runner.GROUPS:
                    wrong.append(f"{doc}: {line}: no group {w!r} in experiments/run.py")
    assert not wrong, "\n".join(wrong)


def test_every_command_option_is_named_in_the_docs():
    """Each visible option of each command appears in README.md or docs/ (a command's
    ``--help`` says what it does; the docs show it in use). Ten did not."""
    import typer

    from poisoncert.cli import app

    text = "".join(p.read_text() for p in DOCS)
    missing = [f"{name} {opt}"
               for name, cmd in typer.main.get_command(app).commands.items()
               for param in cmd.params if param.param_type_name == "option"
               and not getattr(param, "hidden", False)
               for opt in param.opts if opt.startswith("--") and opt != "--help"
               and not re.search(re.escape(opt) + r"(?![\w-])", text)]
    assert not missing, f"options named nowhere in README.md or docs/: {missing}"


# ----------------------------------------------------------------------------- signatures
#: The class whose methods a doc's tables list without a module (``| `certify(X, ...)` |``).
_TABLE_OWNERS = {"sklearn.md": ("CertifiedEnsembleClassifier",),
                 "architecture.md": ("Ensemble", "NeighborModel")}


#: Classes the docs name without their module.
_CLASSES = {"RayExecutor": "ray_executor.RayExecutor"}


def doc_signatures() -> list[tuple[str, str, str, str]]:
    """``(file, span, callable name, parameter list)`` for every signature written in a
    ``code span`` of README.md and docs/ (a span may wrap across lines): ``module.name(params)``
    (or ``Class.method``); in a table row, ``name(params)`` of the module its first cell names
    (aggregation.md's function table) or of the doc's ``_TABLE_OWNERS``: the spans with a ``*``
    marker or a default (``test_doc_signatures_match_the_code`` keeps those that read as a
    signature)."""
    import importlib

    def is_module(word: str) -> bool:
        try:
            importlib.import_module(f"poisoncert.{word}")
        except ImportError:
            return False
        return True

    out = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        rows = r"(?m)^\s*\|.*$"
        spans = [(None, s) for s in re.findall(r"`([^`]+)`", re.sub(rows, "", text))]
        for line in re.findall(rows, text):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            module = re.fullmatch(r"`(\w+)`", cells[0])
            for s in re.findall(r"`([^`]+)`", line):
                if module and is_module(module.group(1)):
                    spans.append(((module.group(1),), s))
                elif f"`{s}`" in cells[0]:  # a member table: `votes(x, ...)` | ...
                    spans.append((_TABLE_OWNERS.get(path.name, ()), s))
                else:
                    spans.append((None, s))
        for owners, span in spans:
            span = " ".join(span.split())
            m = re.fullmatch(r"([A-Za-z_][\w.]*)\((.*)\)(?:\s*->\s*\S+)?", span)
            if not m or not re.search(r"(^|, )\*(,|$)|=", m.group(2)):
                continue
            if "." in m.group(1) or m.group(1) in _CLASSES:
                out.append((path.name, span, _CLASSES.get(m.group(1), m.group(1)),
                            m.group(2)))
            else:
                out += [(path.name, span, f"{o}.{m.group(1)}", m.group(2)) for o in owners or ()]
    return out


def _resolve(name: str):
    """The poisoncert object ``name`` names (``bounds.delta``, ``Ensemble.load``), or None
    where its first word is not a poisoncert module or export (``executor.map_chunks``)."""
    import importlib

    import poisoncert

    parts = name.removeprefix("poisoncert.").split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("poisoncert." + ".".join(parts[:i]))
        except ImportError:
            continue
        rest = parts[i:]
        break
    else:
        if parts[0] not in poisoncert.__all__:
            return None
        obj, rest = poisoncert, parts
    for attr in rest:
        obj = getattr(obj, attr)
    return obj


def test_doc_signatures_match_the_code():
    """Each signature the docs write (architecture.md's contracts, aggregation.md's function
    table, ...) names parameters the callable has, in its order, with its defaults: a
    parameter written without a default has none (architecture.md wrote ``fa_certify(...,
    model, unit)`` for ``model="P6", unit="operation"``)."""
    import ast
    import inspect

    wrong = []
    found = doc_signatures()
    assert len(found) >= 15, "the signatures were not found"
    for doc, span, name, params in found:
        try:
            obj = _resolve(name)
        except AttributeError:
            wrong.append(f"{doc}: {span}: no {name}")
            continue
        if obj is None:
            continue
        try:
            args = ast.parse(f"def f({params}): pass").body[0].args
        except SyntaxError:
            continue  # a call with example values (``load(NEW)``), not a signature
        written = [(a.arg, None) for a in args.posonlyargs + args.args]
        for k, d in enumerate(args.defaults, len(written) - len(args.defaults)):
            written[k] = (written[k][0], d)
        written += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
        try:
            given = {a: ast.literal_eval(d) for a, d in written if d is not None}
        except ValueError:
            continue  # a call with example values (``train_run(cfg, run_dir, executor=ex)``)
        if Ellipsis in given.values() or not (
                args.kwonlyargs or any(d is None for _, d in written)):
            continue  # ``RayExecutor(num_gpus_per_task=1)``: values given, not a signature
        sig = inspect.signature(obj).parameters
        names = [p for p in sig if p != "self"]
        for arg, default in written:
            if arg not in sig:
                wrong.append(f"{doc}: {span}: {name} has no parameter {arg!r}")
                continue
            actual = sig[arg].default
            if default is None:
                if actual is not inspect.Parameter.empty:
                    wrong.append(f"{doc}: {span}: {arg} defaults to {actual!r}")
                continue
            value = given[arg]
            if actual is inspect.Parameter.empty or actual != value:
                wrong.append(f"{doc}: {span}: {arg}={value!r}, the code's default is "
                             f"{'none' if actual is inspect.Parameter.empty else repr(actual)}")
        order = [names.index(a) for a, _ in written if a in names]
        if order != sorted(order):
            wrong.append(f"{doc}: {span}: the parameters are not in {name}'s order")
    assert not wrong, "\n".join(wrong)
