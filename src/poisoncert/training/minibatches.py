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

__all__ = ["ImageBatcher", "Minibatches", "elastic_grid", "sample_minibatches", "warp_images"]


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


def elastic_grid(image_shape) -> tuple[int, int]:
    """The coarse grid of elastic displacements for images ``(..., H, W)``: one node per 4
    pixels, at least 2 per axis."""
    h, w = image_shape[-2:]
    return max(2, round(h / 4)), max(2, round(w / 4))


def sample_minibatches(labels: np.ndarray, cfg: TrainConfig, seed: int, *,
                       shifts: bool = True, image_shape=None) -> Minibatches:
    """The ``cfg.steps`` minibatches of one classifier, drawn with replacement from its
    sub-dataset whose labels are ``labels`` (see ``TrainConfig.balance``), and their shifts
    or warps when ``cfg.augment`` and ``shifts`` (images; ``image_shape`` ``(C, H, W)`` is
    needed for elastic warps).

    Uses ``numpy.random.default_rng(selection.init_seed(seed))``: positions first, then shifts
    (or the warp parameters, then the elastic grids).
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
            fields = (cfg.elastic * rng.standard_normal(
                (*size, 2, *elastic_grid(image_shape)))).astype(np.float32)
        return Minibatches(positions, warps=warps, fields=fields)
    drawn = None
    if shifts and cfg.augment and cfg.max_shift > 0:
        drawn = rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=(*size, 2))
    return Minibatches(positions, drawn)


def warp_images(x: torch.Tensor, warps: torch.Tensor, fields: torch.Tensor | None
                ) -> torch.Tensor:
    """Images ``x`` ``(N, C, H, W)`` resampled through ``warps`` ``(N, 5)`` and elastic
    ``fields`` ``(N, 2, gh, gw)`` (see ``Minibatches``; bilinear, zero fill).

    Output pixel ``p`` (centred coordinates) reads input ``A p + t + e(p)``, ``A`` the
    inverse-of-zoom rotation-shear matrix, ``t`` the translation and ``e`` the interpolated
    elastic displacement. Each image is computed on its own (no batch statistics), so an
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
        disp = F.interpolate(fields.to(dt), size=(h, w), mode="bilinear", align_corners=True)
        scale = torch.tensor([2.0 / w, 2.0 / h], dtype=dt, device=x.device)
        grid = grid + disp.flip(1).permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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
