"""Tests of calim_helpers.events: known transients recovered, rules, schema, ground truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from calim_helpers import demo
from calim_helpers.errors import CalimWarning
from calim_helpers.events import (
    DATASET_COLUMNS,
    EVENT_COLUMNS,
    RATE_COLUMNS,
    detect_events,
    detect_events_dataset,
    event_rates,
)
from calim_helpers.noise import noise_sigma

DT = 1.0  # downsampled frame interval of the lab's data, s


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _kernel_trace(onsets_s, amplitudes, n_frames, *, dt=DT):
    """Noise-free double-exponential transients, averaged over each frame (demo's model)."""
    onsets_s = np.asarray(onsets_s, dtype=float)
    return demo.dff_traces(onsets_s, np.zeros(onsets_s.size, dtype=np.int64),
                           np.asarray(amplitudes, dtype=float), n_neurons=1,
                           n_frames=n_frames, frame_interval_s=dt)[0]


def _match(detected, true, tol=1):
    """Greedy one-to-one matching of frames within ``tol``; returns matched true indices."""
    detected = np.asarray(detected)
    used = np.zeros(detected.size, dtype=bool)
    hits = np.zeros(len(true), dtype=bool)
    for k, f in enumerate(true):
        d = np.abs(detected - f).astype(float)
        d[used] = np.inf
        if d.size and d.min() <= tol:
            used[int(np.argmin(d))] = True
            hits[k] = True
    return hits, used


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn)


# ------------------------------------------------------------------ noise and level


def test_sigma_and_level_are_the_noise_estimate():
    """detect_events measures in units of calim_helpers.noise.noise_sigma, above its level."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.1, 0.02, 3000)
    active = rng.random(3000) < 0.5  # half the frames active
    x[active] += rng.uniform(0.05, 1.0, int(active.sum()))
    x[:100] = np.nan
    (x,) = _frozen(x)
    ev = detect_events(x, time_s=np.arange(3000.0))
    est = noise_sigma(x)
    assert ev.attrs["sigma"] == est.sigma and ev.attrs["level"] == est.level
    assert ev.attrs["sigma"] == pytest.approx(0.02, rel=0.15)
    assert ev.attrs["level"] == pytest.approx(0.1, abs=0.01)
    np.testing.assert_allclose(ev["snr"], ev["amplitude"] / est.sigma)


def test_threshold_is_in_sigmas_above_the_level():
    """Single-frame bumps of 2.5 and 3.5 noise sigmas: only the second passes threshold=3."""
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0.0, 1.0, 200), -1.5, 1.5)  # noise never near the threshold
    x[[50, 120]] = [2.5, 3.5]
    ev = detect_events(x, time_s=np.arange(200.0), prominence=1.0)
    est = noise_sigma(x)
    z = (x[[50, 120]] - est.level) / est.sigma
    assert 2.0 < z[0] < 3.0 < z[1]
    assert ev["peak_frame"].tolist() == [120]
    assert detect_events(x, time_s=np.arange(200.0), threshold=2.0,
                         prominence=1.0)["peak_frame"].tolist() == [50, 120]


# ------------------------------------------------------------------ one trace


def test_known_transients_recovered_within_one_frame():
    """Kernel transients at known times, above and below 3 sigma, in Gaussian noise."""
    rng = np.random.default_rng(2)
    n_frames, sigma = 150, 0.02
    tp = fp = fn = 0
    for _ in range(20):
        frames = np.sort(rng.choice(np.arange(3, n_frames - 3, 6), size=12, replace=False))
        onsets = frames + rng.uniform(0.0, 0.5, frames.size)
        snr = rng.choice([1.0, 1.5, 5.0, 8.0, 15.0], size=frames.size)
        clean = _kernel_trace(onsets, np.ones(frames.size), n_frames)
        peak_1 = np.array([clean[f] for f in frames])  # binned peak of a unit spike
        clean = _kernel_trace(onsets, snr * sigma / peak_1, n_frames)
        x = clean + rng.normal(0.0, sigma, n_frames)
        (x,) = _frozen(x)
        ev = detect_events(x, time_s=np.arange(n_frames) * DT)
        above = snr > 3.0
        hits, used = _match(ev["onset_frame"].to_numpy(), frames)
        peak_hits, _ = _match(ev["peak_frame"].to_numpy(), frames)
        # matched events above 3 sigma also peak within one frame (a transient below
        # it may be found by its noise, which can peak later)
        assert (peak_hits | ~(hits & above)).all()
        tp += int((hits & above).sum())
        fn += int((~hits & above).sum())
        fp += int((~used).sum())
    assert _f1(tp, fp, fn) >= 0.9, (tp, fp, fn)
    assert fn <= 0.05 * (tp + fn)


def test_hand_made_event_values():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 0.01, 60)
    x[20:24] += [0.2, 0.5, 0.3, 0.15]
    ev = detect_events(x, time_s=10.0 + 0.5 * np.arange(60))
    row = ev[ev["peak_frame"] == 21].iloc[0]
    sigma, level = ev.attrs["sigma"], ev.attrs["level"]
    assert sigma == noise_sigma(x).sigma and level == noise_sigma(x).level
    assert row["peak_frame"] == 21 and row["peak_time_s"] == 20.5
    assert row["onset_frame"] == 20 and row["onset_time_s"] == 20.0  # >= 20 % of the peak
    half = level + 0.5 * (x[21] - level)
    assert x[22] >= half > x[23]
    assert row["end_frame"] == 23 and row["duration_s"] == 1.5  # 3 frames of 0.5 s
    assert row["peak"] == x[21]
    assert row["amplitude"] == pytest.approx(x[21] - np.median(x[14:20]))  # 3 s before onset
    assert row["snr"] == pytest.approx(row["amplitude"] / sigma)
    assert list(ev.columns) == list(EVENT_COLUMNS)


def test_onset_fraction_and_end_fraction():
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 0.005, 40)
    x[10:16] += [0.05, 0.2, 1.0, 0.6, 0.3, 0.1]
    t = np.arange(40.0)
    ev = detect_events(x, time_s=t)
    assert ev["onset_frame"].tolist() == [11] and ev["end_frame"].tolist() == [14]
    ev = detect_events(x, time_s=t, onset_fraction=0.03, end_fraction=0.2)
    assert ev["onset_frame"].tolist() == [10] and ev["end_frame"].tolist() == [15]


def test_transient_on_a_decay_is_separate_and_gets_its_own_amplitude():
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 0.005, 50)
    x[10:20] += 1.0 * np.exp(-np.arange(10) / 2.0)
    x[14] += 0.5
    ev = detect_events(x, time_s=np.arange(50.0))
    assert ev["peak_frame"].tolist() == [10, 14]
    assert ev["end_frame"].iloc[0] <= ev["onset_frame"].iloc[1] == 14
    # measured from the trough it rises out of (own increment 0.5 + e^-2 - e^-1.5)
    assert ev["amplitude"].iloc[1] == pytest.approx(x[14] - x[13])
    assert ev["amplitude"].iloc[1] == pytest.approx(0.5 + np.exp(-2.0) - np.exp(-1.5),
                                                    abs=0.02)


def test_merge_gap_joins_close_events():
    rng = np.random.default_rng(6)
    x = rng.normal(0.0, 0.005, 60)
    x[[20, 24]] += [0.4, 0.6]  # the first ends at 21, the next starts at 24: 3 s apart
    x[40] += 0.5
    t = np.arange(60.0)
    sep = detect_events(x, time_s=t)
    assert sep["peak_frame"].tolist() == [20, 24, 40]
    assert sep["end_frame"].tolist() == [21, 25, 41]
    merged = detect_events(x, time_s=t, merge_gap_s=3.5)
    assert merged["onset_frame"].tolist() == [20, 40]
    assert merged["peak_frame"].tolist() == [24, 40]  # the highest peak of the merged event
    assert merged["end_frame"].tolist() == [25, 41]
    assert merged["duration_s"].tolist() == [5.0, 1.0]
    assert detect_events(x, time_s=t, merge_gap_s=3.0)["peak_frame"].tolist() == [20, 24, 40]
    # never across a NaN frame
    y = x.copy()
    y[22] = np.nan
    assert detect_events(y, time_s=t, merge_gap_s=3.5)["peak_frame"].tolist() == [20, 24, 40]


def test_min_duration_drops_short_events():
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 0.005, 60)
    x[10] += 0.5  # one frame
    x[30:34] += [0.5, 0.45, 0.4, 0.35]  # four frames above half its peak
    t = np.arange(60.0)
    assert detect_events(x, time_s=t)["duration_s"].tolist() == [1.0, 4.0]
    kept = detect_events(x, time_s=t, min_duration_s=2.0)
    assert kept["peak_frame"].tolist() == [30] and kept["duration_s"].tolist() == [4.0]


def test_nan_frames_are_never_part_of_an_event():
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 0.005, 80)
    x[:10] = np.nan  # trimmed start
    x[12:15] += [0.3, 0.5, 0.35]
    x[40:46] += [0.3, 0.5, 0.45, 0.4, 0.35, 0.3]
    x[43] = np.nan  # guarded frame inside an event
    x[60] += 0.5
    x[61] = np.nan  # a peak next to a NaN frame is not a peak
    ev = detect_events(x, time_s=np.arange(80.0))
    for row in ev.itertuples():
        assert np.isfinite(x[row.onset_frame:row.end_frame]).all()
    assert ev["peak_frame"].tolist() == [13, 41]
    assert ev["end_frame"].iloc[1] == 43


def test_empty_result_has_the_schema():
    rng = np.random.default_rng(9)
    x = rng.normal(0.0, 0.01, 100)
    ev = detect_events(x, time_s=np.arange(100.0), threshold=50.0)
    assert ev.empty and list(ev.columns) == list(EVENT_COLUMNS)
    assert dict(ev.dtypes.astype(str)) == EVENT_COLUMNS
    with pytest.warns(CalimWarning, match="noise sigma is 0.0"):
        flat = detect_events(np.ones(30), time_s=np.arange(30.0))
    assert flat.empty and dict(flat.dtypes.astype(str)) == EVENT_COLUMNS


def test_repeated_calls_agree_and_input_is_not_mutated():
    rng = np.random.default_rng(10)
    x = rng.normal(0.0, 0.01, 100)
    x[[20, 50, 70]] += 0.3
    t = np.arange(100.0)
    _frozen(x, t)
    a = detect_events(x, time_s=t)
    b = detect_events(x, time_s=t)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"threshold": 0}, "threshold must be a finite number > 0"),
    ({"prominence": -1.0}, "prominence must be a finite number > 0"),
    ({"merge_gap_s": -1.0}, "merge_gap_s must be a finite number >= 0"),
    ({"min_duration_s": float("nan")}, "min_duration_s must be a finite number >= 0"),
    ({"onset_fraction": 1.5}, "onset_fraction must be a finite number >= 0 and <= 1"),
    ({"end_fraction": True}, "end_fraction must be a finite number"),
    ({"baseline_s": "3"}, "baseline_s must be a finite number >= 0"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detect_events(np.zeros(10), time_s=np.arange(10.0), **kwargs)


def test_bad_data_raise():
    with pytest.raises(ValueError, match="norm must be one trace"):
        detect_events(np.zeros((2, 10)), time_s=np.arange(10.0))
    with pytest.raises(ValueError, match="time_s must have the shape of norm"):
        detect_events(np.zeros(10), time_s=np.arange(9.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        detect_events(np.zeros(3), time_s=np.array([0.0, 2.0, 1.0]))


# ------------------------------------------------------------------ dataset and rates


def _session(n_time=120, trim=20, seed=11):
    """Three ROIs of Gaussian noise clipped at 2 sigma (never an event); 5, 2 and 0 events."""
    rng = np.random.default_rng(seed)
    norm = np.clip(rng.normal(0.0, 0.01, (3, n_time)), -0.02, 0.02)
    norm[0, [30, 50, 70, 90, 110]] += 0.3
    norm[1, [40, 80]] += [0.2, 0.4]
    norm[:, :trim] = np.nan
    time = 0.45 + np.arange(n_time) * DT
    ds = xr.Dataset({"norm": (("roi", "time"), norm.astype(np.float32)),
                     "converged": ("roi", np.array([True, True, False]))},
                    coords={"roi": [1, 2, 3], "roi_name": ("roi", ["a", "b", "c"]),
                            "time": time, "frame": ("time", np.arange(n_time))})
    ds.attrs = {"experiment": "E", "date": "04-04-23", "session": "230404_5",
                "trim_start": trim}
    return ds


def test_detect_events_dataset_table():
    ds = _session()
    ev = detect_events_dataset(ds)
    assert list(ev.columns) == list(DATASET_COLUMNS)
    assert dict(ev.dtypes.astype(str)) == DATASET_COLUMNS
    assert ev["roi"].tolist() == [1] * 5 + [2] * 2
    assert ev["roi_name"].tolist() == ["a"] * 5 + ["b"] * 2
    assert ev["frame"].tolist() == [30, 50, 70, 90, 110, 40, 80]  # onset frames
    np.testing.assert_allclose(ev["time_s"], ds["time"].values[ev["frame"]])
    np.testing.assert_allclose(ev["peak_dff"],
                               ds["norm"].values[ev["roi"] - 1, ev["peak_frame"]], rtol=1e-6)
    assert (ev[["experiment", "date", "session"]].drop_duplicates().values.tolist()
            == [["E", "04-04-23", "230404_5"]])
    single = detect_events(ds["norm"].values[1].astype(float), time_s=ds["time"].values)
    np.testing.assert_allclose(ev.loc[ev["roi"] == 2, "amplitude"], single["amplitude"])


def _starts(ds):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ev = detect_events_dataset(ds)
    return ev, [str(w.message) for w in caught if "start high and falling" in str(w.message)]


@pytest.mark.parametrize("n_start", [2, 3, 4])
def test_a_start_shared_by_most_rois_is_named_and_is_no_event(n_start):
    """6 ROIs; n_start of them decay from the first frame."""
    rng = np.random.default_rng(31)
    norm = np.clip(rng.normal(0.0, 0.01, (6, 60)), -0.02, 0.02)
    norm[:n_start, :4] += 0.3 * np.exp(-np.arange(4) / 1.0)  # a decaying start
    norm[5, 40] += 0.3  # and one event inside the trace
    ds = xr.Dataset({"norm": (("roi", "time"), norm)},
                    coords={"roi": np.arange(1, 7), "time": np.arange(60) * 1.0})
    ds.attrs = {"date": "04-04-23", "session": "230404_5"}
    ev, said = _starts(ds)
    assert ev.loc[ev["roi"] == 6, "peak_frame"].tolist() == [40]
    # kept when few ROIs share it (a true transient at the start is then likelier)
    kept = list(range(1, n_start + 1)) if n_start < 4 else []
    assert ev.loc[ev["peak_frame"] == 0, "roi"].tolist() == kept
    single = detect_events(ds["norm"].values[0], time_s=ds["time"].values)
    assert single["peak_frame"].tolist() == [0]  # one trace alone: its start is an event
    # with the first 2 frames trimmed, no event peaks at the start and nothing is said
    trimmed = ds.copy(deep=True)
    trimmed["norm"][:, :2] = np.nan
    ev_trimmed, said_trimmed = _starts(trimmed)
    assert (ev_trimmed["peak_frame"] > 2).all() and said_trimmed == []
    if n_start < 4:  # 3 of 6 is not more than half
        assert said == []
    else:
        assert said == [
            "04-04-23 230404_5: 4 of 6 ROIs (ROI 1, 2, 3, 4) start high and falling (a peak "
            "at their first frame): a start artefact they share (fast photobleaching when "
            "the light comes on, which the baseline does not follow at the trace's edge) "
            "rather than events; these peaks are not counted as events. A burst under way "
            "when the recording started looks the same: look at the traces' start; "
            "trim_start leaves the first frames out of the normalized traces and their "
            "summaries too"]


def test_detect_events_dataset_without_events_and_flat_roi():
    ds = _session()
    ds["norm"][2] = 0.0
    with pytest.warns(CalimWarning, match=r"ROI\(s\) 3 have zero"):
        ev = detect_events_dataset(ds, threshold=1e3)
    assert ev.empty and dict(ev.dtypes.astype(str)) == DATASET_COLUMNS
    with pytest.raises(ValueError, match="variable must name a data variable"):
        detect_events_dataset(ds, variable="nope")


def test_event_rates_over_the_untrimmed_duration():
    ds = _session(n_time=120, trim=20)
    ev = detect_events_dataset(ds)
    rates = event_rates(ev, ds)
    assert list(rates.columns) == list(RATE_COLUMNS)
    assert dict(rates.dtypes.astype(str)) == RATE_COLUMNS
    assert rates["n_events"].tolist() == [5, 2, 0]
    np.testing.assert_allclose(rates["observed_min"], 100 / 60)
    np.testing.assert_allclose(rates["rate_per_min"], [3.0, 1.2, 0.0])
    first = ev[ev["roi"] == 1]
    assert rates["mean_amplitude"][0] == pytest.approx(first["amplitude"].mean())
    assert rates["median_amplitude"][1] == pytest.approx(ev[ev["roi"] == 2]["amplitude"].median())
    assert rates["mean_duration_s"][0] == pytest.approx(first["duration_s"].mean())
    assert np.isnan(rates["mean_amplitude"][2]) and np.isnan(rates["median_snr"][2])
    other = ev.assign(session="230404_9")  # rows of another session are ignored
    assert event_rates(pd.concat([ev, other]), ds)["n_events"].tolist() == [5, 2, 0]


# ------------------------------------------------------------------ ground truth


def _true_transients(spike_t, spike_amp, n_bins, bin_s, group_s):
    """Spikes closer than ``group_s`` form one transient: (first bin, own binned peak)."""
    order = np.argsort(spike_t)
    t, a = spike_t[order], spike_amp[order]
    out = []
    for idx in np.split(np.arange(t.size), np.flatnonzero(np.diff(t) > group_s) + 1):
        if idx.size == 0:
            continue
        own = _kernel_trace(t[idx], a[idx], n_bins, dt=bin_s)  # this transient alone
        out.append((int(t[idx[0]] // bin_s), float(own.max())))
    return out


def _demo_f1(sigma_range, seeds=(0, 1, 2), group_s=1.5):
    """Event F1 on demo sessions: binned true dF/F + Gaussian noise vs the spike times."""
    tp = fp = fn = 0
    for seed in seeds:
        session = demo.simulate_session(1500, (96, 128), 10, pixel_size_um=1.3, seed=seed)
        truth = demo.session_truth(session)
        n, n_native = truth["dff"].shape
        factor = 10  # the pipeline's downsample.time
        bin_s = float(truth["frame_interval_s"]) * factor
        n_bins = n_native // factor
        binned = truth["dff"][:, :n_bins * factor].astype(float)
        binned = binned.reshape(n, n_bins, factor).mean(axis=-1)
        rng = np.random.default_rng(seed)
        sigmas = rng.uniform(*sigma_range, n)
        for i in range(n):
            x = binned[i] + rng.normal(0.0, sigmas[i], n_bins)
            ev = detect_events(x, time_s=np.arange(n_bins) * bin_s)
            mine = truth["spike_neuron"] == i
            true = _true_transients(truth["spike_times_s"][mine], truth["spike_amplitude"][mine],
                                    n_bins, bin_s, group_s)
            hits, used = _match(ev["onset_frame"].to_numpy(), [f for f, _ in true])
            above = np.array([peak > 3 * sigmas[i] for _, peak in true], dtype=bool)
            tp += int((hits & above).sum())
            fn += int((~hits & above).sum())
            fp += int((~used).sum())  # detections matching no true transient
    return _f1(tp, fp, fn), (tp, fp, fn)


def test_ground_truth_events_of_demo_sessions():
    """Binned demo dF/F with noise of 0.5-1.5 % (~10x the demo pipeline's) -> F1 >= 0.9."""
    f1, counts = _demo_f1((0.005, 0.015))
    assert f1 >= 0.9, (f1, counts)


def test_ground_truth_events_at_pipeline_noise():
    """At the noise the demo pipeline leaves (~0.1-0.3 % dF/F), F1 is higher still."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalimWarning)
        f1, counts = _demo_f1((0.001, 0.003), seeds=(3, 4))
    assert f1 >= 0.93, (f1, counts)


def test_min_amplitude_drops_small_events_only():
    rng = np.random.default_rng(11)
    t = np.arange(150) * 1.0
    x = rng.normal(0, 0.001, 150)
    x[40] += 0.006  # a wiggle well above 3 sigma but tiny in dF/F
    x[90] += 0.2  # a real transient
    x[91] += 0.1
    everything = detect_events(x, time_s=t)
    assert set(everything["peak_frame"]) >= {40, 90}
    floored = detect_events(x, time_s=t, min_amplitude=0.01)
    assert list(floored["peak_frame"]) == [90]
    with pytest.raises(ValueError, match="min_amplitude"):
        detect_events(x, time_s=t, min_amplitude=-1)


# ------------------------------------------------------------------ planted SNR


def _planted(snr_levels, n_traces, seed, *, n_frames=150, sigma=0.01, spacing=10):
    """Isolated kernel transients at 1 s frames; binned peak = snr * sigma exactly."""
    rng = np.random.default_rng(seed)
    found = {s: [0, 0] for s in snr_levels}
    false = frames_total = 0
    for _ in range(n_traces):
        frames = np.arange(5, n_frames - 5, spacing)
        onsets = frames + rng.uniform(0.0, 0.3, frames.size)  # early in the frame: one peak
        snr = rng.choice(np.asarray(snr_levels, dtype=float), size=frames.size)
        unit = _kernel_trace(onsets, np.ones(frames.size), n_frames)
        x = _kernel_trace(onsets, snr * sigma / unit[frames], n_frames)
        x = x + rng.normal(0.0, sigma, n_frames)
        (x,) = _frozen(x)
        ev = detect_events(x, time_s=np.arange(n_frames) * DT)
        hits, used = _match(ev["peak_frame"].to_numpy(), frames)
        for s, h in zip(snr, hits, strict=True):
            found[s][0] += int(h)
            found[s][1] += 1
        false += int((~used).sum())
        frames_total += n_frames
    recall = {s: hit / n for s, (hit, n) in found.items()}
    tp = sum(hit for hit, _ in found.values())
    return recall, tp / (tp + false), 1000 * false / frames_total


def test_planted_transients_recall_and_precision_by_snr():
    """Known answer: a one-frame peak of h sigma passes threshold 3 with P = Phi(h - 3).

    Phi(0) = 0.5 at SNR 3, Phi(2) = 0.977 at SNR 5, 1 at SNR 10; the level and sigma
    are estimated from 150 frames, so allow a margin. White noise alone gives about
    2 false events per 1000 frames (module docstring of calim_helpers.noise).
    """
    recall, precision, per_1000 = _planted((3.0, 5.0, 10.0), 60, seed=20)
    assert 0.3 <= recall[3.0] <= 0.65, recall
    assert recall[5.0] >= 0.88, recall
    assert recall[10.0] == 1.0, recall
    assert precision >= 0.97, precision
    assert per_1000 <= 3.0, per_1000


def test_planted_transients_at_snr_10_on_pipeline_length_traces():
    """60 frames (600 native frames binned by 10): short traces still give every SNR 10."""
    recall, precision, _ = _planted((10.0,), 100, seed=21, n_frames=60, spacing=8)
    assert recall[10.0] >= 0.99 and precision >= 0.95, (recall, precision)


def test_peaks_at_the_trace_ends_count_but_not_next_to_nan():
    rng = np.random.default_rng(22)
    x = np.clip(rng.normal(0.0, 0.01, 40), -0.02, 0.02)
    t = np.arange(40.0)
    x[0] += 0.3  # the trace starts on a transient's peak
    x[1] += 0.08
    x[39] += 0.3  # and ends rising
    x[38] += 0.1
    ev = detect_events(x, time_s=t)
    assert ev["peak_frame"].tolist() == [0, 39]
    assert ev["onset_frame"].tolist() == [0, 38] and ev["end_frame"].tolist() == [1, 40]
    y = x.copy()
    y[:2] = np.nan  # trimmed: the first finite frame is not a peak
    y[39] = np.nan  # guarded: the frame before is next to NaN
    assert detect_events(y, time_s=t).empty
    z = x.copy()
    z[1] = np.nan  # an isolated first frame has no finite neighbour: no peak
    assert detect_events(z, time_s=t)["peak_frame"].tolist() == [39]


# ------------------------------------------------------------------ pure noise, floor


def _noise_event_rate(n_frames, n_traces, seed):
    rng = np.random.default_rng(seed)
    n_events = 0
    for _ in range(n_traces):
        x = rng.normal(0.0, 1.0, n_frames)
        n_events += len(detect_events(x, time_s=np.arange(n_frames) * DT))
    return 1000 * n_events / (n_frames * n_traces)


def test_pure_noise_gives_the_stated_false_event_rate():
    """Gaussian noise alone: about 1.6 false events per 1000 frames on long traces.

    Known answer: with sigma and level known, a frame is an event when it is a local
    maximum above 3 sigma, P(z > 3) = 1.35e-3 per frame at most. The estimate from the
    trace itself spreads more on short traces (10-90 % of sigma_hat / sigma: 0.79-1.12
    at 60 frames) and a low estimate lowers the effective threshold: 5.3 per 1000 frames
    at 60 frames (the module docstring's figures, measured on 12 000 traces).
    """
    long_rate = _noise_event_rate(1500, 60, seed=30)
    assert 0.8 <= long_rate <= 2.4, long_rate
    short_rate = _noise_event_rate(60, 1000, seed=31)
    assert 3.5 <= short_rate <= 7.0, short_rate


def test_floor_decides_when_contamination_exceeds_the_noise():
    """Wiggles far above the shot noise but small in dF/F: only the floor removes them.

    Noise sigma 0.001, one-frame contamination bumps of 0.005-0.007 on 5 % of the frames
    (as neuropil left in a trace), true transients of 0.02-0.05. Every threshold from 2.5
    to 4 sigma keeps the bumps; a floor between the two sizes keeps the transients only.
    """
    rng = np.random.default_rng(32)
    n = 600
    t = np.arange(n) * DT
    x = rng.normal(0.0, 0.001, n)
    frames = rng.permutation(np.arange(2, n - 2, 4))
    bumps, true = np.sort(frames[:30]), np.sort(frames[30:45])
    x[bumps] += rng.uniform(0.005, 0.007, bumps.size)
    x[true] += rng.uniform(0.02, 0.05, true.size)
    (x,) = _frozen(x)
    for th in (2.5, 3.0, 4.0):
        ev = detect_events(x, time_s=t, threshold=th, prominence=th)
        hits_bumps, _ = _match(ev["peak_frame"].to_numpy(), bumps, tol=0)
        assert hits_bumps.mean() >= 0.9, (th, hits_bumps.mean())
    ev = detect_events(x, time_s=t, min_amplitude=0.01)
    hits, used = _match(ev["peak_frame"].to_numpy(), true, tol=0)
    assert hits.all() and used.all(), (hits, used)


def test_a_floor_that_removes_most_clear_events_is_said():
    """The same session scaled down 50 times (a ΔF/F divided by a baseline holding a large
    camera offset): the events stay 30 noise sigmas high, the 0.01 floor removes all 7."""
    ds = _session()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalimWarning)  # the floor keeps all 7: silent
        assert len(detect_events_dataset(ds, min_amplitude=0.01)) == 7
    small = ds.assign(norm=ds["norm"] / 50)
    with pytest.warns(CalimWarning, match=r"04-04-23 230404_5: min_amplitude = 0.01 removed "
                                          r"7 of the 7 events at least 10 noise sigmas high"):
        ev = detect_events_dataset(small, min_amplitude=0.01)
    assert ev.empty
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalimWarning)  # no floor: the same 7 events, silent
        again = detect_events_dataset(small, min_amplitude=0.0)
    assert again["frame"].tolist() == [30, 50, 70, 90, 110, 40, 80]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalimWarning)  # 2 of 7 removed: not most of them
        part = ds.assign(norm=ds["norm"].where(ds["roi"] != 2, ds["norm"] / 50))
        assert len(detect_events_dataset(part, min_amplitude=0.01)) == 5
