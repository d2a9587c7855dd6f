"""A synthetic calcium-imaging experiment with known ground truth.

The physics is a set of small pure functions (arrays in, arrays out, seeded with
``np.random.default_rng``); :func:`simulate_session` puts them together into a
:class:`DemoSession` (all the small time series and the geometry), whose pixels
:func:`render_frames` computes on demand, frame by frame, so a full-size session
(1500 x 512 x 688 uint16, about 1 GB) is streamed to disk and never held whole.
:func:`plan_experiment` simulates the four sessions of the demo experiment and
:func:`write_demo_experiment`, the only function that writes files, streams them to
disk in the SPEC §1 layout with their ground truth (``truth.npz``, see ``TRUTH_FIELDS``).

Model of one frame ``t`` (electrons per pixel before the camera)::

    scene_t  = neuropil * (1 + neuropil_dff[t])
               + sum_i brightness[i] * footprint_i * (1 + dff[i, t])
    F_t      = shift(scene_t, shifts[t]) * bleach[t] + drift[t]
    counts_t = offset + gain * Poisson(F_t) + Normal(0, read_noise)   -> uint16

Conventions
-----------
- Arrays are ``(time, y, x)``; pixel ``(row, col)`` has its centre at
  ``(row, col)`` in numpy index coordinates and at ``(x, y) = (col + 0.5, row + 0.5)``
  in Fiji/ImageJ coordinates (ROI vertices, as roifile returns them, are ``(x, y)``).
- Frame ``t`` integrates light over ``[t * dt, (t + 1) * dt)`` and is stamped
  ``time_s[t] = t * dt``; spike times share that clock.
- ``shifts[t] = (dy, dx)`` moves the image content by ``+dy`` rows and ``+dx``
  columns: ``frame_t(y, x) = scene_t(y - dy, x - dx)``. Registering frame ``t``
  to the unshifted reference therefore means shifting it by ``(-dy, -dx)``.
- Every random component has its own stream ``default_rng([seed, stream])`` and
  the camera noise of frame ``t`` uses ``default_rng([seed, stream, t])``, so a
  frame does not depend on how the movie is cut into chunks.

Examples
--------
>>> from calim_helpers import demo
>>> s = demo.simulate_session(40, (32, 40), 2, pixel_size_um=1.5, seed=1)
>>> movie = demo.render_frames(s, 0, 40)
>>> movie.shape, movie.dtype
((40, 32, 40), dtype('uint16'))
>>> chunked = np.concatenate(list(demo.iter_frames(s, chunk_frames=7)))
>>> bool((chunked == movie).all())
True
>>> len(s.roi_polygons) == s.n_neurons
True

Writing the small experiment (4 sessions of 600 x 96 x 128, a few seconds)::

    exp_dir = demo.write_demo_experiment("out")  # out/DEMO and out/DEMO_truth
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.special import expit

__all__ = [
    "SESSION_NAMES",
    "TRUTH_FIELDS",
    "DemoSession",
    "PlannedSession",
    "Somata",
    "Spikes",
    "bleach_curve",
    "calcium_kernel",
    "dff_traces",
    "drift_curve",
    "expert_rois",
    "imagej_rois",
    "iter_frames",
    "kernel_peak_time",
    "motion_shifts",
    "neuropil_image",
    "plan_experiment",
    "render_frames",
    "session_truth",
    "simulate_session",
    "soma_footprints",
    "spike_trains",
    "write_demo_experiment",
]

# Independent random streams, one per component: default_rng([seed, stream]).
_STREAM_SOMATA = 1
_STREAM_NEUROPIL = 2
_STREAM_SPIKES = 3
_STREAM_DRIFT = 4
_STREAM_MOTION = 5
_STREAM_ROIS = 6
_STREAM_BRIGHTNESS = 7
_STREAM_CAMERA = 8

_N_HARMONICS = 3  # angular harmonics k = 2, 3, 4 of the soma outline
_ZERO_BELOW = 0.01  # footprint values below this fraction of the peak are set to 0


def _check_shape(frame_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(v) for v in frame_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"frame_shape must be two positive ints (y, x), got {frame_shape!r}")
    return shape  # type: ignore[return-value]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_range(name: str, value: Sequence[float], *, low: float = 0.0) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi:
        raise ValueError(f"{name} must be (low, high) with {low} <= low <= high, got {value!r}")
    return lo, hi


# --------------------------------------------------------------------------- somata


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
    return Somata(shape, centers, semi_axes, angles, harmonics, patches, origins)


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


# --------------------------------------------------------------------------- activity


class Spikes(NamedTuple):
    """Spike trains of all neurons, one row per spike, sorted by time.

    Attributes
    ----------
    times_s : ndarray, shape (k,), float64
        Spike times, seconds.
    neuron : ndarray, shape (k,), int64
        Neuron index of each spike.
    amplitude : ndarray, shape (k,), float64
        Peak ΔF/F of the transient each spike adds.
    in_burst : ndarray, shape (k,), bool
        Whether the spike belongs to a network burst.
    burst_times_s : ndarray, shape (m,), float64
        Onsets of the synchronous network bursts, seconds.
    """

    times_s: np.ndarray
    neuron: np.ndarray
    amplitude: np.ndarray
    in_burst: np.ndarray
    burst_times_s: np.ndarray


def spike_trains(
    n_neurons: int,
    duration_s: float,
    /,
    *,
    rate_hz: tuple[float, float] = (0.05, 0.3),
    burst_rate_hz: float = 0.05,
    burst_regularity: float = 4.0,
    participation: tuple[float, float] = (0.4, 0.9),
    spikes_per_burst: float = 2.5,
    burst_spread_s: float = 0.1,
    dff_per_spike: float = 0.25,
    neuron_cv: float = 0.3,
    spike_cv: float = 0.2,
    seed: int = 0,
) -> Spikes:
    """Poisson spiking plus synchronous network bursts.

    Each neuron fires as a homogeneous Poisson process at its own rate, drawn
    log-uniformly from ``rate_hz``. Network bursts occur with gamma-distributed
    intervals (shape ``burst_regularity``, mean ``1 / burst_rate_hz``); in each
    burst every neuron joins with its own probability (uniform in
    ``participation``) and fires ``1 + Poisson(spikes_per_burst - 1)`` spikes
    delayed by exponential jitter of mean ``burst_spread_s``.

    Parameters
    ----------
    n_neurons : int
        Number of neurons, >= 0.
    duration_s : float
        Session length, seconds.
    rate_hz : tuple of float, optional
        Range of the independent firing rates, Hz. Default is (0.05, 0.3).
    burst_rate_hz : float, optional
        Mean rate of network bursts, Hz; 0 disables them. Default is 0.05.
    burst_regularity : float, optional
        Gamma shape of the inter-burst intervals (1 = Poisson). Default is 4.0.
    participation : tuple of float, optional
        Range of each neuron's probability of joining a burst. Default is (0.4, 0.9).
    spikes_per_burst : float, optional
        Mean number of spikes of a neuron in a burst it joins, >= 1. Default is 2.5.
    burst_spread_s : float, optional
        Mean delay of a burst spike after the burst onset, seconds. Default is 0.1.
    dff_per_spike : float, optional
        Median peak ΔF/F of a single-spike transient. Default is 0.25.
    neuron_cv : float, optional
        Log-normal spread of the per-neuron amplitude. Default is 0.3.
    spike_cv : float, optional
        Log-normal spread of the per-spike amplitude. Default is 0.2.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    Spikes
        All spikes, sorted by time (then neuron).
    """
    _check_positive("duration_s", duration_s)
    r_lo, r_hi = _check_range("rate_hz", rate_hz)
    p_lo, p_hi = _check_range("participation", participation)
    if p_hi > 1:
        raise ValueError(f"participation must lie in [0, 1], got {participation!r}")
    if burst_rate_hz < 0:
        raise ValueError(f"burst_rate_hz must be >= 0, got {burst_rate_hz!r}")
    if spikes_per_burst < 1:
        raise ValueError(f"spikes_per_burst must be >= 1, got {spikes_per_burst!r}")
    rng = np.random.default_rng([seed, _STREAM_SPIKES])
    if r_lo > 0:
        rates = np.exp(rng.uniform(np.log(r_lo), np.log(r_hi), n_neurons))
    else:
        rates = rng.uniform(r_lo, r_hi, n_neurons)
    gains = dff_per_spike * rng.lognormal(0.0, neuron_cv, n_neurons)
    p_join = rng.uniform(p_lo, p_hi, n_neurons)

    times, neuron, burst = [], [], []
    for i in range(n_neurons):
        k = rng.poisson(rates[i] * duration_s)
        times.append(rng.uniform(0.0, duration_s, k))
        neuron.append(np.full(k, i))
        burst.append(np.zeros(k, dtype=bool))

    onsets = []
    if burst_rate_hz > 0:
        mean_interval = 1.0 / burst_rate_hz
        t = rng.uniform(0.0, mean_interval)
        while t < duration_s:
            onsets.append(t)
            t += rng.gamma(burst_regularity, mean_interval / burst_regularity)
    for onset in onsets:
        joins = rng.random(n_neurons) < p_join
        counts = 1 + rng.poisson(spikes_per_burst - 1.0, n_neurons)
        for i in np.flatnonzero(joins):
            t_spk = onset + rng.exponential(burst_spread_s, counts[i])
            t_spk = t_spk[t_spk < duration_s]
            times.append(t_spk)
            neuron.append(np.full(t_spk.size, i))
            burst.append(np.ones(t_spk.size, dtype=bool))

    times_s = np.concatenate([*times, np.zeros(0)])
    neuron_idx = np.concatenate([*neuron, np.zeros(0, dtype=np.int64)]).astype(np.int64)
    in_burst = np.concatenate([*burst, np.zeros(0, dtype=bool)])
    amplitude = gains[neuron_idx] * rng.lognormal(0.0, spike_cv, times_s.size)
    order = np.lexsort((neuron_idx, times_s))
    return Spikes(
        times_s[order], neuron_idx[order], amplitude[order], in_burst[order], np.asarray(onsets)
    )


def kernel_peak_time(*, tau_rise_s: float = 0.05, tau_decay_s: float = 0.7) -> float:
    """Time of the peak of :func:`calcium_kernel` after the spike.

    Parameters
    ----------
    tau_rise_s : float, optional
        Rise time constant, seconds. Default is 0.05.
    tau_decay_s : float, optional
        Decay time constant, seconds, > ``tau_rise_s``. Default is 0.7.

    Returns
    -------
    float
        ``tau_r * tau_d / (tau_d - tau_r) * ln(tau_d / tau_r)``, seconds.
    """
    _check_positive("tau_rise_s", tau_rise_s)
    if not tau_decay_s > tau_rise_s:
        raise ValueError(f"tau_decay_s must be > tau_rise_s, got {tau_decay_s!r}")
    return (
        tau_rise_s * tau_decay_s / (tau_decay_s - tau_rise_s) * math.log(tau_decay_s / tau_rise_s)
    )


def calcium_kernel(
    t_s: np.ndarray, /, *, tau_rise_s: float = 0.05, tau_decay_s: float = 0.7
) -> np.ndarray:
    """GCaMP-like transient of one spike: a difference of two exponentials.

    Parameters
    ----------
    t_s : ndarray
        Time since the spike, seconds.
    tau_rise_s : float, optional
        Rise time constant, seconds. Default is 0.05.
    tau_decay_s : float, optional
        Decay time constant, seconds. Default is 0.7.

    Returns
    -------
    ndarray
        ``(exp(-t / tau_d) - exp(-t / tau_r)) / norm`` for ``t >= 0`` and 0
        before the spike, scaled to a peak of 1 at :func:`kernel_peak_time`.
    """
    t = np.asarray(t_s, dtype=float)
    t_peak = kernel_peak_time(tau_rise_s=tau_rise_s, tau_decay_s=tau_decay_s)
    norm = math.exp(-t_peak / tau_decay_s) - math.exp(-t_peak / tau_rise_s)
    tc = np.clip(t, 0.0, None)
    k = (np.exp(-tc / tau_decay_s) - np.exp(-tc / tau_rise_s)) / norm
    return np.where(t >= 0, k, 0.0)


def dff_traces(
    times_s: np.ndarray,
    neuron: np.ndarray,
    amplitude: np.ndarray,
    /,
    *,
    n_neurons: int,
    n_frames: int,
    frame_interval_s: float = 0.1,
    tau_rise_s: float = 0.05,
    tau_decay_s: float = 0.7,
) -> np.ndarray:
    """Noise-free ΔF/F of each neuron, averaged over each frame's exposure.

    Frame ``t`` integrates ``[t * dt, (t + 1) * dt)``; the value is the exact
    mean of ``sum_spikes amplitude * calcium_kernel(time - spike_time)`` over that
    window (so a transient's frame peak is slightly below its amplitude).

    Parameters
    ----------
    times_s : ndarray, shape (k,)
        Spike times, seconds.
    neuron : ndarray, shape (k,), int
        Neuron index of each spike, in ``[0, n_neurons)``.
    amplitude : ndarray, shape (k,)
        Peak ΔF/F of each spike's transient.
    n_neurons : int
        Number of neurons.
    n_frames : int
        Number of frames.
    frame_interval_s : float, optional
        Frame interval ``dt``, seconds. Default is 0.1.
    tau_rise_s : float, optional
        Rise time constant, seconds. Default is 0.05.
    tau_decay_s : float, optional
        Decay time constant, seconds. Default is 0.7.

    Returns
    -------
    ndarray, shape (n_neurons, n_frames), float64
        ΔF/F, >= 0.
    """
    _check_positive("frame_interval_s", frame_interval_s)
    times_s = np.asarray(times_s, dtype=float)
    neuron = np.asarray(neuron, dtype=np.int64)
    amplitude = np.asarray(amplitude, dtype=float)
    if not times_s.shape == neuron.shape == amplitude.shape or times_s.ndim != 1:
        raise ValueError("times_s, neuron and amplitude must be 1-D arrays of the same length")
    if neuron.size and (neuron.min() < 0 or neuron.max() >= n_neurons):
        raise ValueError(f"neuron indices must lie in [0, n_neurons={n_neurons})")
    t_peak = kernel_peak_time(tau_rise_s=tau_rise_s, tau_decay_s=tau_decay_s)
    norm = math.exp(-t_peak / tau_decay_s) - math.exp(-t_peak / tau_rise_s)
    dt = float(frame_interval_s)
    dff = np.zeros((n_neurons, n_frames))
    if times_s.size == 0 or n_frames == 0:
        return dff
    width = int(math.ceil(tau_decay_s * math.log(1e7) / dt)) + 2  # kernel < 1e-7 after
    first = np.floor(times_s / dt).astype(np.int64)
    frames = first[:, None] + np.arange(width)[None, :]
    start = np.maximum(frames * dt, times_s[:, None]) - times_s[:, None]  # >= 0
    stop = np.maximum((frames + 1) * dt - times_s[:, None], start)
    area = np.zeros_like(start)
    for tau, sign in ((tau_decay_s, 1.0), (tau_rise_s, -1.0)):
        area += sign * tau * (np.exp(-start / tau) - np.exp(-stop / tau))
    values = amplitude[:, None] * area / (dt * norm)
    keep = (frames >= 0) & (frames < n_frames)
    rows = np.broadcast_to(neuron[:, None], frames.shape)
    np.add.at(dff, (rows[keep], frames[keep]), values[keep])
    return dff


# --------------------------------------------------------------------------- slow artefacts


def bleach_curve(
    n_frames: int, /, *, fraction: float = 0.3, fast_weight: float = 0.3
) -> np.ndarray:
    """Multiplicative photobleaching: a monotone two-exponential decay.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    fraction : float, optional
        Fluorescence lost by the last frame, in [0, 1). Default is 0.3.
    fast_weight : float, optional
        Share of the loss in the fast component (time constant a tenth of the
        session; the slow one is the session length). Default is 0.3.

    Returns
    -------
    ndarray, shape (n_frames,), float64
        Relative brightness, 1 at frame 0, ``1 - fraction`` at the last frame,
        non-increasing.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction!r}")
    if not 0 <= fast_weight <= 1:
        raise ValueError(f"fast_weight must lie in [0, 1], got {fast_weight!r}")
    if n_frames < 2:
        return np.ones(n_frames)
    u = np.arange(n_frames) / (n_frames - 1)
    loss = np.zeros(n_frames)
    for weight, tau in ((fast_weight, 0.1), (1.0 - fast_weight, 1.0)):
        loss += weight * (1.0 - np.exp(-u / tau)) / (1.0 - math.exp(-1.0 / tau))
    return 1.0 - fraction * loss


def drift_curve(n_frames: int, /, *, amplitude: float = 8.0, seed: int = 0) -> np.ndarray:
    """Slow additive drift (stray light, camera), identical for all pixels.

    Three slow cosines (half-periods of the session, half of it and a third of
    it) with random weights and phases, scaled to a largest magnitude of
    ``amplitude``.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    amplitude : float, optional
        Largest absolute drift, electrons per pixel. Default is 8.0.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    ndarray, shape (n_frames,), float64
        Drift, electrons per pixel.
    """
    if amplitude < 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude!r}")
    rng = np.random.default_rng([seed, _STREAM_DRIFT])
    u = np.arange(n_frames) / max(n_frames - 1, 1)
    curve = np.zeros(n_frames)
    for k in (1, 2, 3):
        curve += rng.normal(0.0, 1.0 / k) * np.cos(np.pi * k * u + rng.uniform(0, 2 * np.pi))
    peak = np.abs(curve).max(initial=0.0)
    return amplitude * curve / peak if peak > 0 else curve


def motion_shifts(
    n_frames: int,
    /,
    *,
    amplitude_px: float = 3.0,
    wander_px: float = 1.5,
    jitter_px: float = 0.15,
    jump_px: float = 1.5,
    seed: int = 0,
) -> np.ndarray:
    """Rigid sub-pixel motion: a slow random walk, frame jitter and one jump.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    amplitude_px : float, optional
        Bound on ``|dy|`` and ``|dx|``, pixels; the sum is clipped to it. Default is 3.0.
    wander_px : float, optional
        Largest excursion of the slow random walk (which starts at 0), pixels.
        Default is 1.5.
    jitter_px : float, optional
        Standard deviation of the independent per-frame jitter, pixels. Default is 0.15.
    jump_px : float, optional
        Size of one sudden step (random direction, at a random frame between
        30% and 80% of the session), pixels; 0 disables it. Default is 1.5.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    ndarray, shape (n_frames, 2), float64
        Applied shifts ``(dy, dx)`` in pixels: the content of frame ``t`` is the
        reference scene moved by ``+dy`` rows and ``+dx`` columns.
    """
    if amplitude_px < 0 or wander_px < 0 or jitter_px < 0 or jump_px < 0:
        raise ValueError("amplitude_px, wander_px, jitter_px and jump_px must be >= 0")
    rng = np.random.default_rng([seed, _STREAM_MOTION])
    walk = np.cumsum(rng.standard_normal((n_frames, 2)), axis=0)
    walk -= walk[:1]
    peak = np.abs(walk).max(initial=0.0)
    if peak > 0:
        walk *= wander_px / peak
    jitter = rng.normal(0.0, jitter_px, (n_frames, 2)) if jitter_px > 0 else 0.0
    step = np.zeros((n_frames, 2))
    if jump_px > 0 and n_frames > 1:
        at = int(
            rng.integers(int(0.3 * n_frames), max(int(0.8 * n_frames), int(0.3 * n_frames) + 1))
        )
        direction = rng.uniform(0, 2 * np.pi)
        step[at:] = jump_px * np.array([np.sin(direction), np.cos(direction)])
    return np.clip(walk + jitter + step, -amplitude_px, amplitude_px)


# --------------------------------------------------------------------------- expert ROIs


def expert_rois(
    somata: Somata,
    /,
    *,
    n_vertices: tuple[int, int] = (12, 24),
    jitter_px: float = 0.6,
    dilation_px: tuple[float, float] = (0.0, 2.0),
    subpixel_fraction: float = 0.5,
    naming: str = "fiji",
    outside: bool = False,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """Polygons around the somata "as an expert would draw them", slightly imperfect.

    One polygon per soma, in random order: ``n_vertices`` points around the
    outline, each at an angle and radius jittered by about ``jitter_px``, the
    whole outline dilated (or eroded when negative) by a random amount from
    ``dilation_px``. A fraction of the polygons keeps sub-pixel vertices; the
    others are rounded to integers, as Fiji's polygon tool gives them.

    Parameters
    ----------
    somata : Somata
        The somata, from :func:`soma_footprints`.
    n_vertices : tuple of int, optional
        Inclusive range of the number of vertices. Default is (12, 24).
    jitter_px : float, optional
        Standard deviation of each vertex's radial error, pixels. Default is 0.6.
    dilation_px : tuple of float, optional
        Range of the per-ROI outward offset of the outline, pixels. Default is (0.0, 2.0).
    subpixel_fraction : float, optional
        Probability that a polygon keeps sub-pixel vertices. Default is 0.5.
    naming : {"fiji", "cell"}, optional
        ``"fiji"``: Fiji's ROI Manager default ``"yyyy-xxxx"`` (centre of the
        bounding box; repeated names get ``-1``, ``-2`` ...); ``"cell"``:
        ``"cell_01"``, ``"cell_02"`` ... in ROI order. Default is "fiji".
    outside : bool, optional
        Push the part of the polygon of the soma nearest to the border out of
        the frame (a ROI partly outside the frame). Default is False.
    seed : int, optional
        Seed of the random generator. Default is 0.

    Returns
    -------
    polygons : list of ndarray, each shape (k, 2), float64
        Vertices ``(x, y)`` in Fiji coordinates (pixel ``(row, col)`` has its
        centre at ``(col + 0.5, row + 0.5)``), counter-clockwise on screen;
        integer-valued for the non-sub-pixel polygons.
    names : list of str
        ROI names, in ROI order.
    roi_neuron : ndarray, shape (n,), int64
        ``roi_neuron[k]`` is the soma index of ROI ``k`` (0-based position in the
        list, so the pipeline's "ROI k + 1").
    """
    v_lo, v_hi = (int(v) for v in n_vertices)
    if not 3 <= v_lo <= v_hi:
        raise ValueError(
            f"n_vertices must be (low, high) with 3 <= low <= high, got {n_vertices!r}"
        )
    if naming not in ("fiji", "cell"):
        raise ValueError(f"naming must be 'fiji' or 'cell', got {naming!r}")
    d_lo, d_hi = (float(v) for v in dilation_px)
    if d_lo > d_hi:
        raise ValueError(f"dilation_px must be (low, high) with low <= high, got {dilation_px!r}")
    rng = np.random.default_rng([seed, _STREAM_ROIS])
    n = somata.n_neurons
    roi_neuron = rng.permutation(n).astype(np.int64)
    height, width = somata.frame_shape

    pushed = -1
    if outside and n:
        # the soma whose outline comes closest to a border
        gaps = [
            min(c[0], c[1], height - 1 - c[0], width - 1 - c[1]) - r.max()
            for c, r in zip(
                somata.centers,
                (somata.radius(i, np.linspace(0, 2 * np.pi, 90)) for i in range(n)),
                strict=True,
            )
        ]
        pushed = int(np.argmin(gaps))

    polygons = []
    for i in roi_neuron:
        k = int(rng.integers(v_lo, v_hi + 1))
        theta = np.sort(
            2 * np.pi * (np.arange(k) + rng.uniform(-0.3, 0.3, k)) / k + rng.uniform(0, 2 * np.pi)
        )
        r = somata.radius(i, theta) + rng.uniform(d_lo, d_hi) + rng.normal(0, jitter_px, k)
        r = np.maximum(r, 1.0)
        x = somata.centers[i, 1] + 0.5 + r * np.cos(theta)
        y = somata.centers[i, 0] + 0.5 + r * np.sin(theta)
        if i == pushed:
            x, y = _push_out(x, y, width, height)
        xy = np.stack([x, y], axis=1)
        if rng.random() >= subpixel_fraction:
            xy = np.round(xy)
        polygons.append(xy)

    names = _roi_names(polygons, naming)
    return polygons, names, roi_neuron


def _push_out(x: np.ndarray, y: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    """Move the vertices near the closest frame border 1.5 px beyond it."""
    gaps = {"left": x.min(), "top": y.min(), "right": width - x.max(), "bottom": height - y.max()}
    side = min(gaps, key=gaps.get)
    x, y = x.copy(), y.copy()
    if side == "left":
        near = x < x.min() + 2.5
        x[near] = -1.5
    elif side == "right":
        near = x > x.max() - 2.5
        x[near] = width + 1.5
    elif side == "top":
        near = y < y.min() + 2.5
        y[near] = -1.5
    else:
        near = y > y.max() - 2.5
        y[near] = height + 1.5
    return x, y


def _roi_names(polygons: list[np.ndarray], naming: str) -> list[str]:
    if naming == "cell":
        return [f"cell_{k + 1:02d}" for k in range(len(polygons))]
    names: list[str] = []
    seen: dict[str, int] = {}
    for xy in polygons:
        lo = np.floor(xy.min(axis=0)).astype(int)
        hi = np.floor(xy.max(axis=0)).astype(int) + 1
        xc, yc = (lo + (hi - lo) // 2).tolist()
        name = f"{max(yc, 0):04d}-{max(xc, 0):04d}"
        if name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def imagej_rois(
    polygons: Sequence[np.ndarray], names: Sequence[str], /, *, roi_type: str = "polygon"
) -> list:
    """Fiji ROIs from polygons.

    Parameters
    ----------
    polygons : sequence of ndarray, each shape (k, 2)
        Vertices ``(x, y)`` in Fiji coordinates; integer-valued arrays give
        integer ROIs, others sub-pixel ROIs.
    names : sequence of str
        ROI names, one per polygon.
    roi_type : {"polygon", "freehand"}, optional
        Fiji ROI type. Default is "polygon".

    Returns
    -------
    list of roifile.ImagejRoi
        Ready for ``roifile.roiwrite(path, rois, mode="w")``.
    """
    import roifile

    kinds = {"polygon": roifile.ROI_TYPE.POLYGON, "freehand": roifile.ROI_TYPE.FREEHAND}
    if roi_type not in kinds:
        raise ValueError(f"roi_type must be 'polygon' or 'freehand', got {roi_type!r}")
    if len(polygons) != len(names):
        raise ValueError(f"got {len(polygons)} polygons but {len(names)} names")
    rois = []
    for xy, name in zip(polygons, names, strict=True):
        xy = np.asarray(xy, dtype=float)
        points = xy.astype(np.int32) if np.array_equal(xy, np.round(xy)) else xy
        roi = roifile.ImagejRoi.frompoints(points, name=name)
        roi.roitype = kinds[roi_type]
        rois.append(roi)
    return rois


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, eq=False)
class DemoSession:
    """Everything that defines a synthetic session except its pixels.

    Build it with :func:`simulate_session`; get pixels with :func:`render_frames`
    or :func:`iter_frames`, the ground truth with :func:`session_truth`. Per-pixel
    quantities are in electrons (photo-electrons per pixel per frame).

    Attributes
    ----------
    n_frames, frame_shape, frame_interval_s, pixel_size_um, seed
        Size, frame interval (s), pixel size (µm) and seed of the session.
    somata : Somata
        Soma footprints (peak 1) and geometry.
    brightness : ndarray, shape (n,)
        Resting fluorescence of each soma where its footprint is 1, electrons.
    spikes : Spikes
        Spike trains.
    dff : ndarray, shape (n, time)
        Noise-free ΔF/F of each soma, frame-averaged.
    neuropil : ndarray, shape (y + 2 pad_px, x + 2 pad_px)
        Resting neuropil, electrons per pixel (the central crop is the frame).
    neuropil_dff : ndarray, shape (time,)
        Relative change of the neuropil (follows the mean activity).
    bleach : ndarray, shape (time,)
        Multiplicative photobleaching, 1 at frame 0.
    drift : ndarray, shape (time,)
        Additive drift, electrons per pixel.
    shifts : ndarray, shape (time, 2)
        Applied rigid shifts ``(dy, dx)``, pixels (zeros without motion).
    pad_px : int
        Border around the frame that motion can bring into view.
    gain, read_noise, offset
        Camera: counts per electron, read noise (counts RMS), offset (counts).
    tau_rise_s, tau_decay_s
        Calcium-kernel time constants, seconds.
    roi_polygons, roi_names, roi_neuron, roi_type
        Expert ROIs (see :func:`expert_rois`) and their Fiji type.
    """

    n_frames: int
    frame_shape: tuple[int, int]
    frame_interval_s: float
    pixel_size_um: float
    seed: int
    somata: Somata
    brightness: np.ndarray
    spikes: Spikes
    dff: np.ndarray
    neuropil: np.ndarray
    neuropil_dff: np.ndarray
    bleach: np.ndarray
    drift: np.ndarray
    shifts: np.ndarray
    pad_px: int
    gain: float
    read_noise: float
    offset: float
    tau_rise_s: float
    tau_decay_s: float
    roi_polygons: list[np.ndarray]
    roi_names: list[str]
    roi_neuron: np.ndarray
    roi_type: str

    @property
    def n_neurons(self) -> int:
        """Number of neurons."""
        return self.somata.n_neurons

    @property
    def time_s(self) -> np.ndarray:
        """Start time of each frame's exposure, seconds, shape (time,)."""
        return np.arange(self.n_frames) * self.frame_interval_s


def simulate_session(
    n_frames: int,
    frame_shape: Sequence[int],
    n_neurons: int,
    /,
    *,
    frame_interval_s: float = 0.1,
    pixel_size_um: float = 0.65,
    diameter_um: tuple[float, float] = (10.0, 15.0),
    brightness: float = 200.0,
    brightness_cv: float = 0.3,
    neuropil_level: float = 60.0,
    neuropil_coupling: float = 0.15,
    rate_hz: tuple[float, float] = (0.05, 0.3),
    burst_rate_hz: float = 0.05,
    dff_per_spike: float = 0.25,
    tau_rise_s: float = 0.05,
    tau_decay_s: float = 0.7,
    bleach_fraction: float = 0.3,
    drift_amplitude: float = 8.0,
    motion: bool = False,
    motion_amplitude_px: float = 3.0,
    gain: float = 2.0,
    read_noise: float = 2.0,
    offset: float = 100.0,
    roi_naming: str = "fiji",
    roi_type: str = "polygon",
    roi_outside: bool = False,
    seed: int = 0,
) -> DemoSession:
    """Draw everything of a synthetic session but its pixels.

    Parameters
    ----------
    n_frames : int
        Number of frames, >= 1.
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    n_neurons : int
        Number of neurons.
    frame_interval_s : float, optional
        Frame interval, seconds. Default is 0.1.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    diameter_um : tuple of float, optional
        Range of soma diameters, micrometres. Default is (10.0, 15.0).
    brightness : float, optional
        Median resting soma fluorescence at footprint 1, electrons. Default is 200.0.
    brightness_cv : float, optional
        Log-normal spread of the soma brightness. Default is 0.3.
    neuropil_level : float, optional
        Mean resting neuropil, electrons per pixel. Default is 60.0.
    neuropil_coupling : float, optional
        Neuropil ΔF/F per unit of the neurons' mean ΔF/F. Default is 0.15.
    rate_hz : tuple of float, optional
        Range of the independent firing rates, Hz. Default is (0.05, 0.3).
    burst_rate_hz : float, optional
        Mean rate of network bursts, Hz. Default is 0.05.
    dff_per_spike : float, optional
        Median single-spike peak ΔF/F. Default is 0.25.
    tau_rise_s : float, optional
        Calcium rise time constant, seconds. Default is 0.05.
    tau_decay_s : float, optional
        Calcium decay time constant, seconds. Default is 0.7.
    bleach_fraction : float, optional
        Fluorescence lost to bleaching by the last frame. Default is 0.3.
    drift_amplitude : float, optional
        Largest additive drift, electrons per pixel. Default is 8.0.
    motion : bool, optional
        Apply rigid sub-pixel motion (cubic-spline shifts). Default is False.
    motion_amplitude_px : float, optional
        Bound on each shift component, pixels. Default is 3.0.
    gain : float, optional
        Camera counts per electron. Default is 2.0.
    read_noise : float, optional
        Camera read noise, counts RMS. Default is 2.0.
    offset : float, optional
        Camera offset, counts. Default is 100.0.
    roi_naming : {"fiji", "cell"}, optional
        ROI naming style, see :func:`expert_rois`. Default is "fiji".
    roi_type : {"polygon", "freehand"}, optional
        Fiji type of the ROIs. Default is "polygon".
    roi_outside : bool, optional
        Make one ROI reach out of the frame. Default is False.
    seed : int, optional
        Seed; each component uses its own stream of it. Default is 0.

    Returns
    -------
    DemoSession
        The session.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames!r}")
    shape = _check_shape(frame_shape)
    _check_positive("frame_interval_s", frame_interval_s)
    _check_positive("gain", gain)
    if read_noise < 0:
        raise ValueError(f"read_noise must be >= 0, got {read_noise!r}")
    if roi_type not in ("polygon", "freehand"):
        raise ValueError(f"roi_type must be 'polygon' or 'freehand', got {roi_type!r}")
    somata = soma_footprints(
        shape, n_neurons, pixel_size_um=pixel_size_um, diameter_um=diameter_um, seed=seed
    )
    rng = np.random.default_rng([seed, _STREAM_BRIGHTNESS])
    cell_brightness = brightness * rng.lognormal(0.0, brightness_cv, n_neurons)
    spikes = spike_trains(
        n_neurons,
        n_frames * frame_interval_s,
        rate_hz=rate_hz,
        burst_rate_hz=burst_rate_hz,
        dff_per_spike=dff_per_spike,
        seed=seed,
    )
    dff = dff_traces(
        spikes.times_s,
        spikes.neuron,
        spikes.amplitude,
        n_neurons=n_neurons,
        n_frames=n_frames,
        frame_interval_s=frame_interval_s,
        tau_rise_s=tau_rise_s,
        tau_decay_s=tau_decay_s,
    )
    if motion:
        shifts = motion_shifts(
            n_frames,
            amplitude_px=motion_amplitude_px,
            wander_px=0.5 * motion_amplitude_px,
            jump_px=0.5 * motion_amplitude_px,
            seed=seed,
        )
        pad = int(math.ceil(motion_amplitude_px)) + 4
    else:
        shifts, pad = np.zeros((n_frames, 2)), 0
    neuropil = neuropil_level * neuropil_image(
        shape, pixel_size_um=pixel_size_um, pad_px=pad, seed=seed
    )
    neuropil_dff = neuropil_coupling * (dff.mean(axis=0) if n_neurons else np.zeros(n_frames))
    polygons, names, roi_neuron = expert_rois(
        somata, naming=roi_naming, outside=roi_outside, seed=seed
    )
    return DemoSession(
        n_frames=int(n_frames),
        frame_shape=shape,
        frame_interval_s=float(frame_interval_s),
        pixel_size_um=float(pixel_size_um),
        seed=int(seed),
        somata=somata,
        brightness=cell_brightness,
        spikes=spikes,
        dff=dff,
        neuropil=neuropil,
        neuropil_dff=neuropil_dff,
        bleach=bleach_curve(n_frames, fraction=bleach_fraction),
        drift=drift_curve(n_frames, amplitude=drift_amplitude, seed=seed),
        shifts=shifts,
        pad_px=pad,
        gain=float(gain),
        read_noise=float(read_noise),
        offset=float(offset),
        tau_rise_s=float(tau_rise_s),
        tau_decay_s=float(tau_decay_s),
        roi_polygons=polygons,
        roi_names=names,
        roi_neuron=roi_neuron,
        roi_type=roi_type,
    )


def _bspline3(u: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel."""
    a = np.abs(u)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _shifted_crop(
    image: np.ndarray, shift: Sequence[float], pad: int, shape: tuple[int, int]
) -> np.ndarray:
    """``ndimage.shift(image, shift, order=3)[pad:pad + h, pad:pad + w]``, computed fast.

    Cubic-spline interpolation of a pure translation is separable with the same
    four weights at every pixel, so after the spline prefilter it is four shifted
    slices per axis. Needs ``pad >= |shift| + 2``.
    """
    coef = ndimage.spline_filter(image, order=3, mode="mirror")
    for axis, d in enumerate(shift):
        n = math.floor(-d)  # output i samples the input at i - d = i + n + u
        u = -d - n
        weights = _bspline3(u - np.arange(-1, 3))
        start = pad + n - 1
        if start < 0 or start + 3 + shape[axis] > coef.shape[axis]:
            raise ValueError(f"shift {d!r} too large for pad_px={pad}")
        index = [slice(None)] * 2
        total = 0.0
        for k, wk in enumerate(weights):
            index[axis] = slice(start + k, start + k + shape[axis])
            total = total + wk * coef[tuple(index)]
        coef = total
    return coef


def _render_frame(session: DemoSession, t: int) -> np.ndarray:
    """Camera counts of frame ``t``; depends on nothing but the session and ``t``."""
    pad = session.pad_px
    h, w = session.frame_shape
    scene = session.neuropil * (1.0 + session.neuropil_dff[t])
    somata = session.somata
    for i in range(somata.n_neurons):
        weight = session.brightness[i] * (1.0 + session.dff[i, t])
        _add_patch(scene, somata.patches[i], somata.origins[i] + pad, weight)
    dy, dx = session.shifts[t]
    if dy != 0 or dx != 0:
        scene = _shifted_crop(scene, (dy, dx), pad, (h, w))
    else:
        scene = scene[pad : pad + h, pad : pad + w]
    electrons = scene * session.bleach[t] + session.drift[t]
    rng = np.random.default_rng([session.seed, _STREAM_CAMERA, t])
    counts = session.gain * rng.poisson(np.clip(electrons, 0.0, None))
    counts = counts + session.offset + session.read_noise * rng.standard_normal((h, w))
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def render_frames(session: DemoSession, start: int, stop: int, /) -> np.ndarray:
    """Camera frames ``start`` to ``stop`` (exclusive) of a session.

    Every frame is computed on its own (its noise comes from its own seeded
    stream), so the result does not depend on how the movie is chunked.

    Parameters
    ----------
    session : DemoSession
        The session, from :func:`simulate_session`.
    start, stop : int
        Frame range, ``0 <= start <= stop <= session.n_frames``.

    Returns
    -------
    ndarray, shape (stop - start, y, x), uint16
        Camera counts.
    """
    if not 0 <= start <= stop <= session.n_frames:
        raise ValueError(
            f"need 0 <= start <= stop <= n_frames={session.n_frames}, got {start!r}, {stop!r}"
        )
    out = np.empty((stop - start, *session.frame_shape), dtype=np.uint16)
    for k, t in enumerate(range(start, stop)):
        out[k] = _render_frame(session, t)
    return out


def iter_frames(session: DemoSession, /, *, chunk_frames: int = 50) -> Iterator[np.ndarray]:
    """Yield a session's frames in time order, ``chunk_frames`` at a time.

    Parameters
    ----------
    session : DemoSession
        The session.
    chunk_frames : int, optional
        Frames per block (the last block may be shorter). Default is 50.

    Yields
    ------
    ndarray, shape (<= chunk_frames, y, x), uint16
        Consecutive blocks of camera frames.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames!r}")
    for start in range(0, session.n_frames, chunk_frames):
        yield render_frames(session, start, min(start + chunk_frames, session.n_frames))


def session_truth(session: DemoSession, /) -> dict[str, np.ndarray]:
    """Ground truth of a session as plain arrays (the fields of ``truth.npz``).

    Parameters
    ----------
    session : DemoSession
        The session.

    Returns
    -------
    dict of str to ndarray
        See ``TRUTH_FIELDS`` for the list, shapes and units.
    """
    pad = session.pad_px
    h, w = session.frame_shape
    neuropil = session.neuropil[pad : pad + h, pad : pad + w]
    lengths = [len(p) for p in session.roi_polygons]
    spikes = session.spikes
    return {
        "footprints": session.somata.dense(),
        "centers_yx": session.somata.centers,
        "semi_axes_px": session.somata.semi_axes,
        "angles_rad": session.somata.angles,
        "brightness": session.brightness,
        "roi_neuron": session.roi_neuron,
        "roi_names": np.asarray(session.roi_names, dtype=str),
        "roi_vertices_xy": (np.concatenate(session.roi_polygons) if lengths else np.zeros((0, 2))),
        "roi_vertex_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "spike_times_s": spikes.times_s,
        "spike_neuron": spikes.neuron,
        "spike_amplitude": spikes.amplitude,
        "spike_in_burst": spikes.in_burst,
        "burst_times_s": spikes.burst_times_s,
        "time_s": session.time_s,
        "dff": session.dff.astype(np.float32),
        "neuropil": neuropil.astype(np.float32),
        "neuropil_mean": np.float64(neuropil.mean()),
        "neuropil_dff": session.neuropil_dff,
        "bleach": session.bleach,
        "drift": session.drift,
        "shifts": session.shifts,
        "pixel_size_um": np.float64(session.pixel_size_um),
        "frame_interval_s": np.float64(session.frame_interval_s),
        "seed": np.int64(session.seed),
        "gain": np.float64(session.gain),
        "read_noise": np.float64(session.read_noise),
        "offset": np.float64(session.offset),
        "tau_rise_s": np.float64(session.tau_rise_s),
        "tau_decay_s": np.float64(session.tau_decay_s),
    }


TRUTH_FIELDS = """\
truth.npz -- ground truth of one synthetic CALIM session (numpy .npz, no pickles).
n = neurons (= ROIs), T = frames, (y, x) = frame shape. Electrons = photo-electrons per
pixel per frame; camera counts = offset + gain * Poisson(electrons) + read noise.
Pixel (row, col) has its centre at numpy (row, col) and at Fiji (x, y) = (col + .5, row + .5).

footprints          (n, y, x) float32  soma footprints, peak 1, at the unshifted position
centers_yx          (n, 2)    float64  soma centres (row, col), pixels
semi_axes_px        (n, 2)    float64  ellipse semi-axes, pixels
angles_rad          (n,)      float64  ellipse orientation from +x towards +y, radians
brightness          (n,)      float64  resting soma fluorescence at footprint 1, electrons
roi_neuron          (n,)      int64    neuron index of the k-th ROI of the zip (ROI k+1)
roi_names           (n,)      str      Fiji name of the k-th ROI
roi_vertices_xy     (V, 2)    float64  ROI vertices (x, y), Fiji coordinates, all ROIs
roi_vertex_offsets  (n+1,)    int64    ROI k is roi_vertices_xy[off[k]:off[k+1]]
spike_times_s       (S,)      float64  spike times, seconds (frame t starts at t * dt)
spike_neuron        (S,)      int64    neuron of each spike
spike_amplitude     (S,)      float64  peak dF/F of each spike's transient
spike_in_burst      (S,)      bool     spike belongs to a network burst
burst_times_s       (B,)      float64  network-burst onsets, seconds
time_s              (T,)      float64  frame start times, seconds
dff                 (n, T)    float32  noise-free dF/F per neuron, averaged over each frame
neuropil            (y, x)    float32  resting neuropil, electrons (unshifted)
neuropil_mean       ()        float64  its mean over the frame, electrons
neuropil_dff        (T,)      float64  relative change of the neuropil over time
bleach              (T,)      float64  multiplicative bleaching, 1 at frame 0
drift               (T,)      float64  additive drift, electrons (all pixels)
shifts              (T, 2)    float64  applied rigid shift (dy, dx), pixels: frame_t(y, x) =
                                       scene_t(y - dy, x - dx); register with (-dy, -dx)
pixel_size_um, frame_interval_s, seed, gain, read_noise, offset, tau_rise_s, tau_decay_s
                    ()                 scalars (seed = the session's seed)

Model: scene_t = neuropil * (1 + neuropil_dff[t])
                 + sum_i brightness[i] * footprint_i * (1 + dff[i, t])
       electrons_t = shift(scene_t, shifts[t]) * bleach[t] + drift[t]
session.json beside truth.npz repeats the scalars and names the ROI file.
"""


# --------------------------------------------------------------------------- writing


class _Recipe(NamedTuple):
    date: str
    session: str
    n_small: int
    n_full: int
    motion: bool
    bleach_fraction: float
    roi_path: str
    roi_naming: str
    roi_outside: bool


# Two date folders x two sessions; the sessions differ in cell count, bleaching,
# motion, ROI naming, ROI file location (230405_2 uses Rois/Rois.zip) and one ROI
# partly outside the frame (230405_7).
_RECIPES = (
    _Recipe("04-04-23", "230404_5", 10, 60, False, 0.30, "ROIs/ROIs.zip", "fiji", False),
    _Recipe("04-04-23", "230404_9", 12, 75, True, 0.25, "ROIs/ROIs.zip", "fiji", False),
    _Recipe("05-04-23", "230405_2", 8, 45, False, 0.40, "Rois/Rois.zip", "cell", False),
    _Recipe("05-04-23", "230405_7", 11, 80, False, 0.20, "ROIs/ROIs.zip", "fiji", True),
)
SESSION_NAMES = tuple(r.session for r in _RECIPES)

_SMALL = {"n_frames": 600, "frame_shape": (96, 128)}
_FULL = {"n_frames": 1500, "frame_shape": (512, 688)}


class PlannedSession(NamedTuple):
    """One session of the demo experiment, before anything is written.

    Attributes
    ----------
    date : str
        Date folder, ``dd-mm-yy``.
    name : str
        Session folder, ``<yymmdd>_<n>``.
    roi_path : str
        ROI set relative to the session folder (``"ROIs/ROIs.zip"`` or ``"Rois/Rois.zip"``).
    session : DemoSession
        The simulated session.
    info : dict
        Scalars of the recipe (written to ``session.json``).
    """

    date: str
    name: str
    roi_path: str
    session: DemoSession
    info: dict


def _fitting_count(
    shape: tuple[int, int],
    count: int,
    pixel_size_um: float,
    diameter_um: tuple[float, float],
    seed: int,
) -> int:
    """Largest neuron count <= ``count`` whose somata can be placed in the frame."""
    for n in range(count, 0, -1):
        try:
            soma_footprints(
                shape, n, pixel_size_um=pixel_size_um, diameter_um=diameter_um, seed=seed
            )
        except ValueError:
            continue
        return n
    raise ValueError(
        f"frame_shape {shape} is too small for somata at pixel_size_um={pixel_size_um!r}"
    )


def plan_experiment(
    *,
    full_size: bool = False,
    seed: int = 0,
    sessions: Sequence[str] | None = None,
    n_frames: int | None = None,
    frame_shape: Sequence[int] | None = None,
    n_neurons: int | None = None,
    pixel_size_um: float = 0.65,
    frame_interval_s: float = 0.1,
) -> list[PlannedSession]:
    """Simulate (without pixels) the sessions of the demo experiment.

    Two date folders with two sessions each: 04-04-23/230404_5, 04-04-23/230404_9,
    05-04-23/230405_2 and 05-04-23/230405_7. They differ in neuron count (10, 12,
    8, 11 small; 60, 75, 45, 80 full size), bleaching (30, 25, 40, 20%), motion
    (only 230404_9 moves), ROI naming (230405_2 uses ``cell_01``..., the others
    Fiji's ``yyyy-xxxx``), ROI location (230405_2 has ``Rois/Rois.zip``) and
    230405_7 has a ROI reaching out of the frame.

    Parameters
    ----------
    full_size : bool, optional
        Lab size, 1500 frames of 512 x 688, instead of 600 frames of 96 x 128.
        Default is False.
    seed : int, optional
        Experiment seed; session ``k`` uses ``SeedSequence([seed, k])``. Default is 0.
    sessions : sequence of str, optional
        Only these sessions (names from ``SESSION_NAMES``). Default is None (all).
    n_frames : int, optional
        Override the number of frames. Default is None (from ``full_size``).
    frame_shape : tuple of int, optional
        Override ``(y, x)``. Default is None (from ``full_size``).
    n_neurons : int, optional
        Override every session's neuron count. Default is None (per session).
        Either way the count is lowered to what fits the frame, and in frames
        under 3 x 15 µm / ``pixel_size_um`` the somata are drawn smaller than
        10-15 µm (at most a third of the short side), so tiny test frames work.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    frame_interval_s : float, optional
        Frame interval, seconds. Default is 0.1.

    Returns
    -------
    list of PlannedSession
        In date then session order.

    Raises
    ------
    ValueError
        If ``sessions`` names an unknown session or the frame is too small.
    """
    if sessions is not None:
        unknown = sorted(set(sessions) - set(SESSION_NAMES))
        if unknown:
            raise ValueError(f"sessions must be among {SESSION_NAMES}, got unknown {unknown}")
    size = _FULL if full_size else _SMALL
    n_frames = size["n_frames"] if n_frames is None else int(n_frames)
    shape = _check_shape(size["frame_shape"] if frame_shape is None else frame_shape)
    _check_positive("pixel_size_um", pixel_size_um)
    # somata at most a third of the frame's short side (only tiny test frames shrink them)
    largest_um = min(shape) / 3.0 * pixel_size_um
    diameter_um = (10.0, 15.0) if largest_um >= 15.0 else (largest_um * 2 / 3, largest_um)

    planned = []
    for index, recipe in enumerate(_RECIPES):
        if sessions is not None and recipe.session not in sessions:
            continue
        session_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        wanted = recipe.n_full if full_size else recipe.n_small
        wanted = wanted if n_neurons is None else int(n_neurons)
        count = _fitting_count(shape, wanted, pixel_size_um, diameter_um, session_seed)
        session = simulate_session(
            n_frames,
            shape,
            count,
            frame_interval_s=frame_interval_s,
            pixel_size_um=pixel_size_um,
            diameter_um=diameter_um,
            bleach_fraction=recipe.bleach_fraction,
            motion=recipe.motion,
            roi_naming=recipe.roi_naming,
            roi_outside=recipe.roi_outside,
            seed=session_seed,
        )
        info = {
            "date": recipe.date,
            "session": recipe.session,
            "experiment_seed": int(seed),
            "seed": session_seed,
            "n_frames": n_frames,
            "frame_shape": list(shape),
            "n_neurons": count,
            "pixel_size_um": float(pixel_size_um),
            "frame_interval_s": float(frame_interval_s),
            "diameter_um": list(diameter_um),
            "bleach_fraction": recipe.bleach_fraction,
            "motion": recipe.motion,
            "roi_file": recipe.roi_path,
            "roi_naming": recipe.roi_naming,
            "roi_partly_outside": recipe.roi_outside,
            "gain": session.gain,
            "read_noise": session.read_noise,
            "offset": session.offset,
            "tau_rise_s": session.tau_rise_s,
            "tau_decay_s": session.tau_decay_s,
        }
        planned.append(PlannedSession(recipe.date, recipe.session, recipe.roi_path, session, info))
    return planned


def write_demo_experiment(
    out_dir: str | Path,
    /,
    *,
    name: str = "DEMO",
    full_size: bool = False,
    seed: int = 0,
    sessions: Sequence[str] | None = None,
    n_frames: int | None = None,
    frame_shape: Sequence[int] | None = None,
    n_neurons: int | None = None,
    pixel_size_um: float = 0.65,
    frame_interval_s: float = 0.1,
    chunk_frames: int = 50,
    max_file_bytes: int = 4_000_000_000,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic experiment of :func:`plan_experiment` with its ground truth.

    Layout (SPEC §1)::

        out_dir/<name>/<dd-mm-yy>/<yymmdd>_<n>/<yymmdd>_<n>_MMStack_Pos0.ome.tif
                                               <yymmdd>_<n>_MMStack_Pos0_metadata.txt
                                               ROIs/ROIs.zip  (Rois/Rois.zip in 230405_2)
        out_dir/<name>_truth/README.txt
        out_dir/<name>_truth/<dd-mm-yy>/<yymmdd>_<n>/truth.npz, session.json

    Pixels are generated ``chunk_frames`` frames at a time and streamed to
    :func:`calim_helpers.io.write_mmstack`, so memory stays far below a session's size.

    Parameters
    ----------
    out_dir : str or Path
        Folder that receives ``<name>`` and ``<name>_truth``.
    name : str, optional
        Experiment name. Default is "DEMO".
    full_size : bool, optional
        Lab size (1500 frames of 512 x 688, 45-80 neurons, about 1 GB a session)
        instead of the small default (600 frames of 96 x 128, 8-12 neurons).
        Default is False.
    seed : int, optional
        Experiment seed. Default is 0.
    sessions : sequence of str, optional
        Write only these sessions (e.g. ``["230404_5"]``). Default is None (all).
    n_frames : int, optional
        Override the number of frames. Default is None (from ``full_size``).
    frame_shape : tuple of int, optional
        Override ``(y, x)``. Default is None (from ``full_size``).
    n_neurons : int, optional
        Override every session's neuron count (capped to what fits). Default is None.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    frame_interval_s : float, optional
        Frame interval, seconds. Default is 0.1.
    chunk_frames : int, optional
        Frames generated and handed to the writer at a time. Default is 50.
    max_file_bytes : int, optional
        Stack file size past which the writer starts a continuation file.
        Default is 4_000_000_000.
    overwrite : bool, optional
        Allow writing into existing, non-empty output folders. Default is False.

    Returns
    -------
    Path
        ``out_dir/<name>``, the experiment folder.

    Raises
    ------
    FileExistsError
        If an output folder exists, is not empty and ``overwrite`` is False.
    ValueError
        If ``sessions`` names an unknown session or the frame is too small.
    """
    import roifile

    from calim_helpers.io import write_mmstack

    out_dir = Path(out_dir)
    exp_dir, truth_dir = out_dir / name, out_dir / f"{name}_truth"
    for folder in (exp_dir, truth_dir):
        if not overwrite and folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} exists and is not empty (pass overwrite=True)")
    planned = plan_experiment(
        full_size=full_size,
        seed=seed,
        sessions=sessions,
        n_frames=n_frames,
        frame_shape=frame_shape,
        n_neurons=n_neurons,
        pixel_size_um=pixel_size_um,
        frame_interval_s=frame_interval_s,
    )
    truth_dir.mkdir(parents=True, exist_ok=True)
    (truth_dir / "README.txt").write_text(TRUTH_FIELDS, encoding="utf-8")
    for plan in planned:
        session = plan.session
        sess_dir = exp_dir / plan.date / plan.name
        sess_truth = truth_dir / plan.date / plan.name
        sess_dir.mkdir(parents=True, exist_ok=True)
        sess_truth.mkdir(parents=True, exist_ok=True)

        np.savez_compressed(sess_truth / "truth.npz", **session_truth(session))
        info = {"experiment": name, **plan.info}
        (sess_truth / "session.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

        roi_file = sess_dir / plan.roi_path
        roi_file.parent.mkdir(parents=True, exist_ok=True)
        rois = imagej_rois(session.roi_polygons, session.roi_names, roi_type=session.roi_type)
        roifile.roiwrite(roi_file, rois, mode="w")

        write_mmstack(
            sess_dir,
            plan.name,
            iter_frames(session, chunk_frames=chunk_frames),
            n_frames=session.n_frames,
            frame_shape=session.frame_shape,
            pixel_size_um=session.pixel_size_um,
            interval_ms=session.frame_interval_s * 1000.0,
            max_file_bytes=max_file_bytes,
            summary={"Comment": f"CALIM synthetic demo {name}, seed {session.seed}"},
        )
    return exp_dir
