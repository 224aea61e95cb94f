"""The examples under examples/: your own model through the CLI (train, killed and resumed,
certify with its plot, predict), and the scikit-learn example."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from killing import kill_at_first_chunk  # noqa: E402  (tests/killing.py)

from poisoncert import experiment, runs  # noqa: E402
from poisoncert.config import ConfigError, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "custom_model" / "config.yaml"
POISONCERT = [sys.executable, "-c", "from poisoncert.cli import main; main()"]


def _cli(*args, cwd=ROOT, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([*POISONCERT, *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_custom_model_trains_resumes_after_a_kill_and_predicts(tmp_path, monkeypatch):
    run = tmp_path / "run"
    over = ["--run.chunk_size", "8"]  # the config's T = 32: four chunks
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*POISONCERT, "train", str(CONFIG), "--run-dir", str(run),
                                 "-q", *over], cwd=ROOT, stdout=out, stderr=out)
    assert kill_at_first_chunk(proc, run, timeout=300, poll=0.05), log.read_text()
    assert not (run / runs.PREDICTIONS).exists()  # killed before the end
    r = _cli("train", CONFIG, "--run-dir", run, "-q", *over)
    resumed = re.search(r"(\d+) chunks? trained, (\d+) resumed", r.stdout)
    assert resumed and int(resumed[1]) >= 1 and int(resumed[2]) >= 1, r.stdout
    # the resumed run equals an uninterrupted one (trained here, in this process)
    monkeypatch.chdir(ROOT)
    full = experiment.train_run(load_config(CONFIG, over), tmp_path / "full", progress=False)
    np.testing.assert_array_equal(np.load(run / runs.PREDICTIONS), full.predictions)
    assert full.accuracy > 0.8  # the network learns
    cfg = (run / runs.CONFIG).read_text()
    assert "model: examples.custom_model.net:make_model" in cfg and "width: 12" in cfg
    _cli("certify", run)
    assert (run / runs.CERTIFIED_ACCURACY_PNG).stat().st_size > 1000
    # predict from another folder: the run's config names the module; it is found from the
    # repository root on sys.path (PYTHONPATH), as an installed package would be
    from poisoncert.data import load_dataset

    raw = np.rint(load_dataset("digits").x_test * 16).astype(np.uint8)
    np.savez(tmp_path / "x.npz", x=raw[:, 0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([*POISONCERT, "predict", str(run), str(tmp_path / "x.npz"), "--out",
                        str(tmp_path / "p.csv")], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as f, open(run / runs.CERTIFICATES) as g:
        got, want = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert [(a["prediction"], a["radius"]) for a in got] == [
        (b["prediction"], b["radius"]) for b in want]
    assert sum(int(a["radius"]) > 0 for a in got) > 100
    # without the module on the path, one clear line
    r = _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error: ")
    assert "'training.model'" in r.stderr and "examples.custom_model.net:make_model" in r.stderr
    assert f"working directory {tmp_path}: run the command from the folder that holds the " \
           "module's package (for a trained run, the folder it was trained from)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("over, words", [
    ({"training.model": "examples.custom_model.nope:make_model"},
     ["'training.model'", "No module named", "examples.custom_model.nope"]),
    ({"training.model": "examples.custom_model.net:missing"},
     ["'training.model'", "no callable 'missing'"]),
    ({"training.model_kwargs": "{depth: 3}"},
     ["'training.model_kwargs'", "unexpected keyword argument 'depth'"]),
    ({"training.model": "lenet5"}, ["'training.model_kwargs'", "null unless"]),
])
def test_custom_model_errors_name_the_key(tmp_path, over, words, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError) as e:
        experiment.train_run(load_config(CONFIG, over), tmp_path / "run", progress=False)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "run").exists()


def test_sklearn_example_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "sklearn_breast_cancer.py"),
                        "--T", "50"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "partition (DPA)" in r.stdout and "runtime" in r.stdout


def test_changed_model_code_is_refused_before_it_runs(tmp_path):
    """A run records its model module's SHA-256; a later load finds the module's file and
    compares before importing it."""
    import shutil

    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    run = tmp_path / "run"
    _cli("train", "examples/custom_model/config.yaml", "--run-dir", run, "-q",
         "--selection.T", "4", "--training.steps", "2", cwd=tmp_path)
    raw = np.zeros((2, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=raw)
    _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path)
    _cli("update", run, "--out", tmp_path / "u0", "--remove", "2", cwd=tmp_path)
    net = tmp_path / "examples" / "custom_model" / "net.py"
    net.write_text(net.read_text() + "\nraise SystemExit('this module must not run')\n")
    r = _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "must not run" not in r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and "has changed since the run was trained" in r.stderr
    assert str(net) in r.stderr
    # nor is it used to retrain some classifiers (update) or to resume the run (train): the
    # run would mix classifiers of two versions of the code
    r = _cli("update", run, "--out", tmp_path / "u", "--remove", "1", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "must not run" not in r.stdout + r.stderr, r.stderr
    assert "has changed since the run was trained" in r.stderr and "restore the code" in r.stderr
    assert not (tmp_path / "u").exists()
    # an updated run keeps the record of the code its classifiers came from
    r = _cli("update", tmp_path / "u0", "--out", tmp_path / "u1", "--remove", "1", cwd=tmp_path,
             check=False)
    assert r.returncode == 1 and "has changed since the run was trained" in r.stderr, r.stderr
    r = _cli("train", "examples/custom_model/config.yaml", "--run-dir", run, "-q",
             "--selection.T", "4", "--training.steps", "2", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "must not run" not in r.stdout + r.stderr, r.stderr
    assert f"has changed since the run '{run}' started" in r.stderr
    assert "cannot be resumed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _package(root, files: dict) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_code_a_model_imports_is_found_by_reading_it(tmp_path):
    """``code_files``: the module, its packages' ``__init__.py`` and every module of the
    user's folder it imports, recursively (absolute, relative, nested, inside functions);
    not the modules it does not import, not poisoncert, not installed libraries."""
    from poisoncert.training.user_model import code_files

    _package(tmp_path, {
        "hp/__init__.py": "",
        "hp/m.py": "import torch\nimport poisoncert\nfrom .act import act\nfrom . import consts\n"
                   "import hp.deep.sub as ds\nimport top\n"
                   "def factory(s, n):\n    from .lazy import make\n    return make(s, n)\n",
        "hp/act.py": "import numpy\ndef act(x): return x\n",
        "hp/consts.py": "from ..outside import x\n",  # beyond the top: not the user's folder
        "hp/lazy.py": "def make(s, n): return None\n",
        "hp/deep/__init__.py": "",
        "hp/deep/sub.py": "from ..act import act\nfrom hp import helpers\n",
        "hp/helpers.py": "",
        "hp/not_imported.py": "",
        "top.py": "import sibling\n",
        "sibling.py": "",
        "unrelated.py": "",
    })
    root, files = code_files("hp.m", tmp_path / "hp" / "m.py")
    assert root == tmp_path
    assert files == ["hp/__init__.py", "hp/act.py", "hp/consts.py", "hp/deep/__init__.py",
                     "hp/deep/sub.py", "hp/helpers.py", "hp/lazy.py", "hp/m.py", "sibling.py",
                     "top.py"]
    assert code_files("top", tmp_path / "top.py") == (tmp_path, ["sibling.py", "top.py"])


def test_code_files_reads_each_file_under_its_own_name(tmp_path, monkeypatch):
    """Relative imports resolve against the package of the file that holds them (also in a
    package's ``__init__.py`` and in a module reached by ``from pkg.mod import f``); a module
    ``x.py`` wins over a folder ``x/`` without ``__init__.py``, as in Python's import; imports
    under ``if TYPE_CHECKING:`` or ``if __name__ == "__main__":`` are not followed; a link is
    recorded under its own name; a folder with installers' records is not crawled beyond the
    module's own package; a module outside its name's place is recorded alone."""
    import os

    from poisoncert.training.user_model import code_files

    _package(tmp_path / "a", {
        "mypkg/__init__.py": "from .registry import REG\n",
        "mypkg/registry.py": "REG = {}\n",
        "mypkg/models/__init__.py": "",
        "mypkg/models/layers.py": "from .blocks import SCALE\n",
        "mypkg/models/blocks.py": "SCALE = 2\n",
        "mypkg/models/net.py": "from typing import TYPE_CHECKING\n"
                               "from mypkg.models.layers import Scale\nimport utils\n"
                               "import linked.helper\n"
                               "if TYPE_CHECKING:\n    import typed_only\n"
                               "if __name__ == '__main__':\n    import main_only\n",
        "utils.py": "SCALE = 3\n",
        "utils/README.txt": "a folder without __init__.py beside utils.py\n",
        "typed_only.py": "", "main_only.py": "",
        "elsewhere/helper.py": "",
    })
    root = tmp_path / "a"
    os.symlink(root / "elsewhere", root / "linked")
    got = code_files("mypkg.models.net", root / "mypkg" / "models" / "net.py")
    assert got == (root, ["linked/helper.py", "mypkg/__init__.py", "mypkg/models/__init__.py",
                          "mypkg/models/blocks.py", "mypkg/models/layers.py",
                          "mypkg/models/net.py", "mypkg/registry.py", "utils.py"])
    # beside copies of libraries (pip install --target): not the packages their records list;
    # a project's own *.egg-info (an editable install) stops nothing
    _package(tmp_path / "t", {
        "m/__init__.py": "", "m/h.py": "", "common.py": "", "m.egg-info/PKG-INFO": "",
        "m/net.py": "import numpy\nfrom m import h\nimport common\n",
        "numpy/__init__.py": "import numpy.core\n", "numpy/core.py": "",
        "numpy-2.0.dist-info/RECORD": "numpy/__init__.py,sha256=x,1\nnumpy/core.py,,\n"})
    assert code_files("m.net", tmp_path / "t" / "m" / "net.py")[1] == [
        "common.py", "m/__init__.py", "m/h.py", "m/net.py"]
    # a module installed in a library folder: its own files, not a crawl of the library
    import poisoncert.training.user_model as um

    with monkeypatch.context() as mp:
        mp.setattr(um, "_installed_tops", lambda root: None)
        assert code_files("m.net", tmp_path / "t" / "m" / "net.py")[1] == [
            "m/__init__.py", "m/net.py"]
    # star imports of a package (its __all__), literal import_module / __import__, a test
    # of __name__ that runs on import, and no relative import past the top package
    _package(tmp_path / "s", {
        "q/__init__.py": "__all__ = ['sub']\nfrom ..beyond import x\n", "q/sub.py": "",
        "q/lazy.py": "", "q/dunder.py": "", "q/other.py": "", "beyond.py": "",
        "q/net.py": "import importlib\nfrom q import *\n"
                    "importlib.import_module('.lazy', __package__)\n__import__('q.dunder')\n"
                    "if __name__ != '__main__':\n    from . import other\n"})
    assert code_files("q.net", tmp_path / "s" / "q" / "net.py")[1] == [
        "q/__init__.py", "q/dunder.py", "q/lazy.py", "q/net.py", "q/other.py", "q/sub.py"]
    # a package that extends its __path__: the module lies elsewhere than its name says
    _package(tmp_path / "p", {"impl/net.py": "import x\n", "x.py": ""})
    assert code_files("pkg.sub.net", tmp_path / "p" / "impl" / "net.py") == (
        tmp_path / "p" / "impl", ["net.py"])


def test_changed_code_a_model_imports_is_refused(tmp_path):
    """A run records the SHA-256 of each file of the user's code its model's module imports;
    a changed helper module is refused as the module itself is (it changed the classifiers'
    predictions silently before), and an unrelated file of the same package is not."""
    _package(tmp_path, {
        "hp/__init__.py": "",
        "hp/act.py": "import torch\n\ndef act(x):\n    return torch.relu(x)\n",
        "hp/other.py": "",
        "hp/net.py": "from torch import nn\n\ntry:\n    from .fast_act import act\n"
                     "except ImportError:\n    from .act import act\n\n\n"
                     "class Net(nn.Module):\n"
                     "    def __init__(self, d, n):\n"
                     "        super().__init__()\n"
                     "        self.fc = nn.Linear(d, n)\n\n"
                     "    def forward(self, x):\n"
                     "        return self.fc(act(x.flatten(1)))\n\n\n"
                     "def factory(input_shape, n_classes):\n"
                     "    return Net(64, n_classes)\n",
    })
    run = tmp_path / "run"
    _cli("train", CONFIG, "--run-dir", run, "-q", "--selection.T", "4", "--training.steps", "2",
         "--training.model", "hp.net:factory", "--training.model_kwargs", "{}", cwd=tmp_path)
    source = json.loads((run / "manifest.json").read_text())["model_source"]
    assert sorted(source["files"]) == ["hp/__init__.py", "hp/act.py", "hp/net.py"]
    # ensemble.json keeps the code as the run started, not as it is when the run ends
    assert json.loads((run / "ensemble.json").read_text())["model"]["source"] == source
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8), dtype=np.uint8))
    (tmp_path / "hp" / "other.py").write_text("# edited\n")
    _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path)
    act = tmp_path / "hp" / "act.py"
    act.write_text(act.read_text().replace("torch.relu(x)", "-torch.relu(x)"))
    r = _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: The model code {act} of 'hp.net:factory' (its module "
                               "or a file the module imports) has changed since the run was "
                               "trained"), r.stderr
    r = _cli("update", run, "--out", tmp_path / "u", "--remove", "1", cwd=tmp_path, check=False)
    assert r.returncode == 1 and str(act) in r.stderr and "restore the code" in r.stderr
    act.write_text(act.read_text().replace("-torch.relu(x)", "torch.relu(x)"))
    _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path)  # restored: accepted again
    # a fallback module that appears (try: from .fast import act / except ImportError) and
    # a changed package __init__.py, which is refused before it runs
    fast = tmp_path / "hp" / "fast_act.py"
    fast.write_text("import torch\n\ndef act(x):\n    return -x\n")
    r = _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path, check=False)
    assert r.returncode == 1 and str(fast) in r.stderr and "was added" in r.stderr, r.stderr
    fast.unlink()
    init = tmp_path / "hp" / "__init__.py"
    init.write_text("raise SystemExit('this package must not run')\n")
    r = _cli("predict", run, tmp_path / "x.npz", cwd=tmp_path, check=False)
    assert r.returncode == 1 and str(init) in r.stderr, r.stderr
    assert "must not run" not in r.stdout + r.stderr
    init.write_text("")


def test_a_factory_whose_network_does_not_fit_is_one_line_and_writes_nothing(tmp_path):
    """A user's network that returns logits of the wrong shape, or whose forward fails on the
    data's inputs, is refused before the run folder is made (it was a traceback from the
    engine's first step, and a run folder was left behind)."""
    _package(tmp_path, {"bad.py": "import torch\nfrom torch import nn\n\n\n"
                                  "def wrong_out(input_shape, n_classes):\n"
                                  "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n\n\n"
                                  "def wrong_in(input_shape, n_classes):\n"
                                  "    return nn.Sequential(nn.Flatten(), nn.Linear(100, 10))\n"
                                  "\n\nclass Aux(nn.Module):\n"
                                  "    def __init__(self):\n"
                                  "        super().__init__()\n"
                                  "        self.fc = nn.Linear(64, 10)\n\n"
                                  "    def forward(self, x):\n"
                                  "        y = self.fc(x.flatten(1))\n"
                                  "        return (y, y) if self.training else y\n\n\n"
                                  "def aux_in_training(input_shape, n_classes):\n"
                                  "    return Aux()\n\n\n"
                                  "class Noisy(Aux):\n"
                                  "    def forward(self, x):\n"
                                  "        return self.fc(x.flatten(1) + torch.randn_like("
                                  "x.flatten(1)))\n\n\n"
                                  "def noisy(input_shape, n_classes):\n"
                                  "    return Noisy()\n\n\n"
                                  "class Slice(nn.Module):\n"
                                  "    def forward(self, x):\n"
                                  "        return x.flatten(1)[:, :10]\n\n\n"
                                  "def no_parameters(input_shape, n_classes):\n"
                                  "    return Slice()\n"})
    cases = {"wrong_out": "(in evaluation mode, for 2 training inputs it returned "
                          "torch.float32 (2, 3))",
             "wrong_in": "(its forward in evaluation mode on 2 training inputs failed: "
                         "RuntimeError: mat1 and mat2 shapes cannot be multiplied",
             "aux_in_training": "(in training mode, for 2 training inputs it returned a "
                                "tuple)",
             "noisy": ", drawing no random numbers in evaluation mode (its forward did"}
    for name, words in cases.items():
        run = tmp_path / name
        r = _cli("train", CONFIG, "--run-dir", run, "-q", "--training.model", f"bad:{name}",
                 "--training.model_kwargs", "{}", cwd=tmp_path, check=False)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("error: The 'training.model' parameter of the config must "
                                   "be a model whose forward maps a batch (B, 1, 8, 8) of float "
                                   "inputs to logits (B, 10)"), r.stderr
        assert words in r.stderr and f"Got 'bad:{name}' instead." in r.stderr, r.stderr
        assert not run.exists()
    # no parameters: a StopIteration traceback from the engine, and a run folder left behind
    run = tmp_path / "no_parameters"
    r = _cli("train", CONFIG, "--run-dir", run, "-q", "--training.model",
             "bad:no_parameters", "--training.model_kwargs", "{}", cwd=tmp_path, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: The 'training.model' parameter of the config must be a "
                               "factory of a network with trainable parameters (this one has "
                               "none"), r.stderr
    assert not run.exists()
