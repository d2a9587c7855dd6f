"""Tests of calim_helpers.correction: the SPEC §2 definitions, λ and its cut-off."""

from __future__ import annotations

import numpy as np
import pytest
from _traces import ARPLS, traces
from test_baseline import _walk_with_spikes

from calim_helpers import baseline, io
from calim_helpers.correction import correct_traces, resolve_lam
from calim_helpers.errors import CalimInputError, CalimWarning


@pytest.mark.parametrize("method", ["dff", "session", "zscore"])
def test_correct_traces_follows_the_spec_definitions(method):
    tr = traces()
    out = correct_traces(tr, **ARPLS, normalize=method, trim_start=5)
    raw = tr["raw"].values.astype(float)
    signal = raw - tr["background"].values.astype(float)
    base, _ = baseline.arpls(signal, lam=10.0)
    base_raw, _ = baseline.arpls(raw, lam=10.0)
    np.testing.assert_allclose(out["signal"], signal, rtol=1e-6)
    np.testing.assert_allclose(out["baseline"], base, rtol=1e-5)
    np.testing.assert_allclose(out["corrected"], signal - base, atol=1e-3)
    np.testing.assert_allclose(out["baseline_raw"], base_raw, rtol=1e-5)
    np.testing.assert_allclose(out["dff"][:, 5:], ((signal - base) / base_raw)[:, 5:],
                               atol=1e-6)
    np.testing.assert_allclose(out["dff_raw"][:, 5:], ((raw - base_raw) / base_raw)[:, 5:],
                               atol=1e-6)
    for ratio in ("norm", "dff", "dff_raw"):
        assert np.isnan(out[ratio].values[:, :5]).all(), ratio
    assert np.isfinite(out["corrected"].values).all()
    assert np.isfinite(out["norm"].values[:, 5:]).all()
    if method == "dff":
        np.testing.assert_allclose(out["norm"][:, 5:], out["dff"][:, 5:], rtol=1e-6)
    if method == "session":
        scale = np.median(base_raw[:, 5:].mean(axis=1))
        assert out.attrs["session_scale"] == pytest.approx(scale, rel=1e-6)
        np.testing.assert_allclose(out["norm"][:, 5:], (signal - base)[:, 5:] / scale,
                                   rtol=1e-5)
    assert out.attrs["normalize"] == method and out.attrs["trim_start"] == 5
    assert out.attrs["lam"] == 10.0 and out.attrs["cutoff_s"] is None  # no frame interval
    assert out["converged"].dtype == bool and out["n_iter"].dims == ("roi",)
    assert list(out["roi_name"].values) == ["c0", "c1", "c2"]


def test_transient_survives_and_drift_goes():
    out = correct_traces(traces(), **ARPLS, normalize="dff", trim_start=0)
    corrected = out["corrected"].values
    assert corrected[:, 30:33].mean() > 100  # the transient (150 counts) is kept
    quiet = np.r_[0:25, 40:80]
    assert np.abs(np.median(corrected[:, quiet])) < 5  # the 100-count bleach is gone


def test_input_is_not_modified():
    tr = traces()
    before = tr.copy(deep=True)
    tr["raw"].values.setflags(write=False)
    correct_traces(tr, **ARPLS, normalize="zscore", trim_start=2)
    assert tr.identical(before)


def test_resolve_lam_from_cutoff_records_both():
    lam, cut = resolve_lam(lam=10.0, cutoff_s=None, frame_interval_s=1.0)
    assert lam == 10.0 and cut == pytest.approx(baseline.cutoff_from_lam(10.0, 1.0))
    lam, cut = resolve_lam(lam=10.0, cutoff_s=30.0, frame_interval_s=1.0)
    assert cut == 30.0 and lam == pytest.approx(baseline.lam_from_cutoff(30.0, 1.0))
    lam, cut = resolve_lam(lam=10.0, cutoff_s=None, frame_interval_s=None)
    assert lam == 10.0 and np.isnan(cut)
    with pytest.raises(CalimInputError, match="cutoff_s needs a known frame interval"):
        resolve_lam(lam=10.0, cutoff_s=30.0, frame_interval_s=None)


def test_cutoff_sets_lam_on_the_stored_time_base():
    tr = traces(frame_s=0.5)
    out = correct_traces(tr, **(ARPLS | {"cutoff_s": 20.0}), normalize="dff", trim_start=0)
    assert out.attrs["cutoff_s"] == 20.0
    assert out.attrs["lam"] == pytest.approx(baseline.lam_from_cutoff(20.0, 0.5))
    ref, _ = baseline.arpls(tr["raw"].values.astype(float) - tr["background"].values,
                            lam=out.attrs["lam"])
    np.testing.assert_allclose(out["baseline"], ref, rtol=1e-5)


def test_fit_status_per_roi_for_signal_and_raw(tmp_path):
    # ROI 1: bleach + noise; ROI 2: a random walk whose arPLS weights oscillate (the
    # trace pinned in test_baseline; its fit of raw reaches max_iter but is stable);
    # ROI 3: all NaN (e.g. a ROI outside the frame), which has no baseline at all
    tr = traces(n_roi=3, n_time=150)
    raw = tr["raw"].values.copy()
    raw[1] = _walk_with_spikes(4) + 300.0
    raw[2] = np.nan
    tr["raw"][:] = raw
    with pytest.warns(CalimWarning, match="baseline_raw"):
        out = correct_traces(tr, **ARPLS, normalize="dff", trim_start=0)
    for name in ("fit_status", "fit_status_raw", "weight_change", "weight_change_raw"):
        assert out[name].dims == ("roi",), name
    status_raw = out["fit_status_raw"].values.tolist()
    assert status_raw[1:] == ["stable", "failed"]
    assert status_raw[0] in ("converged", "stable")
    assert out["fit_status"].values[2] == "failed"
    assert not out["converged_raw"].values[1] and out["n_iter_raw"].values[1] == 100
    assert out["weight_change_raw"].values[1] > 1e-5  # tol not reached ...
    assert np.isnan(out["weight_change_raw"].values[2])
    # ... and the same numbers as arpls on the two traces the step fits
    signal = raw - tr["background"].values.astype(np.float64)
    for fitted, suffix in ((signal, ""), (raw, "_raw")):
        _, info = baseline.arpls(fitted[:2], lam=10.0)
        np.testing.assert_array_equal(out[f"fit_status{suffix}"].values[:2], info["status"])
        np.testing.assert_allclose(out[f"weight_change{suffix}"].values[:2],
                                   info["weight_change"], rtol=1e-9)
    # the strings survive the result store
    back = io.open_store(io.write_store(out, tmp_path / "result.zarr")).load()
    assert back["fit_status_raw"].values.tolist() == status_raw
