"""Neural activity: spike trains, the calcium kernel and noise-free ΔF/F traces.

:func:`spike_trains` draws independent Poisson spiking plus synchronous network
bursts; :func:`calcium_kernel` is the GCaMP-like transient of one spike (peak 1 at
:func:`kernel_peak_time`); :func:`dff_traces` sums the transients and averages
them exactly over each frame's exposure ``[t * dt, (t + 1) * dt)``.

Examples
--------
>>> import numpy as np
>>> from calim_helpers.synthetic.activity import calcium_kernel, dff_traces, kernel_peak_time
>>> t_peak = kernel_peak_time()
>>> float(calcium_kernel(np.array([t_peak]))[0])
1.0
>>> dff = dff_traces(np.array([0.0]), np.array([0]), np.array([0.5]), n_neurons=1, n_frames=5)
>>> dff.shape, bool(0 < dff.max() < 0.5)
((1, 5), True)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from calim_helpers.synthetic._common import _STREAM_SPIKES, _check_positive, _check_range

__all__ = ["Spikes", "calcium_kernel", "dff_traces", "kernel_peak_time", "spike_trains"]


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
