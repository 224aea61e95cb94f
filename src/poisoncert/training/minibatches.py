"""One classifier's training draws (numpy; the same for every path) and the images they make.

``sample_minibatches`` draws classifier ``i``'s minibatches (positions in its sub-dataset,
class-balanced or uniform, with replacement) and their augmentation (integer shifts, or random
warps and elastic fields) from ``selection.init_seed(seeds[i])`` alone; ``ImageBatcher`` turns
rows, shifts and warps into image batches (``warp_images`` resamples them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from poisoncert._validation import param_error
from poisoncert.selection import init_seed
from poisoncert.training.settings import TrainConfig

__all__ = ["ELASTIC_METHODS", "FieldStream", "ImageBatcher", "Minibatches",
           "elastic_displacement", "elastic_grid", "sample_minibatches", "warp_images"]


@dataclass(frozen=True, eq=False)
class Minibatches:
    """One classifier's training draws: ``positions[s, b]`` indexes its sub-dataset;
    ``shifts[s, b] = (dy, dx)`` (``None`` without augmentation); with warps instead
    ``warps[s, b] = (angle, scale, shear, ty, tx)`` (radians, factor, radians, pixels) and,
    with ``elastic``, ``fields[s, b]``, the coarse displacement grid ``(2, gh, gw)``
    in pixels (``(dy, dx)``)."""

    positions: np.ndarray
    shifts: np.ndarray | None = None
    warps: np.ndarray | None = None
    fields: np.ndarray | None = None
    #: With ``lazy_fields``: the elastic grids are drawn step block by step block
    #: (``FieldStream.take``), the same numbers as ``fields``, without holding them all.
    field_stream: FieldStream | None = None


class FieldStream:
    """Elastic grids drawn on demand, in order: ``take(k)`` gives the next ``k`` steps'
    ``(k, B, 2, gh, gw)`` float32 grids. The generator continues where the warps left it, and
    numpy's normal draws do not depend on how they are split into calls, so the grids are
    those ``sample_minibatches`` draws at once."""

    def __init__(self, rng: np.random.Generator, elastic: float, batch: int,
                 grid: tuple[int, int]):
        self.rng, self.elastic, self.batch, self.grid = rng, float(elastic), batch, grid

    def take(self, k: int) -> np.ndarray:
        return (self.elastic * self.rng.standard_normal(
            (k, self.batch, 2, *self.grid))).astype(np.float32)

    def take_into(self, out: np.ndarray) -> None:
        """``take(len(out))`` written into ``out`` (float32, that shape, any strides, such
        as one classifier's slice of a group's stacked grids): the same bits (the product
        in float64, rounded to float32 once) without a float32 temporary or a copy."""
        np.multiply(self.rng.standard_normal(out.shape), self.elastic, out=out,
                    casting="same_kind")


def elastic_grid(image_shape) -> tuple[int, int]:
    """The coarse grid of elastic displacements for images ``(..., H, W)``: one node per 4
    pixels, at least 2 per axis."""
    h, w = image_shape[-2:]
    return max(2, round(h / 4)), max(2, round(w / 4))


def sample_minibatches(labels: np.ndarray, cfg: TrainConfig, seed: int, *,
                       shifts: bool = True, image_shape=None,
                       lazy_fields: bool = False) -> Minibatches:
    """The ``cfg.steps`` minibatches of one classifier, drawn with replacement from its
    sub-dataset whose labels are ``labels`` (see ``TrainConfig.balance``), and their shifts
    or warps when ``cfg.augment`` and ``shifts`` (images; ``image_shape`` ``(C, H, W)`` is
    needed for elastic warps).

    Uses ``numpy.random.default_rng(selection.init_seed(seed))``: positions first, then shifts
    (or the warp parameters, then the elastic grids). ``lazy_fields``: the grids are left in a
    ``FieldStream`` (``Minibatches.field_stream``) to be drawn as the steps need them.
    """
    labels = np.asarray(labels, dtype=np.int64)
    m = len(labels)
    if m == 0:
        raise param_error("labels", "sample_minibatches", "a non-empty array", labels)
    rng = np.random.default_rng(init_seed(seed))
    size = (cfg.steps, cfg.batch_size)
    if cfg.balance:
        counts = np.bincount(labels)
        w = 1.0 / counts[labels]
        positions = rng.choice(m, size=size, replace=True, p=w / w.sum())
    else:
        positions = rng.integers(0, m, size=size)
    positions = np.asarray(positions, dtype=np.int64)
    if shifts and cfg.warps:
        u = rng.uniform(-1.0, 1.0, size=(*size, 5))
        scales = np.array([np.deg2rad(cfg.rotation), cfg.scale, np.deg2rad(cfg.shear),
                           cfg.max_shift, cfg.max_shift])
        warps = u * scales
        warps[..., 1] += 1.0
        fields = None
        if cfg.elastic > 0:
            if image_shape is None:
                raise param_error("image_shape", "sample_minibatches",
                                  "the image shape (C, H, W) for elastic warps", None)
            stream = FieldStream(rng, cfg.elastic, cfg.batch_size, elastic_grid(image_shape))
            if lazy_fields:
                return Minibatches(positions, warps=warps, field_stream=stream)
            fields = stream.take(cfg.steps)
        return Minibatches(positions, warps=warps, fields=fields)
    drawn = None
    if shifts and cfg.augment and cfg.max_shift > 0:
        drawn = rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=(*size, 2))
    return Minibatches(positions, drawn)


def warp_images(x: torch.Tensor, warps: torch.Tensor, fields: torch.Tensor | None,
                elastic: str = "auto") -> torch.Tensor:
    """Images ``x`` ``(N, C, H, W)`` resampled through ``warps`` ``(N, 5)`` and elastic
    ``fields`` ``(N, 2, gh, gw)`` (see ``Minibatches``; bilinear, zero fill).

    Output pixel ``p`` (centred coordinates) reads input ``A p + t + e(p)``, ``A`` the
    inverse-of-zoom rotation-shear matrix, ``t`` the translation and ``e`` the elastic
    displacement, interpolated bilinearly from the grid (``elastic_displacement``; ``elastic``
    picks its formulation). Each image is computed on its own (no batch statistics), so an
    image's result does not depend on its neighbours in ``x``.
    """
    n, _, h, w = x.shape
    dt = x.dtype
    warps = warps.to(dt)
    angle, zoom, shear, ty, tx = warps.unbind(-1)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.stack([
        torch.stack([cos / zoom, (tan * cos - sin) / zoom, 2 * tx / w], -1),
        torch.stack([sin / zoom, cos / zoom, 2 * ty / h], -1)], -2)  # (N, 2, 3), (x, y) order
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # (N, H, W, 2) as (x, y)
    if fields is not None:
        grid = grid + elastic_displacement(fields.to(dt), h, w, elastic)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _bilinear_taps(n: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear interpolation (``align_corners=True``) from ``g`` nodes to ``n`` points: the
    lower node of each point, the upper one and the upper node's weight."""
    pos = np.arange(n, dtype=np.float64) * ((g - 1) / max(n - 1, 1))
    i0 = np.minimum(np.floor(pos).astype(np.int64), max(g - 2, 0))
    return i0, np.minimum(i0 + 1, g - 1), pos - i0


_TAPS: dict = {}


def _elastic_taps(h: int, w: int, gh: int, gw: int, dtype, device):
    """Indices into a flattened ``(gh, gw)`` grid of the four nodes around each of the
    ``h * w`` pixels, and their weights ``(2, 4, h * w)`` with the grid-unit scale of each
    component (x: ``2 / w``, y: ``2 / h``) folded in (cached per shape, dtype and device)."""
    key = (h, w, gh, gw, dtype, str(device))
    if key not in _TAPS:
        y0, y1, ly = _bilinear_taps(h, gh)
        x0, x1, lx = _bilinear_taps(w, gw)
        Y0, X0 = np.meshgrid(y0, x0, indexing="ij")
        Y1, X1 = np.meshgrid(y1, x1, indexing="ij")
        LY, LX = np.meshgrid(ly, lx, indexing="ij")
        idx = np.stack([Y0 * gw + X0, Y0 * gw + X1, Y1 * gw + X0, Y1 * gw + X1]).reshape(4, -1)
        wts = np.stack([(1 - LY) * (1 - LX), (1 - LY) * LX, LY * (1 - LX), LY * LX])
        wts = np.stack([wts * (2.0 / w), wts * (2.0 / h)]).reshape(2, 4, -1)
        _TAPS[key] = (torch.as_tensor(idx, device=device),
                      torch.as_tensor(wts, device=device).to(dtype))
    return _TAPS[key]


#: Formulations of ``elastic_displacement``.
ELASTIC_METHODS = ("auto", "interpolate", "gather")


def elastic_displacement(fields: torch.Tensor, h: int, w: int, method: str = "auto"
                         ) -> torch.Tensor:
    """The elastic displacement of every pixel, ``(N, h, w, 2)`` in ``grid_sample``'s units
    (``(x, y)``), from coarse grids ``fields`` ``(N, 2, gh, gw)`` in pixels (``(dy, dx)``):
    bilinear interpolation with ``align_corners=True``.

    ``method``: ``"interpolate"`` (``F.interpolate``; the CPU's, where it is the cheaper:
    1.8 ms of CPU time per 256 MNIST-sized images against 10 ms), ``"gather"`` (CUDA's: each
    pixel the weighted sum of its four grid nodes, formed by gathers and elementwise products
    and sums, so every value is computed alone and nothing runs CUDA's upsampling kernel,
    which parallelises over the output pixels only and was the largest single cost of a
    warped step on an H200), or ``"auto"`` (by the device). The two compute the same
    function, rounded differently in the last bits (tested).
    """
    if method not in ELASTIC_METHODS:
        raise param_error("method", "elastic_displacement", f"one of {ELASTIC_METHODS}",
                          method)
    if method == "interpolate" or (method == "auto" and fields.device.type != "cuda"):
        disp = F.interpolate(fields, size=(h, w), mode="bilinear", align_corners=True)
        scale = torch.tensor([2.0 / w, 2.0 / h], dtype=fields.dtype, device=fields.device)
        return disp.flip(1).permute(0, 2, 3, 1) * scale
    n, _, gh, gw = fields.shape
    idx, wts = _elastic_taps(h, w, gh, gw, fields.dtype, fields.device)
    flat = fields.flip(1).reshape(n, 2, gh * gw)  # (dx, dy) = (x, y) order
    disp = flat[:, :, idx[0]] * wts[:, 0]
    for k in (1, 2, 3):
        disp = disp + flat[:, :, idx[k]] * wts[:, k]
    return disp.transpose(1, 2).reshape(n, h, w, 2)


class ImageBatcher:
    """Gathers (and shifts) training images from a tensor of the rows a task needs."""

    def __init__(self, x: torch.Tensor, max_shift: int):
        self.x = x
        self.a = a = int(max_shift)
        if a:
            n, c, h, w = x.shape
            hp, wp = h + 2 * a, w + 2 * a
            self.flat = F.pad(x, (a, a, a, a)).contiguous().view(-1)
            ar = lambda k: torch.arange(k, device=x.device)  # noqa: E731
            grid = (ar(c) * hp * wp)[:, None, None] + (ar(h) * wp)[None, :, None] + ar(w)
            self.grid = grid.reshape(-1)
            self.sample_shape = (c, h, w)
            self.stride, self.wp = c * hp * wp, wp

    def __call__(self, rows: torch.Tensor, shifts: torch.Tensor | None,
                 warps: torch.Tensor | None = None, fields: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """``rows``: any shape ``S``; ``shifts``: ``S + (2,)`` -> images ``S + sample_shape``;
        ``out[..., c, r, q] = x[row, c, r + dy, q + dx]`` (0 outside the image). With
        ``warps`` ``S + (5,)`` (and ``fields``) the images are warped instead
        (``warp_images``)."""
        if warps is not None:
            imgs = self.x[rows]
            shape = imgs.shape
            flat = imgs.reshape(-1, *shape[-3:])
            f = None if fields is None else fields.reshape(-1, *fields.shape[-3:])
            return warp_images(flat, warps.reshape(-1, 5), f).view(shape)
        if not self.a or shifts is None:
            return self.x[rows]
        a = self.a
        base = rows * self.stride + (a + shifts[..., 0]) * self.wp + (a + shifts[..., 1])
        return self.flat[base.unsqueeze(-1) + self.grid].view(*rows.shape, *self.sample_shape)
