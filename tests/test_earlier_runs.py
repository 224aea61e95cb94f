"""Runs an earlier version wrote still load: values beyond an upper bound added since
(``config.later_bounds``: the root seeds at 2^64 - 1, d6f8569; ``training.elastic`` at 1e6,
bbe7dd7; ``training.lr`` at 10 and ``training.weight_decay`` at 1, a624e1c) are read from the
run's own ``config.yaml`` in the range that version took. Before, certify, predict, update,
attack and resume of such a run were refused ("The config ... of the run is invalid: The
'training.lr' parameter of the config must be a real number in the range (0, 10]. Got 12.0
instead."), though the engine trains them as it did. A config given anew keeps the bounds.

The earlier version is this one with the bound lifted (monkeypatched to what it was: none),
so the run's files are what that version wrote: its manifest, checksums and config hash
are its own, not an edit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from poisoncert import runs
from poisoncert.cli import app
from poisoncert.config import sections
from poisoncert.training import settings

runner = CliRunner()

CONFIG = {
    "data": {"name": "digits", "test_limit": 40},
    "selection": {"scheme": "with_replacement", "ns": 40, "T": 8, "seed": 1},
    "training": {"model": "mlp", "steps": 3, "group_size": 4, "save_weights": True},
    "run": {"chunk_size": 4},
}

#: key, a value an earlier version took, the bound added since, the other settings it needs
EARLIER = [
    ("selection.seed", 2**64, (sections, "SEED_LIMIT"), {}),
    ("data.clean_seed", 2**64 + 1, (sections, "SEED_LIMIT"), {"data.n_clean": 10}),
    ("training.lr", 12.0, (settings, "LR_MAX"), {"training.optimizer": "sgd"}),
    ("training.weight_decay", 1.5, (settings, "WEIGHT_DECAY_MAX"), {}),
    ("training.elastic", 2e6, (settings, "ELASTIC_MAX"), {"training.augment": True}),
]


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _config_file(tmp_path, key: str, value, extra: dict):
    cfg = yaml.safe_load(yaml.safe_dump(CONFIG))
    for dotted, v in {key: value, **extra}.items():
        section, name = dotted.split(".")
        cfg.setdefault(section, {})[name] = v
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _resume_interrupted(copy, run, config) -> None:
    """``copy`` of ``run`` with its second chunk and joined arrays removed (an interrupted
    run) resumes with ``config`` to the same bits, and then with its own config.yaml has
    nothing to train."""
    for p in [*copy.glob(f"{runs.CHUNKS}/*00001*"), *copy.glob(f"{runs.WEIGHTS}/*00001*"),
              copy / runs.PREDICTIONS, copy / runs.VOTES]:
        p.unlink()
    r = _invoke("train", config, "--run-dir", copy, "-q")
    assert r.exit_code == 0 and "(1 chunk trained, 1 resumed)" in r.output, r.output
    assert (copy / runs.PREDICTIONS).read_bytes() == (run / runs.PREDICTIONS).read_bytes()
    r = _invoke("train", copy / runs.CONFIG, "--run-dir", copy, "-q")
    assert r.exit_code == 0 and "Nothing to train" in r.output, r.output


@pytest.mark.parametrize("key, value, bound, extra", EARLIER, ids=[e[0] for e in EARLIER])
def test_a_run_an_earlier_version_wrote_beyond_a_later_bound_still_certifies_predicts_and_resumes(
        tmp_path, monkeypatch, key, value, bound, extra):
    config = _config_file(tmp_path, key, value, extra)
    x = np.asarray(__import__("sklearn.datasets").datasets.load_digits().images[:6],
                   dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", x=x)
    run, copy = tmp_path / "run", tmp_path / "copy"
    with monkeypatch.context() as m:  # the earlier version: no upper bound on the key
        m.setattr(*bound, None)
        r = _invoke("train", config, "--run-dir", run, "-q")
        assert r.exit_code == 0, r.output
        shutil.copytree(run, copy)  # trained, not yet certified (nor anything else)
        assert _invoke("certify", run).exit_code == 0
        before = _invoke("predict", run, tmp_path / "inputs.npz")
        assert before.exit_code == 0, before.output
    stored = yaml.safe_load((run / runs.CONFIG).read_text())
    section, name = key.split(".")
    assert stored[section][name] == value  # written as the plain number

    # this version: the run certifies and predicts exactly as it did
    r = _invoke("certify", copy)
    assert r.exit_code == 0, r.output
    for name_ in (runs.CERTIFICATES, runs.CERTIFIED_ACCURACY):
        assert (copy / name_).read_bytes() == (run / name_).read_bytes()
    after = _invoke("predict", copy, tmp_path / "inputs.npz")
    assert after.exit_code == 0 and after.stdout == before.stdout, after.output

    # update retrains with the run's own value, and its new run loads in turn
    r = _invoke("update", copy, "--out", tmp_path / "updated", "--remove", "3", "-q")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((tmp_path / "updated" / runs.CONFIG).read_text())[section][name] \
        == value
    assert _invoke("certify", tmp_path / "updated").exit_code == 0

    if key == "training.lr":  # attack retrains with it (once: the slowest command)
        r = _invoke("attack", copy, "--targets", "1", "-q")
        assert r.exit_code == 0, r.output

    # an interrupted run resumes with its value (its own config file, or the user's), the
    # same bits as the uninterrupted one
    _resume_interrupted(copy, run, config)

    # a new run, or the run with another config, keeps the bound: one line, nothing written
    for args in (["--run-dir", tmp_path / "new"],
                 ["--run-dir", copy, "--training.steps", "4"]):
        r = _invoke("train", config, *args, "-q")
        assert r.exit_code == 1, r.output
        assert r.output.splitlines() == [r.output.splitlines()[0]]
        assert r.output.startswith(f"error: The '{key}' parameter of the config must be "), \
            r.output
    assert not (tmp_path / "new").exists()


def test_an_edited_config_beyond_a_later_bound_is_still_refused(tmp_path):
    """Reading a stored config in the earlier range weakens no tampering check: a finished
    run whose training.lr was edited to 12 is refused by certify and predict (its config hash
    is not the one it was trained with), as an edit to any other value is."""
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    assert _invoke("train", config, "--run-dir", run, "-q").exit_code == 0
    path = run / runs.CONFIG
    text = path.read_text()
    assert "lr: 0.001" in text
    path.write_text(text.replace("lr: 0.001", "lr: 12.0"))
    np.savez(tmp_path / "inputs.npz", x=np.zeros((2, 8, 8), np.uint8))
    for args in (["certify", run], ["predict", run, tmp_path / "inputs.npz"]):
        r = _invoke(*args)
        assert r.exit_code == 1 and "config.yaml' is not the one the run was trained with" \
            in r.output, r.output
    # an edit beyond the range any version took stays invalid, said as changed
    path.write_text(text.replace("lr: 0.001", "lr: -1.0"))
    r = _invoke("certify", run)
    assert r.exit_code == 1 and "was changed after the run finished" in r.output, r.output


def test_a_stored_config_edited_beyond_a_later_bound_does_not_resume(tmp_path):
    """Only a run made with the value resumes with it: a run's config.yaml edited to lr 12
    (its hash no longer the one its manifest recorded when it began) is no way around the
    bound for a config given with lr 12; the same one line as for a new run."""
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    assert _invoke("train", config, "--run-dir", run, "-q").exit_code == 0
    for p in [*run.glob(f"{runs.CHUNKS}/*00001*"), run / runs.PREDICTIONS]:
        p.unlink()
    path = run / runs.CONFIG
    path.write_text(path.read_text().replace("lr: 0.001", "lr: 12.0"))
    r = _invoke("train", config, "--run-dir", run, "--training.lr", "12", "-q")
    assert r.exit_code == 1 and r.output.splitlines() == [
        "error: The 'training.lr' parameter of the config must be a real number in the range "
        "(0, 10]. Got 12.0 instead."], r.output
    assert not (run / runs.PREDICTIONS).exists()


@pytest.mark.parametrize("key, value, bound, extra", [EARLIER[0], EARLIER[2]],
                         ids=[EARLIER[0][0], EARLIER[2][0]])
def test_a_loaded_earlier_config_is_no_way_around_the_bound_for_a_new_run(
        tmp_path, monkeypatch, key, value, bound, extra):
    """The values an earlier version's run holds beyond a later bound are marked when its
    config is loaded (``RunDir.load_config``), and the mark went wherever the value went:
    ``train_run(RunDir(OLD).load_config(), NEW)``, or that config with another setting
    (``dataclasses.replace``), trained a new run with training.lr 12 (or seed 2^64) that
    then certified, and ``from_dict`` took a loaded seed given in a dict, though
    ``poisoncert train OLD/config.yaml --run-dir NEW`` and another config are refused. Now a
    new run and a config given anew keep the bound: the CLI's one line, nothing written; the
    run itself still resumes with its config."""
    import dataclasses

    from poisoncert.config import ConfigError, from_dict
    from poisoncert.executors import LocalExecutor
    from poisoncert.experiment import train_run

    config = _config_file(tmp_path, key, value, extra)
    run = tmp_path / "run"
    with monkeypatch.context() as m:  # the earlier version: no upper bound on the key
        m.setattr(*bound, None)
        assert _invoke("train", config, "--run-dir", run, "-q").exit_code == 0
    cfg = runs.RunDir(run).load_config()
    section, name = key.split(".")
    other = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, chunk_size=8))
    for c in (cfg, other):
        with pytest.raises(ConfigError) as e:
            train_run(c, tmp_path / "new", executor=LocalExecutor(1))
        assert str(e.value).startswith(f"The '{key}' parameter of the config must be ")
        assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match=f"The '{key}' parameter of the config must be "):
        from_dict({section: {name: getattr(getattr(cfg, section), name)}})
    # the run itself: resumed with its own config object, as from its config file
    for p in [*run.glob(f"{runs.CHUNKS}/*00001*"), *run.glob(f"{runs.WEIGHTS}/*00001*"),
              run / runs.PREDICTIONS, run / runs.VOTES]:
        p.unlink()
    res = train_run(cfg, run, executor=LocalExecutor(1))
    assert (res.chunks_trained, res.chunks_skipped) == (1, 1)


def test_a_run_an_earlier_version_wrote_with_no_rhos_still_loads_and_certifies(
        tmp_path, monkeypatch):
    """``train --certify.rhos ""`` (or a config file's ``rhos: []``) was taken, while ``train
    --rhos ""`` and ``certify --rhos ""`` were refused: a run whose every table is empty. A
    config given anew is now refused with one line; a run an earlier version stored with
    ``certify: {rhos: []}`` still certifies (its empty table, the same bytes), predicts,
    updates and resumes as it did."""
    import dataclasses

    from poisoncert.config import ConfigError, files
    from poisoncert.executors import LocalExecutor
    from poisoncert.experiment import train_run

    config = _config_file(tmp_path, "certify.rhos", [], {})
    x = np.asarray(__import__("sklearn.datasets").datasets.load_digits().images[:6],
                   dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", x=x)
    run, copy = tmp_path / "run", tmp_path / "copy"
    with monkeypatch.context() as m:  # the earlier version: an empty list taken
        m.setattr(files, "_refuse_no_rhos", lambda *a, **kw: None)
        r = _invoke("train", config, "--run-dir", run, "-q")
        assert r.exit_code == 0, r.output
        shutil.copytree(run, copy)
        before = _invoke("certify", run)
        assert before.exit_code == 0, before.output
        predicted = _invoke("predict", run, tmp_path / "inputs.npz")
        assert predicted.exit_code == 0, predicted.output
    assert yaml.safe_load((run / runs.CONFIG).read_text())["certify"]["rhos"] == []

    # this version: the same certificates, the same empty table, the same predictions
    r = _invoke("certify", copy)
    assert r.exit_code == 0 and r.output == before.output.replace(str(run), str(copy)), \
        r.output
    for name in (runs.CERTIFICATES, runs.CERTIFIED_ACCURACY):
        assert (copy / name).read_bytes() == (run / name).read_bytes()
    after = _invoke("predict", copy, tmp_path / "inputs.npz")
    assert after.exit_code == 0 and after.stdout == predicted.stdout, after.output
    assert _invoke("certify", copy, "--rhos", "0,1").exit_code == 0  # radii given: a table

    # update keeps the run's own config; resume from its config file or the user's
    r = _invoke("update", copy, "--out", tmp_path / "updated", "--remove", "3", "-q")
    assert r.exit_code == 0, r.output
    assert _invoke("certify", tmp_path / "updated").exit_code == 0
    _resume_interrupted(copy, run, config)

    # given anew (a file, the override, the run's own config for another folder, its
    # config object): one line naming the key, its range and what was given; nothing written
    want = ("error: The 'certify.rhos' parameter of the config must be a list of at least "
            "one int in the range [0, 2^53] (the radii of certify's table), e.g. [0, 50, "
            "100]. Got {} instead.\n")
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(yaml.safe_dump(CONFIG))
    for args, got in (([config], "[]"), ([copy / runs.CONFIG], "[]"),
                      ([fresh, "--certify.rhos", ""], "''"),
                      ([fresh, "--certify.rhos", "[]"], "'[]'")):
        r = _invoke("train", *args, "--run-dir", tmp_path / "new", "-q")
        assert r.exit_code == 1 and r.output == want.format(got), r.output
        assert not (tmp_path / "new").exists()
    cfg = runs.RunDir(copy).load_config()
    for c in (cfg, dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, chunk_size=8))):
        with pytest.raises(ConfigError, match=r"^The 'certify\.rhos' parameter of the config "):
            train_run(c, tmp_path / "new", executor=LocalExecutor(1))
        assert not (tmp_path / "new").exists()
