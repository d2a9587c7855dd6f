"""Tests of calim_helpers.synchrony: spectra, network events, correlation, clusters, features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from calim_helpers.errors import CalimWarning
from calim_helpers.events import detect_events, detect_events_dataset
from calim_helpers.noise import noise_sigma
from calim_helpers.synchrony import (
    FEATURE_COLUMNS,
    NETWORK_COLUMNS,
    NetworkEvents,
    activity_matrix,
    cluster_rois,
    correlation_matrix,
    network_events,
    power_spectra,
    session_features,
)


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


# ------------------------------------------------------------------ spectra


def test_spectrum_of_a_sinusoid_peaks_at_its_frequency():
    dt, n, f0 = 1.0, 150, 0.125
    t = np.arange(n) * dt
    x = np.vstack([np.sin(2 * np.pi * f0 * t), 0.5 * np.sin(2 * np.pi * 0.25 * t + 1.0)])
    x[:, :20] = np.nan  # trimmed start
    (x,) = _frozen(x)
    psd = power_spectra(x, frame_interval_s=dt)
    assert psd.dims == ("roi", "frequency")
    assert psd["frequency"].values[-1] == pytest.approx(0.5)  # Nyquist of 1 s frames
    assert psd["frequency"].attrs["units"] == "Hz"
    step = 1 / (64 * dt)
    peaks = psd["frequency"].values[psd.argmax("frequency").values]
    np.testing.assert_allclose(peaks, [f0, 0.25], atol=step / 2)
    assert psd["roi"].values.tolist() == [1, 2]


def test_white_noise_density_and_dataarray_time_base():
    rng = np.random.default_rng(0)
    dt, sigma = 0.5, 0.3
    x = rng.normal(0.0, sigma, (4, 4000))
    da = xr.DataArray(x, dims=("roi", "time"),
                      coords={"roi": [5, 6, 7, 8], "roi_name": ("roi", list("abcd")),
                              "time": 0.25 + dt * np.arange(4000)})
    psd = power_spectra(da, nperseg=128)
    assert psd.attrs["frame_interval_s"] == dt and psd.attrs["nperseg"] == 128
    # one-sided density of white noise: 2 sigma^2 / fs; Parseval: integral = variance
    inner = psd.sel(frequency=slice(0.05, 0.9))
    np.testing.assert_allclose(inner.mean("frequency"), 2 * sigma**2 * dt, rtol=0.1)
    area = psd.integrate("frequency")
    np.testing.assert_allclose(area, sigma**2, rtol=0.1)
    assert psd["roi_name"].values.tolist() == list("abcd")


def test_spectra_nan_handling():
    x = np.sin(np.arange(100.0))[None, :].repeat(3, axis=0)
    x[1, 50] = np.nan  # guarded frame inside
    x[2] = np.nan  # no data
    with pytest.warns(CalimWarning, match="NaN frames inside 1 trace"):
        psd = power_spectra(x, frame_interval_s=1.0, nperseg=32)
    assert np.isfinite(psd[:2]).all() and np.isnan(psd[2]).all()
    with pytest.raises(ValueError, match="frame_interval_s must be given"):
        power_spectra(x)
    with pytest.raises(ValueError, match="frame_interval_s must be > 0"):
        power_spectra(x, frame_interval_s=0.0)
    with pytest.raises(ValueError, match="nperseg must be an integer >= 2"):
        power_spectra(x, frame_interval_s=1.0, nperseg=1)


# ------------------------------------------------------------------ activity raster


def test_activity_matrix_marks_onset_to_end():
    events = pd.DataFrame({"roi": [1, 3, 3], "frame": [2, 0, 7], "end_frame": [5, 1, 10]})
    act = activity_matrix(events, 3, 10)
    assert act.dtype == bool and act.shape == (3, 10)
    assert np.flatnonzero(act[0]).tolist() == [2, 3, 4]
    assert not act[1].any()
    assert np.flatnonzero(act[2]).tolist() == [0, 7, 8, 9]
    # detect_events' own columns and explicit ROI labels
    single = pd.DataFrame({"roi": [12], "onset_frame": [1], "end_frame": [3]})
    act = activity_matrix(single, 2, 5, rois=[11, 12])
    assert np.flatnonzero(act[1]).tolist() == [1, 2]


def test_activity_matrix_errors():
    with pytest.raises(ValueError, match="missing"):
        activity_matrix(pd.DataFrame({"roi": [1], "frame": [0]}), 1, 5)
    with pytest.raises(ValueError, match="roi 4 is not among the 3 ROIs"):
        activity_matrix(pd.DataFrame({"roi": [4], "frame": [0], "end_frame": [1]}), 3, 5)
    with pytest.raises(ValueError, match="fall outside"):
        activity_matrix(pd.DataFrame({"roi": [1], "frame": [3], "end_frame": [7]}), 3, 5)
    with pytest.raises(ValueError, match="n_time must be an integer >= 1"):
        activity_matrix(pd.DataFrame({"roi": [], "frame": [], "end_frame": []}), 3, 0)


# ------------------------------------------------------------------ network events


def _poisson_raster(rng, n_roi, n_time, p):
    return rng.random((n_roi, n_time)) < p


def test_independent_activity_gives_network_events_at_about_alpha():
    rng = np.random.default_rng(1)
    alpha, n_sessions = 0.05, 200
    with_events = 0
    for s in range(n_sessions):
        act = _poisson_raster(rng, 20, 150, 0.05)
        net = network_events(act, n_shuffles=200, alpha=alpha, seed=s)
        with_events += len(net.events) > 0
    # family-wise rate per session ~ alpha: binomial(200, 0.05) -> 10 +- 3
    assert 2 <= with_events <= 20, with_events


def test_injected_synchronous_bursts_are_found_exactly():
    rng = np.random.default_rng(2)
    n_roi, n_time = 30, 150
    act = _poisson_raster(rng, n_roi, n_time, 0.03)
    bursts = [30, 75, 120]
    members = rng.random((n_roi, len(bursts))) < 0.7
    for k, f in enumerate(bursts):
        act[:, f] = members[:, k]
    (act,) = _frozen(act)
    net = network_events(act, n_shuffles=500, alpha=0.01, seed=0)
    assert isinstance(net, NetworkEvents)
    assert list(net.events.columns) == list(NETWORK_COLUMNS)
    assert dict(net.events.dtypes.astype(str)) == NETWORK_COLUMNS
    assert net.events["start_frame"].tolist() == bursts
    assert net.events["stop_frame"].tolist() == [f + 1 for f in bursts]
    assert net.events["n_active"].tolist() == members.sum(axis=0).tolist()
    np.testing.assert_allclose(net.participation, members.mean(axis=1))
    assert 0 < net.threshold < members.sum(axis=0).min() / n_roi
    assert net.coactivity.shape == (n_time,) and net.null_max.shape == (500,)
    again = network_events(act, n_shuffles=500, alpha=0.01, seed=0)
    assert again.threshold == net.threshold


def test_bins_and_valid_frames():
    n_roi, n_time = 10, 60
    act = np.zeros((n_roi, n_time), dtype=bool)
    act[:5, 20] = True  # half the ROIs in frame 20 ...
    act[5:, 21] = True  # ... the other half in frame 21: together in a 2-frame bin
    act[:, 3] = True  # in the trimmed frames: ignored
    valid = np.arange(n_time) >= 10
    one = network_events(act, bin_frames=1, valid=valid, n_shuffles=300, alpha=0.05)
    two = network_events(act, bin_frames=2, valid=valid, n_shuffles=300, alpha=0.05)
    assert one.bin_start[0] == 10 and two.bin_start.tolist()[:2] == [10, 12]
    cols = ["start_frame", "stop_frame", "n_bins", "n_active"]
    # two consecutive half-network frames make one network event ...
    assert one.events[cols].values.tolist() == [[20, 22, 2, 10]]
    assert one.events["max_bin_fraction"].tolist() == [0.5]
    # ... and one full-network bin of two frames
    assert two.events[cols].values.tolist() == [[20, 22, 1, 10]]
    assert two.events["max_bin_fraction"].tolist() == [1.0]
    assert two.events["fraction"].tolist() == [1.0]
    everything = network_events(act, n_shuffles=300, alpha=0.05)
    assert everything.events["start_frame"].tolist() == [3, 20]  # trimmed frames count now


def test_no_network_event_and_bad_input():
    act = np.zeros((5, 40), dtype=bool)
    act[0, 10] = True
    net = network_events(act, n_shuffles=50)
    assert net.events.empty and dict(net.events.dtypes.astype(str)) == NETWORK_COLUMNS
    assert np.isnan(net.participation).all()
    with pytest.raises(ValueError, match="alpha must be in"):
        network_events(act, alpha=1.0)
    with pytest.raises(ValueError, match="activity must be boolean"):
        network_events(act * 2.0)
    with pytest.raises(ValueError, match=r"valid must have shape \(40,\)"):
        network_events(act, valid=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="bin_frames must be an integer >= 1"):
        network_events(act, bin_frames=0)


# ------------------------------------------------------------------ correlation and clusters


def test_correlation_matrix_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 100))
    x[:, :10] = np.nan  # trimmed
    (x,) = _frozen(x)
    corr = correlation_matrix(x)
    np.testing.assert_allclose(corr, np.corrcoef(x[:, 10:]), atol=1e-12)
    da = xr.DataArray(x, dims=("roi", "time"),
                      coords={"roi": np.arange(1, 7), "roi_name": ("roi", list("abcdef"))})
    out = correlation_matrix(da)
    assert out.dims == ("roi", "roi_other") and out.attrs["n_frames"] == 90
    assert out["roi_other"].values.tolist() == list(range(1, 7))
    np.testing.assert_allclose(out.values, corr)


def test_correlation_matrix_with_flat_and_empty_rois():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 50))
    x[1] = 2.0
    x[3] = np.nan
    with pytest.warns(CalimWarning, match="2 ROI"):
        corr = correlation_matrix(x)
    assert np.isnan(corr[1]).all() and np.isnan(corr[3]).all()
    assert corr[0, 0] == 1.0
    assert corr[0, 2] == pytest.approx(np.corrcoef(x[0], x[2])[0, 1])


def _two_groups(seed=5, n_time=300):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(2, n_time))
    group = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    x = latent[group] + 0.5 * rng.normal(size=(group.size, n_time))
    return x, group


def test_clustering_recovers_planted_groups():
    x, group = _two_groups()
    corr = correlation_matrix(x)
    labels, order = cluster_rois(corr)
    assert sorted(order.tolist()) == list(range(group.size))
    same = group[:, None] == group[None, :]
    assert ((labels[:, None] == labels[None, :]) == same).all()
    assert labels[order].tolist() == [1] * 4 + [2] * 4  # blocks along the leaf order
    labels2, _ = cluster_rois(corr, n_clusters=2, method="complete")
    assert ((labels2[:, None] == labels2[None, :]) == same).all()
    one, _ = cluster_rois(corr, threshold=2.0)
    assert (one == 1).all()
    assert cluster_rois(np.ones((1, 1)))[0].tolist() == [1]


def test_cluster_rois_errors():
    with pytest.raises(ValueError, match="square"):
        cluster_rois(np.ones((2, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        cluster_rois(np.eye(3), method="ward")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 2\]"):
        cluster_rois(np.eye(3), threshold=3.0)
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 1"):
        cluster_rois(np.eye(3), n_clusters=0)


# ------------------------------------------------------------------ features


def _features_session():
    """3 ROIs, 100 frames (first 10 trimmed): ROI 2 = ROI 1, ROI 3 = -ROI 1 + a little."""
    rng = np.random.default_rng(6)
    n_time, trim = 100, 10
    base = np.clip(rng.normal(0.0, 0.01, n_time), -0.02, 0.02)
    norm = np.vstack([base, base, -base])
    norm[0, [20, 60]] += [0.2, 0.4]
    norm[1, [20, 60]] += [0.2, 0.4]
    norm[2, 40] += 0.3
    norm[:, :trim] = np.nan
    ds = xr.Dataset({"norm": (("roi", "time"), norm),
                     "converged": ("roi", np.array([True, False, True]))},
                    coords={"roi": [1, 2, 3], "roi_name": ("roi", ["r1", "r2", "r3"]),
                            "time": np.arange(n_time) * 1.0,
                            "frame": ("time", np.arange(n_time))})
    ds.attrs = {"experiment": "E", "date": "04-04-23", "session": "230404_9",
                "shift_rms_px": 1.25}
    return ds


def test_session_features_columns_and_known_values():
    ds = _features_session()
    events = detect_events_dataset(ds)
    assert events["frame"].tolist() == [20, 60, 20, 60, 40]
    # by hand: two network events (frames 20 and 60) with ROIs 1 and 2, ROI 3 in neither
    table = pd.DataFrame({"start_frame": [20, 60], "stop_frame": [21, 61], "n_bins": [1, 1],
                          "n_active": [2, 2], "fraction": [2 / 3, 2 / 3],
                          "max_bin_fraction": [2 / 3, 2 / 3]})
    net = NetworkEvents(table, 0.5, np.array([1.0, 1.0, 0.0]), np.zeros(100), np.arange(100),
                        np.zeros(10))
    feats = session_features(ds, events, net)
    assert list(feats.columns) == list(FEATURE_COLUMNS)
    assert dict(feats.dtypes.astype(str)) == FEATURE_COLUMNS
    assert feats["roi"].tolist() == [1, 2, 3]
    assert feats["roi_name"].tolist() == ["r1", "r2", "r3"]
    assert feats["n_events"].tolist() == [2, 2, 1]
    np.testing.assert_allclose(feats["rate_per_min"], np.array([2, 2, 1]) / 1.5)  # 90 s
    first = events[events["roi"] == 1]
    assert feats["mean_amplitude"][0] == pytest.approx(first["amplitude"].mean())
    assert feats["median_amplitude"][0] == pytest.approx(first["amplitude"].median())
    assert feats["mean_duration_s"][0] == pytest.approx(first["duration_s"].mean())
    assert feats["snr"][0] == pytest.approx(first["snr"].median())
    # one noise estimate: the feature is the sigma event detection and its SNR use
    for i in range(3):
        row = ds["norm"].values[i]
        assert feats["noise_sigma"][i] == noise_sigma(row).sigma
        assert feats["noise_sigma"][i] == detect_events(row, time_s=ds["time"].values).attrs[
            "sigma"]
    np.testing.assert_allclose(first["snr"], first["amplitude"] / feats["noise_sigma"][0])
    np.testing.assert_allclose(feats["participation"], [1.0, 1.0, 0.0])
    corr = np.corrcoef(ds["norm"].values[:, 10:])
    np.testing.assert_allclose(feats["mean_corr"], [(corr[0, 1] + corr[0, 2]) / 2,
                                                    (corr[1, 0] + corr[1, 2]) / 2,
                                                    (corr[2, 0] + corr[2, 1]) / 2])
    assert feats["mean_corr"][0] > 0.4 > 0.0 > feats["mean_corr"][2]
    assert feats["cluster"][0] == feats["cluster"][1] != feats["cluster"][2]
    assert feats["converged"].tolist() == [True, False, True]
    assert (feats["shift_rms_px"] == 1.25).all()
    assert (feats[["experiment", "date", "session"]].drop_duplicates().values.tolist()
            == [["E", "04-04-23", "230404_9"]])


def test_session_features_without_optional_information():
    ds = _features_session().drop_vars("converged")
    ds.attrs.pop("shift_rms_px")
    events = detect_events_dataset(ds).iloc[0:0]
    net = network_events(np.zeros((3, 100), dtype=bool), n_shuffles=20)
    feats = session_features(ds, events, net)
    assert feats["n_events"].tolist() == [0, 0, 0]
    assert feats["rate_per_min"].tolist() == [0.0, 0.0, 0.0]
    assert feats["mean_amplitude"].isna().all() and feats["snr"].isna().all()
    assert feats["participation"].isna().all()
    assert feats["converged"].isna().all() and feats["shift_rms_px"].isna().all()
    assert dict(feats.dtypes.astype(str)) == FEATURE_COLUMNS
    with pytest.raises(ValueError, match="one participation value per ROI"):
        session_features(ds, events, net._replace(participation=np.ones(2)))


def test_no_motion_is_zero_not_nan():
    ds = _features_session()
    ds.attrs["shift_rms_px"] = 0.0
    events = detect_events_dataset(ds).iloc[0:0]
    net = network_events(np.zeros((3, 100), dtype=bool), n_shuffles=20)
    assert (session_features(ds, events, net)["shift_rms_px"] == 0.0).all()
