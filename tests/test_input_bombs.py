"""Inputs whose headers declare far more than they hold (image and compression bombs): each is
refused from its header, before its pixels or bytes are decoded into memory."""

from __future__ import annotations

import warnings

import numpy as np
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
