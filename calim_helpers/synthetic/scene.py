"""The resting scene: soma footprints and the neuropil background.

:func:`soma_footprints` places rounded, slightly irregular somata (an ellipse
with a wobbly outline, a soft edge and a dimmer nucleus) and returns them as small
patches in a :class:`Somata`; :func:`neuropil_image` draws the smooth out-of-focus
background under a radial illumination fall-off. Both are pure functions of their
arguments and seed.

Examples
--------
>>> from calim_helpers.synthetic.scene import neuropil_image, soma_footprints
>>> somata = soma_footprints((48, 64), 3, pixel_size_um=1.0, seed=2)
>>> somata.n_neurons, somata.dense().shape
(3, (3, 48, 64))
>>> float(somata.dense().max())
1.0
>>> background = neuropil_image((48, 64), pad_px=2, seed=2)
>>> background.shape, round(float(background[2:-2, 2:-2].mean()), 6)
((52, 68), 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from calim_helpers.synthetic._common import (
    _STREAM_NEUROPIL,
    _STREAM_SOMATA,
    _check_positive,
    _check_range,
    _check_shape,
)

__all__ = ["Somata", "neuropil_image", "soma_footprints"]

_N_HARMONICS = 3  # angular harmonics k = 2, 3, 4 of the soma outline
_ZERO_BELOW = 0.01  # footprint values below this fraction of the peak are set to 0


@dataclass(frozen=True, eq=False)
class Somata:
    """Soma footprints as small patches plus the geometry they were drawn from.

    Attributes
    ----------
    frame_shape : tuple of int
        ``(y, x)`` size of the frame in pixels.
    centers : ndarray, shape (n, 2)
        Soma centres ``(row, col)`` in pixel index coordinates.
    semi_axes : ndarray, shape (n, 2)
        Semi-axes ``(a, b)`` of the underlying ellipse, pixels.
    angles : ndarray, shape (n,)
        Orientation of the ``a`` axis, radians from the +x (column) axis towards +y.
    harmonics : ndarray, shape (n, 3, 2)
        Outline irregularity: relative amplitude and phase of the angular
        harmonics k = 2, 3, 4.
    patches : ndarray, shape (n, p, p), float32
        Footprint of each soma (peak 1) on a ``p x p`` window.
    origins : ndarray, shape (n, 2), int
        Frame position ``(row, col)`` of ``patches[i, 0, 0]``.
    """

    frame_shape: tuple[int, int]
    centers: np.ndarray
    semi_axes: np.ndarray
    angles: np.ndarray
    harmonics: np.ndarray
    patches: np.ndarray
    origins: np.ndarray

    @property
    def n_neurons(self) -> int:
        """Number of somata."""
        return int(self.centers.shape[0])

    def radius(self, index: int, theta: np.ndarray) -> np.ndarray:
        """Distance from the centre to the outline of soma ``index``.

        Parameters
        ----------
        index : int
            Soma index.
        theta : ndarray
            Polar angle, radians from the +x (column) axis towards +y (row).

        Returns
        -------
        ndarray
            Outline radius in pixels, same shape as ``theta``; the footprint is
            0.5 of its local cytoplasm level there.
        """
        return _outline_radius(
            self.semi_axes[index], self.angles[index], self.harmonics[index], theta
        )

    def dense(self) -> np.ndarray:
        """Footprints on the whole frame.

        Returns
        -------
        ndarray, shape (n, y, x), float32
            Footprint of each soma, peak 1, zero outside its patch.
        """
        out = np.zeros((self.n_neurons, *self.frame_shape), dtype=np.float32)
        for i in range(self.n_neurons):
            _add_patch(out[i], self.patches[i], self.origins[i], 1.0)
        return out


def _outline_radius(
    semi_axes: np.ndarray, angle: float, harmonics: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    a, b = semi_axes
    phi = np.asarray(theta, dtype=float) - angle
    ellipse = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    wobble = np.ones_like(phi)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        wobble = wobble + amp * np.cos(k * phi + phase)
    return ellipse * wobble


def _add_patch(image: np.ndarray, patch: np.ndarray, origin: np.ndarray, weight: float) -> None:
    """``image[window] += weight * patch``, clipped to the image (in place)."""
    y0, x0 = int(origin[0]), int(origin[1])
    ph, pw = patch.shape
    h, w = image.shape
    ys, xs, ye, xe = max(y0, 0), max(x0, 0), min(y0 + ph, h), min(x0 + pw, w)
    if ye > ys and xe > xs:
        image[ys:ye, xs:xe] += weight * patch[ys - y0 : ye - y0, xs - x0 : xe - x0]


def _place_centers(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, min_dist: np.ndarray
) -> np.ndarray | None:
    """Random sequential placement with restarts; None when it keeps failing."""
    n = lo.shape[0]
    for _restart in range(20):
        centers = np.zeros((n, 2))
        for i in range(n):
            candidates = rng.uniform(lo[i], hi[i], (1000, 2))
            dist = np.hypot(*(candidates[:, None, :] - centers[None, :i, :]).transpose(2, 0, 1))
            ok = np.flatnonzero(np.all(dist >= min_dist[i, :i], axis=1))
            if ok.size == 0:
                break
            centers[i] = candidates[ok[0]]
        else:
            return centers
    return None


def soma_footprints(
    frame_shape: Sequence[int],
    n_neurons: int,
    /,
    *,
    pixel_size_um: float = 0.65,
    diameter_um: tuple[float, float] = (10.0, 15.0),
    max_aspect: float = 1.4,
    irregularity: float = 0.06,
    edge_px: float = 0.8,
    nucleus_fraction: float = 0.45,
    nucleus_dimming: tuple[float, float] = (0.0, 0.6),
    margin_px: float = 1.0,
    max_overlap: float = 0.05,
    seed: int = 0,
) -> Somata:
    """Place rounded, slightly irregular somata in a frame.

    Each soma is an ellipse with a wobbly outline and a soft edge (a logistic
    profile ``edge_px`` wide), filled with cytoplasm; its nucleus is dimmer by a
    random fraction, so some cells look filled and some ring-like. Somata lie
    entirely inside the frame and overlap at most lightly.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    n_neurons : int
        Number of somata, >= 0.
    pixel_size_um : float, optional
        Pixel size in micrometres. Default is 0.65.
    diameter_um : tuple of float, optional
        Range of the mean soma diameter in micrometres, drawn uniformly.
        Default is (10.0, 15.0).
    max_aspect : float, optional
        Largest ratio of the ellipse's long to short axis. Default is 1.4.
    irregularity : float, optional
        Largest relative amplitude of each outline harmonic. Default is 0.06.
    edge_px : float, optional
        Width of the soft edge, pixels. Default is 0.8.
    nucleus_fraction : float, optional
        Nucleus radius as a fraction of the short semi-axis. Default is 0.45.
    nucleus_dimming : tuple of float, optional
        Range of the nucleus's relative dimming (0 = filled cell). Default is (0.0, 0.6).
    margin_px : float, optional
        Extra distance between each soma's soft edge and the frame border, pixels.
        Default is 1.0.
    max_overlap : float, optional
        Allowed overlap as a fraction of the sum of two somata's radii. Default is 0.05.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    Somata
        Patches (peak 1, float32), their origins and the geometry.

    Raises
    ------
    ValueError
        If the somata cannot be placed (frame too small or too crowded).
    """
    shape = _check_shape(frame_shape)
    if n_neurons < 0:
        raise ValueError(f"n_neurons must be >= 0, got {n_neurons!r}")
    _check_positive("pixel_size_um", pixel_size_um)
    _check_positive("edge_px", edge_px)
    d_lo, d_hi = _check_range("diameter_um", diameter_um)
    _check_positive("diameter_um[0]", d_lo)
    if max_aspect < 1:
        raise ValueError(f"max_aspect must be >= 1, got {max_aspect!r}")
    dim_lo, dim_hi = _check_range("nucleus_dimming", nucleus_dimming)
    if dim_hi > 1:
        raise ValueError(f"nucleus_dimming must lie in [0, 1], got {nucleus_dimming!r}")

    rng = np.random.default_rng([seed, _STREAM_SOMATA])
    radius_px = rng.uniform(d_lo, d_hi, n_neurons) / 2.0 / pixel_size_um
    aspect = rng.uniform(1.0, max_aspect, n_neurons)
    semi_axes = np.stack([radius_px * np.sqrt(aspect), radius_px / np.sqrt(aspect)], axis=1)
    angles = rng.uniform(0.0, np.pi, n_neurons)
    harmonics = np.stack(
        [
            rng.uniform(0.0, irregularity, (n_neurons, _N_HARMONICS)),
            rng.uniform(0.0, 2 * np.pi, (n_neurons, _N_HARMONICS)),
        ],
        axis=2,
    )
    dimming = rng.uniform(dim_lo, dim_hi, n_neurons)
    nucleus_offset = rng.uniform(-0.15, 0.15, (n_neurons, 2)) * radius_px[:, None]

    theta = np.linspace(0.0, 2 * np.pi, 360, endpoint=False)
    r_max = np.array(
        [
            _outline_radius(semi_axes[i], angles[i], harmonics[i], theta).max()
            for i in range(n_neurons)
        ]
    )
    # the footprint is < _ZERO_BELOW beyond r + 4.6 edge: keep that inside the frame
    reach = r_max + 5.0 * edge_px + margin_px

    lo = reach[:, None] * np.ones(2)
    hi = np.asarray(shape, dtype=float) - 1.0 - lo
    if np.any(hi < lo):
        raise ValueError(
            f"frame_shape {shape} is too small for somata of diameter_um={diameter_um!r} "
            f"at pixel_size_um={pixel_size_um!r}"
        )
    min_dist = (1.0 - max_overlap) * (r_max[:, None] + r_max[None, :])
    centers = _place_centers(rng, lo, hi, min_dist)
    if centers is None:
        raise ValueError(
            f"cannot place n_neurons={n_neurons} somata in frame_shape {shape}; "
            "reduce n_neurons or diameter_um, or raise max_overlap"
        )

    patches, origins = _soma_patches(
        centers, semi_axes, angles, harmonics, dimming, nucleus_offset, r_max,
        nucleus_fraction=nucleus_fraction, edge_px=edge_px,
    )
    return Somata(shape, centers, semi_axes, angles, harmonics, patches, origins)


def _soma_patches(
    centers: np.ndarray,
    semi_axes: np.ndarray,
    angles: np.ndarray,
    harmonics: np.ndarray,
    dimming: np.ndarray,
    nucleus_offset: np.ndarray,
    r_max: np.ndarray,
    *,
    nucleus_fraction: float,
    edge_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Footprint patches (peak 1, one common odd size) and their frame origins."""
    n_neurons = centers.shape[0]
    size = 2 * int(math.ceil(r_max.max(initial=1.0) + 6.0 * edge_px)) + 1
    patches = np.zeros((n_neurons, size, size), dtype=np.float32)
    origins = np.zeros((n_neurons, 2), dtype=np.int64)
    offsets = np.arange(size) - size // 2
    for i in range(n_neurons):
        origins[i] = np.round(centers[i]).astype(np.int64) - size // 2
        dy = (origins[i, 0] + size // 2 + offsets - centers[i, 0])[:, None]
        dx = (origins[i, 1] + size // 2 + offsets - centers[i, 1])[None, :]
        dist = np.hypot(dy, dx)
        outline = _outline_radius(semi_axes[i], angles[i], harmonics[i], np.arctan2(dy, dx))
        body = expit((outline - dist) / edge_px)
        nuc_r = nucleus_fraction * semi_axes[i].min()
        nuc_d = np.hypot(dy - nucleus_offset[i, 0], dx - nucleus_offset[i, 1])
        fp = body * (1.0 - dimming[i] * expit((nuc_r - nuc_d) / edge_px))
        fp /= fp.max()
        fp[fp < _ZERO_BELOW] = 0.0
        patches[i] = fp
    return patches, origins


# --------------------------------------------------------------------------- background


def neuropil_image(
    frame_shape: Sequence[int],
    /,
    *,
    pixel_size_um: float = 0.65,
    correlation_um: float = 50.0,
    contrast: float = 0.2,
    vignetting: float = 0.3,
    pad_px: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Smooth, spatially varying neuropil / out-of-focus background.

    Gaussian-filtered noise (relative standard deviation ``contrast``) under a
    radial illumination fall-off (``vignetting`` at the frame's corners).

    Parameters
    ----------
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    pixel_size_um : float, optional
        Pixel size in micrometres. Default is 0.65.
    correlation_um : float, optional
        Standard deviation of the Gaussian smoothing, micrometres. Default is 50.0.
    contrast : float, optional
        Relative standard deviation of the smooth fluctuations. Default is 0.2.
    vignetting : float, optional
        Relative loss of illumination at the frame's corners. Default is 0.3.
    pad_px : int, optional
        Extra border on each side, pixels (room for motion). Default is 0.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    ndarray, shape (y + 2 * pad_px, x + 2 * pad_px), float64
        Relative neuropil level, >= 0.2, with mean 1 over the frame (the central
        ``frame_shape`` crop).
    """
    shape = _check_shape(frame_shape)
    _check_positive("pixel_size_um", pixel_size_um)
    _check_positive("correlation_um", correlation_um)
    if pad_px < 0:
        raise ValueError(f"pad_px must be >= 0, got {pad_px!r}")
    if not 0 <= vignetting < 1:
        raise ValueError(f"vignetting must lie in [0, 1), got {vignetting!r}")
    rng = np.random.default_rng([seed, _STREAM_NEUROPIL])
    padded = (shape[0] + 2 * pad_px, shape[1] + 2 * pad_px)
    field = ndimage.gaussian_filter(
        rng.standard_normal(padded), correlation_um / pixel_size_um, mode="reflect"
    )
    std = field.std()
    field = (field - field.mean()) / std if std > 0 else np.zeros(padded)
    yy = (np.arange(padded[0]) - pad_px - (shape[0] - 1) / 2) / max(shape[0] / 2, 1)
    xx = (np.arange(padded[1]) - pad_px - (shape[1] - 1) / 2) / max(shape[1] / 2, 1)
    r2 = (yy[:, None] ** 2 + xx[None, :] ** 2) / 2.0
    image = np.clip((1.0 + contrast * field) * (1.0 - vignetting * r2), 0.2, None)
    crop = image[pad_px : pad_px + shape[0], pad_px : pad_px + shape[1]]
    return image / crop.mean()
