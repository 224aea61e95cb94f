"""What ``poisoncert predict`` says of inputs it refuses: the values given, as they are."""

from __future__ import annotations

import numpy as np
import pytest

from poisoncert.experiment.inputform import InputForm
from poisoncert.experiment.inputs import read_inputs

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
