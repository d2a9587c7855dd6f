"""The "hard" preset: a synthetic session at least as difficult as real recordings.

A test bed for automatic neuron detection, event detection and neuropil
correction. On top of the default model (:mod:`calim_helpers.demo`) it has

- somata of a range of sizes (radius 4-9 µm) of which a fraction touch or partly
  overlap a neighbour (:func:`hard_somata`), some cut by the frame's border;
- dim cells: ``dim_fraction`` of them 3-5x dimmer than the others;
- contaminants with activity of their own: out-of-focus cells of other planes
  (large, blurred, dim) and neurites (thin curved processes, half of them crossing
  a soma);
- neuropil whose brightness scales with ``neuropil_strength`` (1 = the default
  demo's 60 electrons per pixel) and whose local ΔF/F follows the cells around it
  plus axons of unseen cells, on a smooth grid of nodes ``neuropil_scale_um`` apart;
- small transients (single-spike ΔF/F per neuron from 0.04 to 0.3) and rarely
  firing cells (``rare_fraction`` of them fire only 1-4 events per session);
- more read noise; bleaching, drift and motion as in the default model;
- expert ROIs as in the default demo, but ``bad_roi_fraction`` of them drawn too
  large or too small (scaled about the soma centre) and ``unlabelled_fraction`` of
  the neurons (mostly dim ones) without a ROI.

Everything is seeded per component (streams of :mod:`~._common`); the pixels are
rendered per frame by :mod:`~calim_helpers.synthetic.session`, so chunking does not
change them. The ground truth (``session_truth``) adds the true masks, transients,
per-ROI neuropil-free ΔF/F and noise levels (``HARD_TRUTH_FIELDS``).

Examples
--------
>>> import numpy as np
>>> from calim_helpers.synthetic.hard import simulate_hard_session
>>> s = simulate_hard_session(30, (64, 80), 6, pixel_size_um=1.0, seed=1)
>>> s.difficulty, s.n_neurons, len(s.roi_polygons) <= s.n_neurons
('hard', 6, True)
>>> int(s.extras.dim.sum()), sorted(set(s.extras.contaminant_kind.tolist()))
(2, ['neurite', 'out_of_focus'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import expit

from calim_helpers.synthetic._common import (
    _STREAM_HARD_BRIGHTNESS,
    _STREAM_HARD_CONTAMINANTS,
    _STREAM_HARD_ROIS,
    _STREAM_HARD_SOMATA,
    _STREAM_HARD_SPIKES,
    _check_positive,
    _check_range,
    _check_recording,
    _check_shape,
)
from calim_helpers.synthetic.activity import Spikes, dff_traces, spike_trains
from calim_helpers.synthetic.artefacts import bleach_curve, drift_curve, session_motion
from calim_helpers.synthetic.expert_rois import _roi_names, expert_rois
from calim_helpers.synthetic.scene import (
    _N_HARMONICS,
    _ZERO_BELOW,
    Somata,
    _outline_radius,
    _soma_patches,
    neuropil_image,
)
from calim_helpers.synthetic.session import DemoSession, ExtraScene

__all__ = ["hard_neuron_count", "hard_somata", "simulate_hard_session"]

_DENSITY_PER_MM2 = 2000.0  # in-focus somata per mm² of frame when n_neurons is None


def hard_neuron_count(
    frame_shape: Sequence[int], /, *, pixel_size_um: float = 0.65,
    density_per_mm2: float = _DENSITY_PER_MM2,
) -> int:
    """Return the number of in-focus neurons of a hard session of this frame (at least 1).

    Parameters
    ----------
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    density_per_mm2 : float, optional
        Somata per mm² of frame. Default is 2000.0.

    Returns
    -------
    int
        ``max(1, round(density * area))``.
    """
    shape = _check_shape(frame_shape)
    _check_positive("pixel_size_um", pixel_size_um)
    area_mm2 = shape[0] * shape[1] * (pixel_size_um / 1000.0) ** 2
    return max(1, round(density_per_mm2 * area_mm2))


def hard_somata(
    frame_shape: Sequence[int],
    n_neurons: int,
    /,
    *,
    pixel_size_um: float = 0.65,
    radius_um: tuple[float, float] = (4.0, 9.0),
    touching_fraction: float = 0.3,
    overlap: tuple[float, float] = (0.0, 0.25),
    border_fraction: float = 0.5,
    max_aspect: float = 1.4,
    irregularity: float = 0.06,
    edge_px: float = 0.8,
    nucleus_fraction: float = 0.45,
    nucleus_dimming: tuple[float, float] = (0.0, 0.6),
    seed: int = 0,
) -> tuple[Somata, np.ndarray]:
    """Somata of varied size, a fraction of them touching or overlapping a neighbour.

    The soma shape is that of :func:`~calim_helpers.synthetic.scene.soma_footprints`.
    Each soma after the first, with probability ``touching_fraction``, is put
    against an earlier one: along a random direction, at the distance where their
    outlines meet, shortened by a fraction drawn from ``overlap``. The others (and
    those for which no such place is free) are placed at random, apart from all.
    A soma's centre may come within ``border_fraction`` of its radius of the frame's
    edge, so some somata are cut by the border.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    n_neurons : int
        Number of somata, >= 0.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    radius_um : tuple of float, optional
        Range of the mean soma radius, micrometres, drawn uniformly. Default is (4.0, 9.0).
    touching_fraction : float, optional
        Probability that a soma is placed against an earlier one. Default is 0.3.
    overlap : tuple of float, optional
        Range of the overlap of touching somata, as a fraction of the sum of their
        radii along the line joining them (0 = just touching). Default is (0.0, 0.25).
    border_fraction : float, optional
        Closest approach of a centre to the frame's edge, in soma radii. Default is 0.5.
    max_aspect, irregularity, edge_px, nucleus_fraction, nucleus_dimming
        Shape, as in :func:`~calim_helpers.synthetic.scene.soma_footprints`.
    seed : int, optional
        Seed. Default is 0.

    Returns
    -------
    somata : Somata
        The somata.
    touching : ndarray, shape (n,), bool
        Whether each soma was placed against a neighbour (or had one placed against it).

    Raises
    ------
    ValueError
        If the somata cannot be placed.
    """
    shape = _check_shape(frame_shape)
    if n_neurons < 0:
        raise ValueError(f"n_neurons must be >= 0, got {n_neurons!r}")
    _check_positive("pixel_size_um", pixel_size_um)
    r_lo, r_hi = _check_range("radius_um", radius_um)
    _check_positive("radius_um[0]", r_lo)
    o_lo, o_hi = _check_range("overlap", overlap)
    if o_hi >= 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap!r}")
    if not 0 <= touching_fraction <= 1:
        raise ValueError(f"touching_fraction must lie in [0, 1], got {touching_fraction!r}")
    dim_lo, dim_hi = _check_range("nucleus_dimming", nucleus_dimming)
    rng = np.random.default_rng([seed, _STREAM_HARD_SOMATA])
    radius_px = rng.uniform(r_lo, r_hi, n_neurons) / pixel_size_um
    aspect = rng.uniform(1.0, max_aspect, n_neurons)
    semi_axes = np.stack([radius_px * np.sqrt(aspect), radius_px / np.sqrt(aspect)], axis=1)
    angles = rng.uniform(0.0, np.pi, n_neurons)
    harmonics = np.stack(
        [rng.uniform(0.0, irregularity, (n_neurons, _N_HARMONICS)),
         rng.uniform(0.0, 2 * np.pi, (n_neurons, _N_HARMONICS))], axis=2)
    dimming = rng.uniform(dim_lo, dim_hi, n_neurons)
    nucleus_offset = rng.uniform(-0.15, 0.15, (n_neurons, 2)) * radius_px[:, None]
    theta = np.linspace(0.0, 2 * np.pi, 360, endpoint=False)
    r_max = np.array([_outline_radius(semi_axes[i], angles[i], harmonics[i], theta).max()
                      for i in range(n_neurons)])

    lo = border_fraction * r_max
    hi_y, hi_x = shape[0] - 1.0 - lo, shape[1] - 1.0 - lo
    if np.any(hi_y < lo) or np.any(hi_x < lo):
        raise ValueError(f"frame_shape {shape} is too small for somata of radius_um={radius_um!r}")
    centers = np.zeros((n_neurons, 2))
    touching = np.zeros(n_neurons, dtype=bool)
    for i in range(n_neurons):
        min_dist = 0.95 * (r_max[i] + r_max[:i])
        placed = False
        if i > 0 and rng.random() < touching_fraction:
            for _attempt in range(50):
                j = int(rng.integers(i))
                phi = rng.uniform(0.0, 2 * np.pi)  # direction from j to i, from +x to +y
                reach = (_outline_radius(semi_axes[j], angles[j], harmonics[j], phi)
                         + _outline_radius(semi_axes[i], angles[i], harmonics[i], phi + np.pi))
                d = (1.0 - rng.uniform(o_lo, o_hi)) * float(reach)
                c = centers[j] + d * np.array([np.sin(phi), np.cos(phi)])
                if not (lo[i] <= c[0] <= hi_y[i] and lo[i] <= c[1] <= hi_x[i]):
                    continue
                dist = np.hypot(*(c - centers[:i]).T)
                others = np.arange(i) != j
                if np.all(dist[others] >= min_dist[others]):
                    centers[i], placed = c, True
                    touching[i] = touching[j] = True
                    break
        if not placed:
            cand = np.stack([rng.uniform(lo[i], hi_y[i], 2000),
                             rng.uniform(lo[i], hi_x[i], 2000)], axis=1)
            dist = np.hypot(*(cand[:, None, :] - centers[None, :i, :]).transpose(2, 0, 1))
            ok = np.flatnonzero(np.all(dist >= min_dist, axis=1))
            if ok.size == 0:
                raise ValueError(
                    f"cannot place n_neurons={n_neurons} somata in frame_shape {shape}; "
                    "reduce n_neurons or radius_um")
            centers[i] = cand[ok[0]]
    patches, origins = _soma_patches(
        centers, semi_axes, angles, harmonics, dimming, nucleus_offset, r_max,
        nucleus_fraction=nucleus_fraction, edge_px=edge_px)
    return Somata(shape, centers, semi_axes, angles, harmonics, patches, origins), touching


def _normalized_patch(image: np.ndarray) -> np.ndarray:
    peak = image.max(initial=0.0)
    out = (image / peak if peak > 0 else image).astype(np.float32)
    out[out < _ZERO_BELOW] = 0.0
    return out


def _out_of_focus(
    rng: np.random.Generator, count: int, shape: tuple[int, int], pixel_size_um: float,
    radius_um: tuple[float, float], blur_um: tuple[float, float],
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Blurred large discs anywhere in the frame: patches, origins, centres."""
    patches, origins, centres = [], [], []
    for _ in range(count):
        radius = rng.uniform(*radius_um) / pixel_size_um
        sigma = rng.uniform(*blur_um) / pixel_size_um
        aspect = rng.uniform(1.0, 1.3)
        angle = rng.uniform(0.0, np.pi)
        centre = rng.uniform(0.0, 1.0, 2) * (np.asarray(shape) - 1)
        half = int(math.ceil(radius * math.sqrt(aspect) + 3.5 * sigma + 2))
        origin = np.round(centre).astype(np.int64) - half
        yy = origin[0] + np.arange(2 * half + 1)[:, None] - centre[0]
        xx = origin[1] + np.arange(2 * half + 1)[None, :] - centre[1]
        axes = np.array([radius * math.sqrt(aspect), radius / math.sqrt(aspect)])
        outline = _outline_radius(axes,
                                  angle, np.zeros((0, 2)), np.arctan2(yy, xx))
        body = expit((outline - np.hypot(yy, xx)) / 0.8)
        patches.append(_normalized_patch(ndimage.gaussian_filter(body, sigma, mode="constant")))
        origins.append(origin)
        centres.append(centre)
    return patches, np.reshape(origins, (-1, 2)).astype(np.int64), np.reshape(centres, (-1, 2))


def _neurites(
    rng: np.random.Generator, count: int, shape: tuple[int, int], pixel_size_um: float,
    length_um: tuple[float, float], width_um: tuple[float, float], anchors: np.ndarray,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Thin smooth curves (half through a soma centre): patches, origins, midpoints."""
    patches, origins, mids = [], [], []
    step = 0.5  # pixels between curve samples
    for _ in range(count):
        length = rng.uniform(*length_um) / pixel_size_um
        sigma = rng.uniform(*width_um) / pixel_size_um / 2.355  # width = FWHM
        if anchors.shape[0] and rng.random() < 0.5:
            mid = anchors[rng.integers(anchors.shape[0])] + rng.normal(0.0, 1.5, 2)
        else:
            mid = rng.uniform(0.0, 1.0, 2) * (np.asarray(shape) - 1)
        heading = rng.uniform(0.0, 2 * np.pi)
        half = max(int(length / 2 / step), 1)
        arms = []
        for direction in (heading, heading + np.pi):
            curvature = np.cumsum(rng.normal(0.0, 0.004, half))  # rad per pixel, slow change
            angle = direction + np.cumsum(np.clip(curvature, -0.04, 0.04) * step)
            arms.append(np.cumsum(step * np.stack([np.sin(angle), np.cos(angle)], 1), axis=0))
        points = mid + np.concatenate([arms[1][::-1], np.zeros((1, 2)), arms[0]])
        pad = int(math.ceil(4 * sigma)) + 2
        origin = np.floor(points.min(axis=0)).astype(np.int64) - pad
        size = np.ceil(points.max(axis=0)).astype(np.int64) - origin + pad + 1
        image = np.zeros(tuple(size))
        local = points - origin
        base = np.floor(local).astype(np.int64)
        frac = local - base
        bead = 1.0 + 0.6 * (rng.random(points.shape[0]) < 0.02)  # a few varicosities
        for oy in (0, 1):
            for ox in (0, 1):
                wy = frac[:, 0] if oy else 1 - frac[:, 0]
                wgt = wy * (frac[:, 1] if ox else 1 - frac[:, 1])
                np.add.at(image, (base[:, 0] + oy, base[:, 1] + ox), wgt * bead)
        image = ndimage.gaussian_filter(image, max(sigma, 0.5), mode="constant")
        line_peak = 1.0 / (step * math.sqrt(2 * math.pi) * max(sigma, 0.5))
        patches.append(_normalized_patch(np.minimum(image / line_peak, 1.5)))
        origins.append(origin)
        mids.append(mid)
    return patches, np.reshape(origins, (-1, 2)).astype(np.int64), np.reshape(mids, (-1, 2))


def _grid_weights(n_pixels: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian interpolation weights (rows sum to 1) from nodes ``spacing`` apart."""
    k = max(int(math.ceil((n_pixels - 1) / spacing)) + 1, 2)
    nodes = np.linspace(0.0, n_pixels - 1.0, k)
    sep = nodes[1] - nodes[0] if k > 1 else 1.0
    w = np.exp(-0.5 * ((np.arange(n_pixels)[:, None] - nodes[None, :]) / (0.6 * sep)) ** 2)
    return w / w.sum(axis=1, keepdims=True), nodes


def simulate_hard_session(
    n_frames: int,
    frame_shape: Sequence[int],
    n_neurons: int | None = None,
    /,
    *,
    frame_interval_s: float = 0.1,
    pixel_size_um: float = 0.65,
    radius_um: tuple[float, float] = (4.0, 9.0),
    touching_fraction: float = 0.3,
    brightness: float = 80.0,
    brightness_cv: float = 0.3,
    dim_fraction: float = 0.3,
    dim_factor: tuple[float, float] = (3.0, 5.0),
    out_of_focus_per_neuron: float = 0.3,
    neurites_per_neuron: float = 0.4,
    contaminant_brightness: tuple[float, float] = (0.15, 0.5),
    neuropil_level: float = 60.0,
    neuropil_strength: float = 1.0,
    neuropil_coupling: float = 0.15,
    neuropil_local_coupling: float = 0.5,
    neuropil_scale_um: float = 40.0,
    rate_hz: tuple[float, float] = (0.02, 0.2),
    burst_rate_hz: float = 0.05,
    rare_fraction: float = 0.25,
    rare_events: tuple[int, int] = (1, 4),
    dff_per_spike: tuple[float, float] = (0.04, 0.3),
    tau_rise_s: float = 0.05,
    tau_decay_s: float = 0.7,
    bleach_fraction: float = 0.3,
    drift_amplitude: float = 8.0,
    motion: bool = False,
    motion_amplitude_px: float = 3.0,
    gain: float = 2.0,
    read_noise: float = 4.0,
    offset: float = 100.0,
    bad_roi_fraction: float = 0.15,
    unlabelled_fraction: float = 0.15,
    roi_naming: str = "fiji",
    roi_type: str = "polygon",
    roi_outside: bool = False,
    seed: int = 0,
) -> DemoSession:
    """Draw a "hard" synthetic session (everything but its pixels).

    Parameters
    ----------
    n_frames : int
        Number of frames, >= 1 (20-60 for a short test recording).
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    n_neurons : int, optional
        In-focus neurons. Default is None: :func:`hard_neuron_count` (2000 per mm²).
    frame_interval_s : float, optional
        Frame interval, seconds. Default is 0.1.
    pixel_size_um : float, optional
        Pixel size, micrometres. Default is 0.65.
    radius_um : tuple of float, optional
        Range of soma radii, micrometres. Default is (4.0, 9.0).
    touching_fraction : float, optional
        Probability that a soma is placed against a neighbour (:func:`hard_somata`).
        Default is 0.3.
    brightness : float, optional
        Median resting fluorescence of a bright soma at footprint 1, electrons
        (the default demo has 200). Default is 80.0.
    brightness_cv : float, optional
        Log-normal spread of the soma brightness. Default is 0.3.
    dim_fraction : float, optional
        Fraction of the neurons (rounded) that are dim. Default is 0.3.
    dim_factor : tuple of float, optional
        Range of the brightness divisor of a dim neuron. Default is (3.0, 5.0).
    out_of_focus_per_neuron : float, optional
        Out-of-focus cells (radius 7-12 µm, blurred by 2-4 µm) per in-focus neuron.
        Default is 0.3.
    neurites_per_neuron : float, optional
        Neurites (40-150 µm long, 1-2 µm wide) per in-focus neuron. Default is 0.4.
    contaminant_brightness : tuple of float, optional
        Range of a contaminant's brightness at footprint 1, as a fraction of
        ``brightness``. Default is (0.15, 0.5).
    neuropil_level : float, optional
        Mean resting neuropil at strength 1, electrons per pixel. Default is 60.0.
    neuropil_strength : float, optional
        Factor on the neuropil brightness (resting level and fluctuations), e.g.
        0.5 (weak) to 4.0 (strong). Default is 1.0.
    neuropil_coupling : float, optional
        Neuropil ΔF/F (whole frame) per unit of the neurons' mean ΔF/F. Default is 0.15.
    neuropil_local_coupling : float, optional
        Local neuropil ΔF/F per unit of the distance-weighted mean ΔF/F of the cells
        (somata and contaminants) around a grid node. Default is 0.5.
    neuropil_scale_um : float, optional
        Spacing of the neuropil grid nodes, micrometres. Default is 40.0.
    rate_hz : tuple of float, optional
        Range of the independent firing rates (log-uniform), Hz. Default is (0.02, 0.2).
    burst_rate_hz : float, optional
        Mean rate of network bursts, Hz. Default is 0.05.
    rare_fraction : float, optional
        Fraction of the neurons (rounded) that fire only ``rare_events`` events and
        join no burst. Default is 0.25.
    rare_events : tuple of int, optional
        Inclusive range of the number of events of a rare neuron. Default is (1, 4).
    dff_per_spike : tuple of float, optional
        Range (log-uniform) of each neuron's median single-spike peak ΔF/F.
        Default is (0.04, 0.3).
    tau_rise_s, tau_decay_s : float, optional
        Calcium kernel, seconds. Defaults are 0.05 and 0.7.
    bleach_fraction : float, optional
        Fluorescence lost to bleaching by the last frame. Default is 0.3.
    drift_amplitude : float, optional
        Largest additive drift, electrons per pixel. Default is 8.0.
    motion : bool, optional
        Apply rigid sub-pixel motion. Default is False.
    motion_amplitude_px : float, optional
        Bound on each shift component, pixels. Default is 3.0.
    gain : float, optional
        Camera counts per electron. Default is 2.0.
    read_noise : float, optional
        Camera read noise, counts RMS. Default is 4.0.
    offset : float, optional
        Camera offset, counts. Default is 100.0.
    bad_roi_fraction : float, optional
        Fraction of the expert ROIs (rounded) drawn too large (scaled 1.6-2.0x about
        the soma centre) or too small (0.45-0.6x), half each. Default is 0.15.
    unlabelled_fraction : float, optional
        Fraction of the neurons (rounded) without an expert ROI, dim ones three times
        as likely. Default is 0.15.
    roi_naming, roi_type, roi_outside
        As in :func:`~calim_helpers.synthetic.session.simulate_session`.
    seed : int, optional
        Seed. Default is 0.

    Returns
    -------
    DemoSession
        With :attr:`~DemoSession.extras` holding the hard components.

    Raises
    ------
    ValueError
        On a bad argument or when the somata do not fit the frame.
    """
    shape = _check_recording(n_frames, frame_shape, frame_interval_s, gain, read_noise,
                             roi_type)
    _check_positive("pixel_size_um", pixel_size_um)
    if not neuropil_strength >= 0:
        raise ValueError(f"neuropil_strength must be >= 0, got {neuropil_strength!r}")
    for name, value in (("dim_fraction", dim_fraction), ("rare_fraction", rare_fraction),
                        ("bad_roi_fraction", bad_roi_fraction),
                        ("unlabelled_fraction", unlabelled_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    if out_of_focus_per_neuron < 0 or neurites_per_neuron < 0:
        raise ValueError("out_of_focus_per_neuron and neurites_per_neuron must be >= 0")
    _check_range("dim_factor", dim_factor, low=1.0)
    g_lo, g_hi = _check_range("dff_per_spike", dff_per_spike)
    _check_positive("dff_per_spike[0]", g_lo)
    e_lo, e_hi = (int(v) for v in rare_events)
    if not 1 <= e_lo <= e_hi:
        raise ValueError(
            f"rare_events must be (low, high) with 1 <= low <= high, got {rare_events!r}")
    _check_positive("neuropil_scale_um", neuropil_scale_um)
    if n_neurons is None:
        n_neurons = hard_neuron_count(shape, pixel_size_um=pixel_size_um)
    n = int(n_neurons)
    duration = n_frames * frame_interval_s

    somata, touching = hard_somata(shape, n, pixel_size_um=pixel_size_um, radius_um=radius_um,
                                   touching_fraction=touching_fraction, seed=seed)

    rng = np.random.default_rng([seed, _STREAM_HARD_BRIGHTNESS])
    cell_brightness = brightness * rng.lognormal(0.0, brightness_cv, n)
    dim = np.zeros(n, dtype=bool)
    dim[rng.permutation(n)[: round(dim_fraction * n)]] = True
    divisor = np.where(dim, rng.uniform(*dim_factor, n), 1.0)
    cell_brightness = cell_brightness / divisor

    # contaminants
    rng = np.random.default_rng([seed, _STREAM_HARD_CONTAMINANTS])
    n_oof = round(out_of_focus_per_neuron * n)
    n_neu = round(neurites_per_neuron * n)
    oof_p, oof_o, oof_c = _out_of_focus(rng, n_oof, shape, pixel_size_um, (7.0, 12.0), (2.0, 4.0))
    neu_p, neu_o, neu_c = _neurites(rng, n_neu, shape, pixel_size_um, (40.0, 150.0), (1.0, 2.0),
                                    somata.centers)
    m = n_oof + n_neu
    kind = np.array(["out_of_focus"] * n_oof + ["neurite"] * n_neu, dtype=str)
    cont_brightness = brightness * rng.uniform(*contaminant_brightness, m)

    # neuropil grid (padded frame)
    shifts, pad = session_motion(n_frames, motion=motion, amplitude_px=motion_amplitude_px,
                                 seed=seed)
    spacing = neuropil_scale_um / pixel_size_um
    wy, ny_nodes = _grid_weights(shape[0] + 2 * pad, spacing)
    wx, nx_nodes = _grid_weights(shape[1] + 2 * pad, spacing)
    n_nodes = ny_nodes.size * nx_nodes.size

    # activity: in-focus neurons, contaminants and one axon source per grid node share bursts
    total = n + m + n_nodes
    raw = spike_trains(total, duration, rate_hz=rate_hz, burst_rate_hz=burst_rate_hz,
                       dff_per_spike=1.0, neuron_cv=0.0, seed=seed)
    rng = np.random.default_rng([seed, _STREAM_HARD_SPIKES])
    unit_gain = np.concatenate([
        np.exp(rng.uniform(np.log(g_lo), np.log(g_hi), n)),
        np.exp(rng.uniform(np.log(0.1), np.log(0.4), m)),
        np.full(n_nodes, 0.1),
    ])
    rare = np.zeros(n, dtype=bool)
    rare[rng.permutation(n)[: round(rare_fraction * n)]] = True
    keep = ~np.concatenate([rare, np.zeros(total - n, dtype=bool)])[raw.neuron]
    times, unit, amp, burst = (raw.times_s[keep], raw.neuron[keep], raw.amplitude[keep],
                               raw.in_burst[keep])
    extra_t, extra_u, extra_a = [], [], []
    for i in np.flatnonzero(rare):
        for onset in rng.uniform(0.0, duration, int(rng.integers(e_lo, e_hi + 1))):
            t_spk = onset + rng.exponential(0.05, 1 + rng.poisson(0.5))
            t_spk = t_spk[t_spk < duration]
            extra_t.append(t_spk)
            extra_u.append(np.full(t_spk.size, i))
            extra_a.append(rng.lognormal(0.0, 0.2, t_spk.size))
    times = np.concatenate([times, *extra_t])
    unit = np.concatenate([unit, *extra_u]).astype(np.int64)
    amp = np.concatenate([amp, *extra_a]) * unit_gain[unit]
    burst = np.concatenate([burst, np.zeros(times.size - burst.size, dtype=bool)])
    order = np.lexsort((unit, times))
    times, unit, amp, burst = times[order], unit[order], amp[order], burst[order]
    dff_all = dff_traces(times, unit, amp, n_neurons=total, n_frames=n_frames,
                         frame_interval_s=frame_interval_s, tau_rise_s=tau_rise_s,
                         tau_decay_s=tau_decay_s)
    cell = unit < n
    spikes = Spikes(times[cell], unit[cell], amp[cell], burst[cell], raw.burst_times_s)
    cont = (unit >= n) & (unit < n + m)
    cont_spikes = Spikes(times[cont], unit[cont] - n, amp[cont], burst[cont], raw.burst_times_s)
    dff, cont_dff, axon_dff = dff_all[:n], dff_all[n : n + m], dff_all[n + m :]

    # local neuropil activity at the nodes: nearby cells (distance-weighted) + own axons
    sources = np.concatenate([somata.centers, oof_c, neu_c]) + pad
    node_y, node_x = np.meshgrid(ny_nodes, nx_nodes, indexing="ij")
    nodes = np.stack([node_y.ravel(), node_x.ravel()], axis=1)
    d2 = ((nodes[:, None, :] - sources[None, :, :]) ** 2).sum(-1)
    weights = np.exp(-0.5 * d2 / spacing**2)
    near = weights @ dff_all[: n + m] / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
    grid = (neuropil_local_coupling * near + axon_dff).reshape(ny_nodes.size, nx_nodes.size, -1)

    neuropil = neuropil_level * neuropil_strength * neuropil_image(
        shape, pixel_size_um=pixel_size_um, pad_px=pad, seed=seed)
    neuropil_dff = neuropil_coupling * (dff.mean(axis=0) if n else np.zeros(n_frames))

    polygons, names, roi_neuron, quality, scale, unlabelled = _hard_rois(
        somata, dim, bad_roi_fraction=bad_roi_fraction, unlabelled_fraction=unlabelled_fraction,
        naming=roi_naming, outside=roi_outside, seed=seed)

    extras = ExtraScene(
        difficulty="hard",
        neuropil_strength=float(neuropil_strength),
        dim=dim,
        dim_factor=divisor,
        rare=rare,
        touching=touching,
        unlabelled=unlabelled,
        roi_quality=quality,
        roi_scale=scale,
        contaminant_kind=kind,
        contaminant_patches=[*oof_p, *neu_p],
        contaminant_origins=np.concatenate([oof_o, neu_o]).reshape(-1, 2),
        contaminant_brightness=cont_brightness,
        contaminant_dff=cont_dff,
        contaminant_spikes=cont_spikes,
        neuropil_weights_y=wy,
        neuropil_weights_x=wx,
        neuropil_grid_dff=grid,
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
        extras=extras,
    )


def _hard_rois(
    somata: Somata, dim: np.ndarray, *, bad_roi_fraction: float, unlabelled_fraction: float,
    naming: str, outside: bool, seed: int,
) -> tuple[list[np.ndarray], list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expert ROIs of the labelled neurons, some drawn too large or too small."""
    rng = np.random.default_rng([seed, _STREAM_HARD_ROIS])
    n = somata.n_neurons
    unlabelled = np.zeros(n, dtype=bool)
    n_unl = round(unlabelled_fraction * n)
    if n_unl:
        p = np.where(dim, 3.0, 1.0)
        unlabelled[rng.choice(n, n_unl, replace=False, p=p / p.sum())] = True
    labelled = np.flatnonzero(~unlabelled)
    sub = Somata(somata.frame_shape, somata.centers[labelled], somata.semi_axes[labelled],
                 somata.angles[labelled], somata.harmonics[labelled], somata.patches[labelled],
                 somata.origins[labelled])
    polygons, _, roi_sub = expert_rois(sub, naming=naming, outside=outside, seed=seed)
    roi_neuron = labelled[roi_sub].astype(np.int64)
    n_rois = len(polygons)
    quality = np.zeros(n_rois, dtype=np.int8)
    scale = np.ones(n_rois)
    bad = rng.permutation(n_rois)[: round(bad_roi_fraction * n_rois)]
    for rank, k in enumerate(bad):
        large = rank % 2 == 0
        quality[k] = 1 if large else -1
        scale[k] = rng.uniform(1.6, 2.0) if large else rng.uniform(0.45, 0.6)
        centre = somata.centers[roi_neuron[k], ::-1] + 0.5  # (x, y) in Fiji coordinates
        xy = centre + scale[k] * (polygons[k] - centre)
        polygons[k] = np.round(xy) if np.array_equal(polygons[k], np.round(polygons[k])) else xy
    return polygons, _roi_names(polygons, naming), roi_neuron, quality, scale, unlabelled
