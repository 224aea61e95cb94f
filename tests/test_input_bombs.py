"""Inputs whose headers declare far more than they hold (image and compression bombs): each is
refused from its header, before its pixels or bytes are decoded into memory."""

from __future__ import annotations

import warnings

import pytest

from poisoncert.experiment.inputform import InputForm
from poisoncert.experiment.inputs import read_inputs

FORM = InputForm(shape=(1, 28, 28), kind="uint8", scale=255.0, deskew=False)


def test_oversized_image_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    """A PNG beyond Pillow's pixel limit was a DecompressionBombError traceback; one between
    the warning and the error limits was decoded whole (its pixels in memory) before its size
    was compared with the run's."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the limits, scaled down
    Image.new("L", (200, 200)).save(tmp_path / "bomb.png")  # 40,000 pixels: > 2x the limit
    with pytest.raises(ValueError, match=r"bomb\.png: the run takes 28x28 grayscale \(mode L\) "
                                         r"images; this one is larger than Pillow opens"):
        read_inputs(tmp_path / "bomb.png", FORM)
    Image.new("L", (120, 120)).save(tmp_path / "big.png")  # 14,400: between the limits
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self) or
                        Image.Image.__dict__["load"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no decompression-bomb warning either
        with pytest.raises(ValueError, match=r"big\.png: the run takes 28x28 grayscale "
                                             r"\(mode L\) images; this one is 120x120"):
            read_inputs(tmp_path / "big.png", FORM)
    assert loads == []  # refused from the header: no pixel was decoded


def _gz_idx(path, n: int, extra: int = 0) -> None:
    """A gzipped IDX images file declaring ``n`` 28x28 images of zeros (and ``extra`` zero bytes
    beyond them), written in pieces: megabytes on disk for gigabytes of content."""
    import zlib

    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(1 << 24)
    with open(path, "wb") as f:
        f.write(co.compress(bytes([0, 0, 8, 3]) + b"".join(
            v.to_bytes(4, "big") for v in (n, 28, 28))))
        left = n * 784 + extra
        while left:
            k = min(left, len(zero))
            f.write(co.compress(zero[:k]))
            left -= k
        f.write(co.flush())


def test_gzip_idx_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    """A 3 MB gzipped IDX file declaring 4 million images (3 GB) was decompressed whole (then an
    out-of-memory error, or the machine's memory gone); one declaring 10 images followed by
    gigabytes of zeros was decompressed whole before "longer than its header declares".
    (Here, a 64 MiB limit and 200,000 images: the same refusal, cheap to write.)"""
    from poisoncert import resources
    from poisoncert.data.errors import DataFormatError

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "64M")
    _gz_idx(tmp_path / "bomb.gz", 200_000)
    with pytest.raises(resources.ResourceError,
                       match=r"bomb\.gz does not fit in memory: its header declares "
                             r"200000 x 28 x 28 values, 150 MiB; 64 MiB are available"):
        read_inputs(tmp_path / "bomb.gz", FORM)
    _gz_idx(tmp_path / "trail.gz", 10, extra=256 << 20)
    with pytest.raises(DataFormatError, match=r"trail\.gz is longer than its IDX header "
                                              r"declares: its gzip stream decompresses to "
                                              r"more than 7,856 bytes\."):
        read_inputs(tmp_path / "trail.gz", FORM)
    _gz_idx(tmp_path / "ok.gz", 3)
    assert read_inputs(tmp_path / "ok.gz", FORM).x.shape == (3, 1, 28, 28)


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_an_array_declaring_more_than_memory_is_refused_from_its_header(tmp_path, suffix,
                                                                       monkeypatch):
    """A .npz or .npy whose header declares an array beyond the memory (a few bytes of file:
    compressed zeros, or a cut file) is refused before its data is read; np.load tried to
    allocate it (a 3 MB .npz of 4 million images took 3.6 GB, then failed)."""
    import io
    import zipfile

    import numpy as np

    from poisoncert import resources

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")  # a figure on any machine
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                                "shape": (4_000_000_000, 28, 28)})
    path = tmp_path / f"bomb{suffix}"
    if suffix == ".npz":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", buf.getvalue() + bytes(100))
    else:
        path.write_bytes(buf.getvalue() + bytes(100))
    with pytest.raises(resources.ResourceError, match=rf"bomb\{suffix}: its array 'x' of shape "
                                                      r"\(4000000000, 28, 28\) \(float32\) "
                                                      r"does not fit in memory"):
        read_inputs(path, FORM)
    # a real one of the same form is read as before
    good = tmp_path / f"good{suffix}"
    x = np.zeros((3, 28, 28), dtype=np.uint8)
    np.savez(good, x=x) if suffix == ".npz" else np.save(good, x)
    assert read_inputs(good, FORM).x.shape == (3, 1, 28, 28)


def test_a_data_set_npz_declaring_more_than_memory_is_refused_from_its_header(tmp_path,
                                                                             monkeypatch):
    """``data.name: npz:...``: an array whose header declares more than the memory is refused
    by name before it is decompressed (np.load tried to allocate it)."""
    import io
    import zipfile

    import numpy as np

    from poisoncert import resources
    from poisoncert.data import load_dataset

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")  # a figure on any machine
    small = io.BytesIO()
    np.savez(small, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4) % 2,
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.arange(2))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                                "shape": (10**13, 8, 8)})
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(io.BytesIO(small.getvalue())) as src, zipfile.ZipFile(path, "w") as z:
        for name in src.namelist():
            z.writestr(name, buf.getvalue() + bytes(64) if name == "x_train.npy"
                       else src.read(name))
    with pytest.raises(resources.ResourceError, match=r"data\.npz: the array 'x_train' of shape "
                                                      r"\(10000000000000, 8, 8\) \(uint8\) "
                                                      r"does not fit in memory"):
        load_dataset(f"npz:{path}")


def test_predictions_beyond_memory_are_refused_before_any_is_made(monkeypatch):
    """An input file that fits can still ask for T times more in predictions: refused with
    the most inputs that fit, before any classifier runs."""
    from poisoncert import resources
    from poisoncert.experiment.ensemble import _check_predictions_fit

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")
    with pytest.raises(resources.ResourceError,
                       match=r"^The predictions of 10,000,000 inputs by 1000 base classifiers do "
                             r"not fit in memory: .* Give at most [\d,]+ inputs at a time\.$"):
        _check_predictions_fit(1000, 10_000_000, 10)
    _check_predictions_fit(1000, 10_000, 10)  # 20 MB: fits


def test_an_npz_y_declaring_more_than_memory_is_refused_from_its_header(tmp_path, monkeypatch):
    """The .npz's optional 'y' is read from its header first too: a small 'x' beside a 'y'
    declaring 16 GB was allocated by np.load."""
    import io
    import zipfile

    import numpy as np

    from poisoncert import resources

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")
    x, y = io.BytesIO(), io.BytesIO()
    np.save(x, np.zeros((3, 28, 28), dtype=np.uint8))
    np.lib.format.write_array_header_1_0(y, {"descr": "<i8", "fortran_order": False,
                                              "shape": (2_000_000_000,)})
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", x.getvalue())
        z.writestr("y.npy", y.getvalue() + bytes(100))
    with pytest.raises(resources.ResourceError, match=r"bomb\.npz: its array 'y' of shape "
                                                      r"\(2000000000,\) \(int64\) does not fit"):
        read_inputs(path, FORM)
