"""A synthetic session: its simulation, its pixels and its ground truth.

:func:`simulate_session` draws everything of a session but its pixels (somata,
activity, neuropil, artefacts, expert ROIs) into a :class:`DemoSession`;
:func:`render_frames` and :func:`iter_frames` compute its camera frames on demand,
each frame from its own noise stream, so the result does not depend on chunking;
:func:`session_truth` gives the ground truth as the plain arrays of ``truth.npz``
(described in ``TRUTH_FIELDS``). The model is in :mod:`calim_helpers.demo`.

Examples
--------
>>> import numpy as np
>>> from calim_helpers.synthetic.session import iter_frames, render_frames, simulate_session
>>> s = simulate_session(20, (32, 40), 2, pixel_size_um=1.5, motion=True, seed=1)
>>> movie = render_frames(s, 0, 20)
>>> bool((np.concatenate(list(iter_frames(s, chunk_frames=6))) == movie).all())
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from calim_helpers.synthetic._common import (
    _STREAM_BRIGHTNESS,
    _STREAM_CAMERA,
    _check_recording,
)
from calim_helpers.synthetic.activity import Spikes, dff_traces, spike_trains
from calim_helpers.synthetic.artefacts import bleach_curve, drift_curve, session_motion
from calim_helpers.synthetic.expert_rois import expert_rois
from calim_helpers.synthetic.scene import (
    Somata,
    _add_patch,
    neuropil_image,
    soma_footprints,
)

__all__ = [
    "HARD_TRUTH_FIELDS",
    "TRUTH_FIELDS",
    "DemoSession",
    "ExtraScene",
    "iter_frames",
    "noise_free_frames",
    "render_frames",
    "session_truth",
    "simulate_session",
]


@dataclass(frozen=True, eq=False)
class ExtraScene:
    """What a "hard" session has beyond the default model (see :mod:`~.hard`).

    Attributes
    ----------
    difficulty : str
        Name of the preset (``"hard"``).
    neuropil_strength : float
        Factor on the default neuropil brightness (1 = the default demo's 60 electrons).
    dim, rare, touching, unlabelled : ndarray, shape (n,), bool
        Per neuron: 3-5x dimmer than the others; fires only a few times; touches or
        overlaps a neighbour; has no expert ROI.
    dim_factor : ndarray, shape (n,)
        Brightness divisor of each neuron (1 for the bright ones).
    roi_quality : ndarray, shape (n_rois,), int8
        Per expert ROI: 0 drawn normally, +1 drawn too large, -1 too small.
    roi_scale : ndarray, shape (n_rois,)
        Factor by which a badly drawn ROI was scaled about its soma centre (1 if not).
    contaminant_kind : ndarray, shape (m,), str
        ``"out_of_focus"`` (a blurred, large, dim cell of another plane) or
        ``"neurite"`` (a thin curved process).
    contaminant_patches : list of ndarray, float32
        Footprint (peak 1) of each contaminant on its own window.
    contaminant_origins : ndarray, shape (m, 2), int64
        Frame position ``(row, col)`` of each window's pixel ``[0, 0]``.
    contaminant_brightness : ndarray, shape (m,)
        Resting fluorescence at footprint 1, electrons.
    contaminant_dff : ndarray, shape (m, time)
        Noise-free ΔF/F of each contaminant.
    contaminant_spikes : Spikes
        Their spikes (``neuron`` indexes the contaminants).
    neuropil_weights_y : ndarray, shape (y + 2 pad_px, ky)
    neuropil_weights_x : ndarray, shape (x + 2 pad_px, kx)
        Smooth interpolation weights (rows sum to 1) from a coarse grid of neuropil
        nodes to the padded frame's rows and columns.
    neuropil_grid_dff : ndarray, shape (ky, kx, time)
        Local neuropil ΔF/F at the nodes: it follows the activity of the cells
        around each node plus axons of unseen cells. The neuropil's local relative
        change at frame ``t`` is ``Wy @ grid[:, :, t] @ Wx.T``.
    """

    difficulty: str
    neuropil_strength: float
    dim: np.ndarray
    dim_factor: np.ndarray
    rare: np.ndarray
    touching: np.ndarray
    unlabelled: np.ndarray
    roi_quality: np.ndarray
    roi_scale: np.ndarray
    contaminant_kind: np.ndarray
    contaminant_patches: list[np.ndarray]
    contaminant_origins: np.ndarray
    contaminant_brightness: np.ndarray
    contaminant_dff: np.ndarray
    contaminant_spikes: Spikes
    neuropil_weights_y: np.ndarray
    neuropil_weights_x: np.ndarray
    neuropil_grid_dff: np.ndarray


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
    extras : ExtraScene or None
        The components of the "hard" preset; None for the default model.
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
    extras: ExtraScene | None = None

    @property
    def difficulty(self) -> str:
        """``"default"`` or the preset of :attr:`extras` (``"hard"``)."""
        return "default" if self.extras is None else self.extras.difficulty

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
    n_neurons: int | None,
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
    difficulty: str = "default",
    neuropil_strength: float = 1.0,
    seed: int = 0,
) -> DemoSession:
    """Draw everything of a synthetic session but its pixels.

    ``difficulty="hard"`` hands over to :func:`~calim_helpers.synthetic.hard.simulate_hard_session`
    (dim, touching and rarely firing cells, out-of-focus cells, neurites, local
    neuropil activity, small transients, badly drawn and missing expert ROIs): the
    arguments it shares are passed on; those the preset replaces (``diameter_um``,
    ``brightness``, ``brightness_cv``, ``neuropil_coupling``, ``rate_hz``,
    ``dff_per_spike``, ``read_noise``) must keep their defaults here; set them
    through ``simulate_hard_session`` instead. With ``"hard"``, ``n_neurons`` may be
    None (a cell density of the preset).

    Parameters
    ----------
    n_frames : int
        Number of frames, >= 1.
    frame_shape : tuple of int
        ``(y, x)`` frame size in pixels.
    n_neurons : int or None
        Number of neurons (None only with ``difficulty="hard"``).
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
    difficulty : {"default", "hard"}, optional
        Preset, see above. Default is "default".
    neuropil_strength : float, optional
        Factor on the neuropil brightness (resting level and its fluctuations),
        e.g. 0.5 for weak and 4.0 for strong neuropil. Default is 1.0.
    seed : int, optional
        Seed; each component uses its own stream of it. Default is 0.

    Returns
    -------
    DemoSession
        The session.
    """
    if difficulty not in ("default", "hard"):
        raise ValueError(f"difficulty must be 'default' or 'hard', got {difficulty!r}")
    if not neuropil_strength >= 0:
        raise ValueError(f"neuropil_strength must be >= 0, got {neuropil_strength!r}")
    if difficulty == "hard":
        replaced = {"diameter_um": (diameter_um, (10.0, 15.0)),
                    "brightness": (brightness, 200.0),
                    "brightness_cv": (brightness_cv, 0.3),
                    "neuropil_coupling": (neuropil_coupling, 0.15),
                    "rate_hz": (rate_hz, (0.05, 0.3)),
                    "dff_per_spike": (dff_per_spike, 0.25),
                    "read_noise": (read_noise, 2.0)}
        changed = [k for k, (v, d) in replaced.items() if tuple(np.atleast_1d(v)) != tuple(
            np.atleast_1d(d))]
        if changed:
            raise ValueError(f"{', '.join(changed)} cannot be set with difficulty='hard'; "
                             "use demo.simulate_hard_session")
        from calim_helpers.synthetic.hard import simulate_hard_session

        return simulate_hard_session(
            n_frames, frame_shape, n_neurons,
            frame_interval_s=frame_interval_s, pixel_size_um=pixel_size_um,
            neuropil_level=neuropil_level, neuropil_strength=neuropil_strength,
            burst_rate_hz=burst_rate_hz, tau_rise_s=tau_rise_s, tau_decay_s=tau_decay_s,
            bleach_fraction=bleach_fraction, drift_amplitude=drift_amplitude, motion=motion,
            motion_amplitude_px=motion_amplitude_px, gain=gain, offset=offset,
            roi_naming=roi_naming, roi_type=roi_type, roi_outside=roi_outside, seed=seed,
        )
    if n_neurons is None:
        raise ValueError("n_neurons must be an int with difficulty='default', got None")
    shape = _check_recording(n_frames, frame_shape, frame_interval_s, gain, read_noise,
                             roi_type)
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
    shifts, pad = session_motion(n_frames, motion=motion, amplitude_px=motion_amplitude_px,
                                 seed=seed)
    neuropil = neuropil_level * neuropil_strength * neuropil_image(
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


def _electrons(session: DemoSession, t: int) -> np.ndarray:
    """Noise-free electrons of frame ``t`` (after motion, bleaching and drift)."""
    pad = session.pad_px
    h, w = session.frame_shape
    scene = session.neuropil * (1.0 + session.neuropil_dff[t])
    extras = session.extras
    if extras is not None:
        local = (extras.neuropil_weights_y @ extras.neuropil_grid_dff[:, :, t]
                 @ extras.neuropil_weights_x.T)
        scene = scene + session.neuropil * local
    somata = session.somata
    for i in range(somata.n_neurons):
        weight = session.brightness[i] * (1.0 + session.dff[i, t])
        _add_patch(scene, somata.patches[i], somata.origins[i] + pad, weight)
    if extras is not None:
        for j, patch in enumerate(extras.contaminant_patches):
            weight = extras.contaminant_brightness[j] * (1.0 + extras.contaminant_dff[j, t])
            _add_patch(scene, patch, extras.contaminant_origins[j] + pad, weight)
    dy, dx = session.shifts[t]
    if dy != 0 or dx != 0:
        scene = _shifted_crop(scene, (dy, dx), pad, (h, w))
    else:
        scene = scene[pad : pad + h, pad : pad + w]
    return scene * session.bleach[t] + session.drift[t]


def _render_frame(session: DemoSession, t: int) -> np.ndarray:
    """Camera counts of frame ``t``; depends on nothing but the session and ``t``."""
    h, w = session.frame_shape
    electrons = _electrons(session, t)
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


def noise_free_frames(session: DemoSession, start: int, stop: int, /) -> np.ndarray:
    """Return the expected electrons per pixel of frames ``start`` to ``stop``.

    The camera frame ``t`` is ``offset + gain * Poisson(this) + read noise``; this is
    the noise-free movie with motion, bleaching and drift applied.

    Parameters
    ----------
    session : DemoSession
        The session.
    start, stop : int
        Frame range, ``0 <= start <= stop <= session.n_frames``.

    Returns
    -------
    ndarray, shape (stop - start, y, x), float64
        Electrons.
    """
    if not 0 <= start <= stop <= session.n_frames:
        raise ValueError(
            f"need 0 <= start <= stop <= n_frames={session.n_frames}, got {start!r}, {stop!r}"
        )
    out = np.empty((stop - start, *session.frame_shape), dtype=np.float64)
    for k, t in enumerate(range(start, stop)):
        out[k] = _electrons(session, t)
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
    } | ({} if session.extras is None else _hard_truth(session))


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


def _patch_overlaps(masks: np.ndarray, patches: Sequence[np.ndarray], origins: np.ndarray
                    ) -> np.ndarray:
    """``out[k, i] = sum(masks[k] * patch_i placed at origins[i])``, without dense patches."""
    n_masks, h, w = masks.shape
    out = np.zeros((n_masks, len(patches)))
    for k in range(n_masks):
        rows, cols = np.nonzero(masks[k])
        if rows.size == 0:
            continue
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        for i, patch in enumerate(patches):
            y0, x0 = int(origins[i][0]), int(origins[i][1])
            ys, ye = max(y0, r0), min(y0 + patch.shape[0], r1)
            xs, xe = max(x0, c0), min(x0 + patch.shape[1], c1)
            if ye > ys and xe > xs:
                window = masks[k, ys:ye, xs:xe]
                out[k, i] = float((patch[ys - y0 : ye - y0, xs - x0 : xe - x0] * window).sum())
    return out


def _hard_truth(session: DemoSession) -> dict[str, np.ndarray]:
    """Return the additional truth of a session with :attr:`DemoSession.extras`."""
    from scipy import sparse

    from calim_helpers.synthetic.truth import polygon_mask, true_masks, true_transients

    extras = session.extras
    assert extras is not None
    pad = session.pad_px
    h, w = session.frame_shape
    n_rois, m = len(session.roi_polygons), len(extras.contaminant_patches)
    footprints = session.somata.dense()
    masks = true_masks(footprints)
    roi_masks = np.zeros((n_rois, h, w), dtype=bool)
    for k, xy in enumerate(session.roi_polygons):
        roi_masks[k] = polygon_mask(xy, (h, w))
    roi_iou = np.zeros(n_rois)
    for k, i in enumerate(session.roi_neuron):
        union = (roi_masks[k] | masks[i]).sum()
        roi_iou[k] = (roi_masks[k] & masks[i]).sum() / union if union else 0.0
    contaminants = np.zeros((m, h, w), dtype=np.float32)
    for j, patch in enumerate(extras.contaminant_patches):
        _add_patch(contaminants[j], patch, extras.contaminant_origins[j], 1.0)
    neuropil = session.neuropil[pad : pad + h, pad : pad + w]
    wy = extras.neuropil_weights_y[pad : pad + h]
    wx = extras.neuropil_weights_x[pad : pad + w]
    grid = extras.neuropil_grid_dff

    def sums(mask_set: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix(mask_set.reshape(mask_set.shape[0], -1).astype(np.float32))

    rois = sums(roi_masks)
    npx = np.maximum(roi_masks.sum(axis=(1, 2)), 1).astype(np.float64)
    overlap = _patch_overlaps(roi_masks, session.somata.patches, session.somata.origins)
    soma_w = overlap * session.brightness[None, :]
    soma_rest = soma_w.sum(axis=1) / npx
    soma_f = soma_w @ (1.0 + session.dff) / npx[:, None]
    cont_w = _patch_overlaps(roi_masks, extras.contaminant_patches, extras.contaminant_origins)
    cont_w = cont_w * extras.contaminant_brightness
    cont_f = cont_w @ (1.0 + extras.contaminant_dff) / npx[:, None]
    local_w = np.zeros((n_rois, *grid.shape[:2]))
    for k in range(n_rois):
        rows, cols = np.nonzero(roi_masks[k])
        if rows.size:
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            sub = roi_masks[k, r0:r1, c0:c1] * neuropil[r0:r1, c0:c1]
            local_w[k] = wy[r0:r1].T @ sub @ wx[c0:c1]
    np_rest = rois.astype(np.float64) @ neuropil.ravel()
    np_f = (np_rest[:, None] * (1.0 + session.neuropil_dff[None, :])
            + np.einsum("rab,abt->rt", local_w, grid)) / npx[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        roi_dff_clean = np.where(soma_rest[:, None] > 0, soma_f / soma_rest[:, None] - 1.0, np.nan)

    rest = neuropil.astype(np.float64)  # a copy
    for i in range(session.n_neurons):
        _add_patch(rest, session.somata.patches[i], session.somata.origins[i],
                   session.brightness[i])
    for j, patch in enumerate(extras.contaminant_patches):
        _add_patch(rest, patch, extras.contaminant_origins[j], extras.contaminant_brightness[j])
    variance = (rest + (session.read_noise / session.gain) ** 2).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        roi_noise = np.sqrt(rois.astype(np.float64) @ variance) / npx / soma_rest
        cells = sums(masks).astype(np.float64)
        cell_px = np.maximum(masks.sum(axis=(1, 2)), 1)
        own = session.brightness * np.einsum("iyx,iyx->i", masks, footprints) / cell_px
        neuron_noise = np.sqrt(cells @ variance) / cell_px / own
    spikes = session.spikes
    tr = true_transients(session.dff, spikes.times_s, spikes.neuron,
                         frame_interval_s=session.frame_interval_s)
    cspikes = extras.contaminant_spikes
    return {
        "difficulty": np.asarray(extras.difficulty),
        "neuropil_strength": np.float64(extras.neuropil_strength),
        "dim": extras.dim,
        "dim_factor": extras.dim_factor,
        "rare": extras.rare,
        "touching": extras.touching,
        "unlabelled": extras.unlabelled,
        "true_masks": masks,
        "neuron_noise_dff": neuron_noise,
        **{f"transient_{key}": value for key, value in tr.items()},
        "transient_snr": tr["amplitude"] / neuron_noise[tr["neuron"]],
        "roi_masks": roi_masks,
        "roi_quality": extras.roi_quality,
        "roi_scale": extras.roi_scale,
        "roi_iou": roi_iou,
        "roi_soma_f": soma_f.astype(np.float32),
        "roi_background_f": (np_f + cont_f).astype(np.float32),
        "roi_dff_clean": roi_dff_clean.astype(np.float32),
        "roi_noise_dff": roi_noise,
        "contaminant_kind": np.asarray(extras.contaminant_kind, dtype=str),
        "contaminant_footprints": contaminants,
        "contaminant_brightness": extras.contaminant_brightness,
        "contaminant_dff": extras.contaminant_dff.astype(np.float32),
        "contaminant_spike_times_s": cspikes.times_s,
        "contaminant_spike_neuron": cspikes.neuron,
        "neuropil_weights_y": wy,
        "neuropil_weights_x": wx,
        "neuropil_grid_dff": grid.astype(np.float32),
    }


HARD_TRUTH_FIELDS = """\

Additional fields of a "hard" session (difficulty = "hard"; see calim_helpers.synthetic.hard).
r = expert ROIs (r <= n: some neurons have no ROI), m = contaminants (out-of-focus cells and
neurites), E = true transients, (ky, kx) = neuropil grid nodes.

difficulty          ()        str      "hard"
neuropil_strength   ()        float64  factor on the default neuropil brightness (60 electrons)
dim                 (n,)      bool     neuron is 3-5x dimmer than the others
dim_factor          (n,)      float64  brightness divisor of each neuron (1 if not dim)
rare                (n,)      bool     neuron fires only a few events in the session
touching            (n,)      bool     neuron touches or overlaps a neighbour
unlabelled          (n,)      bool     neuron has no expert ROI
true_masks          (n, y, x) bool     footprint >= 0.5 of its peak, holes filled (score at IoU>=.5)
neuron_noise_dff    (n,)      float64  std of the neuron's dF/F over its true mask, one native
                                       frame, from shot and read noise at rest (frame 0)
transient_neuron, transient_onset_frame, transient_peak_frame, transient_n_spikes  (E,) int64
transient_amplitude, transient_peak_dff, transient_onset_s                         (E,) float64
                                       true transients at the native frame rate (spikes < 0.5 s
                                       apart merged; amplitude = peak - dF/F before the onset);
                                       truth.true_transients(dff, ..., time_bin=k) re-derives
                                       them on a binned time base
transient_snr       (E,)      float64  transient_amplitude / neuron_noise_dff of its neuron
roi_masks           (r, y, x) bool     expert ROIs rasterized (pixel centre inside)
roi_quality         (r,)      int8     0 drawn normally, +1 too large, -1 too small
roi_scale           (r,)      float64  scale of a badly drawn ROI about its soma centre (1 if not)
roi_iou             (r,)      float64  IoU of each ROI with its neuron's true mask
roi_soma_f          (r, T)    float32  mean over the ROI of the in-focus somata's light, electrons
                                       (unshifted, before bleaching, drift and noise)
roi_background_f    (r, T)    float32  mean over the ROI of neuropil + contaminants, electrons
                                       (the ROI's noise-free raw trace is roi_soma_f + this)
roi_dff_clean       (r, T)    float32  roi_soma_f / its resting value - 1: the neuropil-free dF/F
                                       a perfect neuropil correction of this ROI gives (for the
                                       ROI's own neuron alone use dff[roi_neuron])
roi_noise_dff       (r,)      float64  std of roi_dff_clean's noise, one native frame, at rest
contaminant_kind    (m,)      str      "out_of_focus" or "neurite"
contaminant_footprints (m, y, x) float32  footprints, peak 1, unshifted
contaminant_brightness (m,)   float64  resting fluorescence at footprint 1, electrons
contaminant_dff     (m, T)    float32  their noise-free dF/F
contaminant_spike_times_s, contaminant_spike_neuron  (Sc,)  their spikes
neuropil_weights_y  (y, ky)   float64  interpolation weights of the neuropil grid (frame rows)
neuropil_weights_x  (x, kx)   float64  (frame columns)
neuropil_grid_dff   (ky, kx, T) float32  local neuropil dF/F at the grid nodes

Model (hard): scene_t = neuropil * (1 + neuropil_dff[t] + Wy @ neuropil_grid_dff[:, :, t] @ Wx.T)
                        + sum_i brightness[i] * footprint_i * (1 + dff[i, t])
                        + sum_j contaminant_brightness[j] * contaminant_footprint_j
                                * (1 + contaminant_dff[j, t])
"""
