"""What ``poisoncert predict`` says of inputs it refuses: the values given, as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from poisoncert.experiment.inputform import InputForm
from poisoncert.experiment.inputs import read_inputs

ROOT = Path(__file__).resolve().parents[1]
MNIST = InputForm(shape=(1, 28, 28), kind="uint8", scale=255.0, deskew=False)
UNIT = InputForm(shape=(4,), kind="unit", scale=1.0, deskew=False)


@pytest.mark.parametrize(("form", "nan_at", "said"), [
    (MNIST, [1], "float64 values 0.0..255.0 and 1 NaN, shape (3, 28, 28)"),
    (UNIT, [1, 5], "float64 values 0.0..1.0 and 2 NaN, shape (3, 4)"),
    (UNIT, "all", "float64 values all NaN, shape (3, 4)")])
def test_an_input_holding_nan_is_named_as_such(tmp_path, form, nan_at, said):
    """An array of pixels 0..255 with one NaN was described as 'values nan..nan': the range
    given hid the values that were there and did not say which problem to look for."""
    shape = (3, 28, 28) if form is MNIST else (3, 4)
    x = np.linspace(0, 255 if form is MNIST else 1, np.prod(shape)).reshape(shape)
    if nan_at == "all":
        x[...] = np.nan
    else:
        x.reshape(-1)[nan_at] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError) as e:
        read_inputs(tmp_path / "x.npy", form)
    assert str(e.value) == (f"{tmp_path / 'x.npy'}: the run takes {form.describe()}; this file "
                            f"holds {said}.")


def test_float32_inputs_are_described_in_float32_digits(tmp_path):
    """numpy 2's ``format`` of a float32 gives its float64 widening: digits / 17 in float32
    were said to hold 'values 0.0..0.9411764740943909'; the file holds 0.9411765."""
    np.save(tmp_path / "x.npy", (np.arange(17, dtype=np.float64) / 17).astype(np.float32))
    with pytest.raises(ValueError) as e:
        read_inputs(tmp_path / "x.npy", MNIST)
    assert "holds float32 values 0.0..0.9411765, shape (17,)." in str(e.value), str(e.value)


@pytest.mark.parametrize("name", ["digit.bmp", "digit.tif", "digit.webp", "notes.txt",
                                  "empty.dat"])
def test_a_file_of_no_form_predict_reads_says_which_forms_it_reads(tmp_path, monkeypatch,
                                                                   name):
    """A BMP, TIFF or WebP digit, or a text file, was read whole as an IDX file and refused
    as 'not an IDX file: bad magic number 0x424D...': it named no form INPUTS may have (nor,
    for an image, that it is one). It is now refused from its first bytes, naming the forms
    predict reads (and the image's format), without reading the file whole."""
    from PIL import Image

    from poisoncert.data import idx

    path = tmp_path / name
    if name.startswith("digit"):
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    else:
        path.write_text("1 2 3\n" if name.endswith(".txt") else "")

    def whole(*args, **kwargs):
        raise AssertionError("the file was read whole")

    monkeypatch.setattr(idx, "read_idx_file", whole)
    with pytest.raises(ValueError) as e:
        read_inputs(path, MNIST)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "a .npz, a .npy, a .csv" in message and "IDX file" in message
    if name.startswith("digit"):
        fmt = {"bmp": "BMP", "tif": "TIFF", "webp": "WEBP"}[name.split(".")[1]]
        assert f"a {fmt} image; predict reads PNG and JPEG images (save it as PNG)" in message
    else:
        assert "none of the inputs predict reads" in message


def test_an_idx_file_under_any_name_is_still_read(tmp_path):
    """The first-bytes check lets IDX files through, gzipped or not, whatever their name."""
    import gzip

    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape) + \
        x.tobytes()
    (tmp_path / "images").write_bytes(raw)
    (tmp_path / "images.dat").write_bytes(gzip.compress(raw))
    for name in ("images", "images.dat"):
        assert np.array_equal(read_inputs(tmp_path / name, MNIST).x[:, 0], x)


@pytest.mark.parametrize("content", [b"1,2,3\n4,5,6\n", b"\x80\x04K\x01.", b""])
def test_a_npy_name_on_another_file_is_not_taken_for_a_pickle(tmp_path, content):
    """A text file (or a pickle, or nothing) named .npy was refused in numpy's words: 'This
    file contains pickled (object) data. If you trust the file you can load it unsafely using
    the allow_pickle= keyword argument', advice predict cannot take, about a file that may
    hold no pickle. It is refused as no .npy, from its first bytes."""
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        read_inputs(path, MNIST)
    assert str(e.value) == (f"{path}: not a .npy array: it does not start with the header "
                            "numpy.save writes (b'\\x93NUMPY').")


@pytest.mark.parametrize("inputs", ["missing.npy", "empty folder", "digit.bmp"])
def test_predict_names_bad_inputs_before_it_loads_the_run(tmp_path, monkeypatch, inputs):
    """A missing INPUTS, a folder without images or a file of no form predict reads was
    named only once the run was loaded: every weights file read and checked against its
    checksum first (minutes for a large run)."""
    from PIL import Image
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment.ensemble import Ensemble

    path = tmp_path / inputs
    if inputs == "empty folder":
        path.mkdir()
        (path / "notes.txt").write_text("no image")
    elif inputs.endswith(".bmp"):
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)

    def never(*args, **kwargs):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(Ensemble, "load", never)
    run = tmp_path / "run"  # a run directory as far as predict sees before loading it
    run.mkdir()
    (run / "config.yaml").write_text((ROOT / "experiments" / "mnist17.yaml").read_text())
    r = CliRunner().invoke(app, ["predict", str(run), str(path)])
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), r.output
    said = {"missing.npy": "no such file or folder (INPUTS is a .npz",
            "empty folder": "holds no PNG or JPEG images",
            "digit.bmp": "a BMP image; predict reads PNG and JPEG images"}[inputs]
    assert said in lines[0]


def test_grey_or_opaque_images_in_other_modes_are_read_as_the_run_takes_them(tmp_path):
    """A grey digit saved as RGB, RGBA (opaque), LA, palette or 1-bit PNG was refused ('the
    run takes 28x28 grayscale (mode L) images; this one is 28x28 in mode RGB') though it
    converts exactly; it is now read as the same pixels as its mode-L file. A grey image for
    an RGB run is the same grey in three channels. Transparency is still refused."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    bw = np.where(grey > 127, 255, 0).astype(np.uint8)
    saved = {
        "l.png": Image.fromarray(grey, mode="L"),
        "rgb.png": Image.fromarray(np.stack([grey] * 3, -1), mode="RGB"),
        "rgba.png": Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 255)]),
                                    mode="RGBA"),
        "la.png": Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), mode="LA"),
        "p.png": Image.fromarray(grey, mode="L").convert("P"),
    }
    for name, img in saved.items():
        img.save(tmp_path / name)
    Image.fromarray(bw, mode="L").convert("1").save(tmp_path / "bw.png")
    for name in saved:
        got = read_inputs(tmp_path / name, MNIST).x
        assert got.shape == (1, 1, 28, 28) and np.array_equal(got[0, 0], grey), name
    assert np.array_equal(read_inputs(tmp_path / "bw.png", MNIST).x[0, 0], bw)
    cifar = InputForm(shape=(3, 28, 28), kind="uint8", scale=255.0, deskew=False)
    got = read_inputs(tmp_path / "l.png", cifar).x
    assert got.shape == (1, 3, 28, 28) and all(np.array_equal(got[0, c], grey)
                                               for c in range(3))
    alpha = np.full_like(grey, 255)
    alpha[3, 4] = 0
    Image.fromarray(np.dstack([grey] * 3 + [alpha]), mode="RGBA").save(tmp_path / "hole.png")
    with pytest.raises(ValueError, match=r"hole\.png: .*mode RGBA\) has transparent pixels"):
        read_inputs(tmp_path / "hole.png", MNIST)


@pytest.mark.parametrize("preprocessed", [False, True])
@pytest.mark.parametrize("kind", ["Ensemble", "NeighborModel"])
def test_inputs_numpy_cannot_read_are_one_line_naming_x(kind, preprocessed):
    """``Ensemble.predict([[1, 2], [3]])`` (rows of unequal lengths; or a tensor that
    requires grad) raised numpy's own "setting an array element with a sequence. The
    requested array has an inhomogeneous shape after 1 dimensions..." naming no parameter:
    one line naming x, what it takes and what was given."""
    from poisoncert.experiment.inputform import RunClasses
    from poisoncert.experiment.nnmodel import PixelForm

    form = MNIST if kind == "Ensemble" else PixelForm((1, 28, 28), "uint8", 255.0, False)
    model = type(kind, (RunClasses,), {"form": form, "classes": np.arange(10)})()
    with pytest.raises(ValueError) as e:
        model._inputs([[1, 2], [3]], preprocessed)
    text = str(e.value)
    assert text.startswith(f"The 'x' parameter of {kind} must be "), text
    assert text.endswith("Got 'a list that numpy cannot make an array of (rows of unequal "
                         "lengths)' instead."), text
    assert "\n" not in text and "inhomogeneous" not in text


def test_one_input_is_said_in_the_singular(capsys):
    """``predict`` of one image said '1 inputs: 0 certified, 1 abstained' and warned '1 of the
    1 inputs have a mean value ...'."""
    from poisoncert.cli.predict import _print_summary
    from poisoncert.experiment.inputform import unusual_inputs

    _print_summary({"n_inputs": 1, "n_certified": 0, "radius_median": None,
                    "predicted": {"1": 0, "7": 0}}, err=False, as_json=False)
    assert capsys.readouterr().out.startswith("1 input: 0 certified, 1 abstained\n")
    _print_summary({"n_inputs": 2, "n_certified": 2, "radius_median": 3.0, "radius_max": 4,
                    "radius_unit": "u", "predicted": {"1": 2}}, err=False, as_json=False)
    assert capsys.readouterr().out.startswith("2 inputs: 2 certified, 0 abstained\n")
    assert unusual_inputs(np.array([0.9]), (0.03, 0.22), 0.05).startswith(
        "the 1 input has a mean value after the run's preprocessing (from 0.9 to 0.9)")
    assert unusual_inputs(np.array([0.9, 0.1]), (0.03, 0.22), 0.05).startswith(
        "1 of the 2 inputs has a mean value")
    assert unusual_inputs(np.array([0.9, 0.8]), (0.03, 0.22), 0.05).startswith(
        "2 of the 2 inputs have a mean value")
