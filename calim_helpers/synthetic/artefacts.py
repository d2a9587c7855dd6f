"""Slow artefacts of a recording: photobleaching, additive drift and rigid motion.

:func:`bleach_curve` is multiplicative (1 at frame 0), :func:`drift_curve` is
added to every pixel (electrons), :func:`motion_shifts` gives the rigid sub-pixel
shift ``(dy, dx)`` applied to each frame's content.

Examples
--------
>>> from calim_helpers.synthetic.artefacts import bleach_curve, drift_curve, motion_shifts
>>> bleach = bleach_curve(100, fraction=0.3)
>>> float(bleach[0]), round(float(bleach[-1]), 6)
(1.0, 0.7)
>>> round(float(abs(drift_curve(100, amplitude=8.0)).max()), 6)
8.0
>>> shifts = motion_shifts(100, amplitude_px=3.0)
>>> shifts.shape, bool(abs(shifts).max() <= 3.0)
((100, 2), True)
"""

from __future__ import annotations

import math

import numpy as np

from calim_helpers.synthetic._common import _STREAM_DRIFT, _STREAM_MOTION

__all__ = ["bleach_curve", "drift_curve", "motion_shifts", "session_motion"]


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


def session_motion(n_frames: int, /, *, motion: bool, amplitude_px: float,
                   seed: int) -> tuple[np.ndarray, int]:
    """Return the shifts of a simulated session and the scene padding they need.

    With ``motion``: :func:`motion_shifts` with a wander and a jump of half
    ``amplitude_px``, and a padding of ``ceil(amplitude_px) + 4`` pixels; without: zero
    shifts and no padding.
    """
    if not motion:
        return np.zeros((n_frames, 2)), 0
    shifts = motion_shifts(n_frames, amplitude_px=amplitude_px, wander_px=0.5 * amplitude_px,
                           jump_px=0.5 * amplitude_px, seed=seed)
    return shifts, int(math.ceil(amplitude_px)) + 4
