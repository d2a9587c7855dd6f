"""Tests of calim_helpers.aggregate: sessions side by side, the SPEC §3 tables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _traces import ARPLS, traces

from calim_helpers import aggregate
from calim_helpers.correction import correct_traces
from calim_helpers.errors import CalimInputError, CalimWarning


def _result(**kw):
    session = kw.pop("session", None)
    tr = traces(**kw)
    if session:
        tr.attrs["session"] = session
    return correct_traces(tr, **ARPLS, normalize="dff", trim_start=3)


def test_experiment_dataset_pads_shorter_sessions_and_names_cells():
    a = _result(n_roi=2, n_time=40)
    b = _result(n_roi=3, n_time=30, seed=1, session="230404_9")
    exp = aggregate.experiment_dataset([a, b])
    assert exp.sizes == {"cell": 5, "time": 40}
    assert list(exp["cell_id"].values) == ["04-04-23_230404_5_ROI1", "04-04-23_230404_5_ROI2",
                                           "04-04-23_230404_9_ROI1", "04-04-23_230404_9_ROI2",
                                           "04-04-23_230404_9_ROI3"]
    assert np.isnan(exp["norm"].values[2:, 30:]).all()
    np.testing.assert_array_equal(exp["norm"].values[2:, :30], b["norm"].values)
    assert exp.attrs["sessions"] == ["04-04-23_230404_5", "04-04-23_230404_9"]
    table = aggregate.tidy_table(exp)
    assert len(table) == 5 * 40
    assert table.loc[table.roi_name == "c1", "session"].nunique() == 2
    one = table[(table.session == "230404_9") & (table.roi == 2)]
    np.testing.assert_array_equal(one["corrected"].to_numpy()[:30], b["corrected"].values[1])


def test_no_result_is_an_error():
    with pytest.raises(CalimInputError, match="no session result"):
        aggregate.experiment_dataset([])


def test_sessions_with_different_frame_intervals_are_counted_in_frames():
    a = _result(n_roi=2, n_time=40, frame_s=0.5)
    b = _result(n_roi=2, n_time=40, seed=1, session="230404_9", frame_s=2.0)
    with pytest.warns(CalimWarning, match=r"different frame intervals \(04-04-23_230404_5: "
                                          r"0.5 s, 04-04-23_230404_9: 2 s\).*frames"):
        exp = aggregate.experiment_dataset([a, b])
    assert exp.attrs["frame_interval_s_downsampled"] is None
    np.testing.assert_allclose(exp["time"], np.arange(40))  # the longest's seconds / 0.5 s
    assert aggregate.time_base([a, b]) == ("frame", [0.5, 2.0])
    assert aggregate.time_base([a, a]) == ("s", [0.5, 0.5])


def test_a_session_without_frame_interval_puts_the_others_in_frames_too():
    a = _result(n_roi=2, n_time=40, frame_s=0.5)  # the longest: its time is converted
    b = _result(n_roi=1, n_time=30, seed=1, session="230404_9")  # counted in frames
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalimWarning)  # nothing to warn: b said it already
        exp = aggregate.experiment_dataset([a, b])
    np.testing.assert_allclose(exp["time"], np.arange(40))
    assert exp.attrs["frame_interval_s_downsampled"] is None
    assert aggregate.time_base([a, b]) == ("frame", [0.5, None])
    assert aggregate.wide_table(exp, "norm")["time_s"].tolist() == list(range(40))


def test_native_frame_interval_from_the_attribute_or_the_block_centres():
    a = _result(n_roi=1, n_time=20, frame_s=1.0)
    # blocks of 10 frames of 0.1 s: the first downsampled frame is centred at 0.45 s
    b = a.assign_coords(time=np.arange(20) * 1.0 + 0.45)
    assert aggregate.native_frame_interval(b) == pytest.approx(0.1)
    assert aggregate.native_frame_interval(a) == pytest.approx(1.0)  # blocks of one frame
    c = b.assign_attrs(frame_interval_s=0.125)
    assert aggregate.native_frame_interval(c) == 0.125
    assert aggregate.native_frame_interval(c.assign_attrs(frame_interval_s=np.nan)) is None
    assert aggregate.native_frame_interval(_result(n_roi=1, n_time=20)) is None


def test_seconds_to_frames_converts_times_durations_rates_and_frequencies():
    t = pd.DataFrame({"roi": [1, 2], "time_s": [0.45, 2.45], "duration_s": [1.0, 2.0],
                      "rate_per_min": [6.0, 3.0], "frequency_hz": [0.5, 0.25],
                      "amplitude": [0.2, 0.3]})
    f = aggregate.seconds_to_frames(t, 0.05)
    np.testing.assert_allclose(f["time_s"], [9.0, 49.0])
    np.testing.assert_allclose(f["duration_s"], [20.0, 40.0])
    np.testing.assert_allclose(f["rate_per_min"], [0.3, 0.15])  # per 60 frames of 0.05 s
    np.testing.assert_allclose(f["frequency_hz"], [0.025, 0.0125])  # per frame
    assert f["amplitude"].tolist() == [0.2, 0.3] and f["roi"].tolist() == [1, 2]
    assert t["time_s"].tolist() == [0.45, 2.45]  # not modified
    with pytest.raises(ValueError, match="interval_s"):
        aggregate.seconds_to_frames(t, 0.0)


def test_wide_table_is_one_column_per_cell_not_running_sums():
    a = _result(n_roi=2, n_time=40)
    b = _result(n_roi=1, n_time=40, seed=2, session="230404_9")
    exp = aggregate.experiment_dataset([a, b])
    wide = aggregate.wide_table(exp, "norm")
    assert list(wide.columns) == ["frame", "time_s", *exp["cell_id"].values]
    np.testing.assert_array_equal(wide["04-04-23_230404_9_ROI1"], b["norm"].values[0])
    np.testing.assert_array_equal(wide["frame"], np.arange(40))


def test_average_trace_equals_a_brute_force_mean():
    a = _result(n_roi=2, n_time=40)
    b = _result(n_roi=3, n_time=30, seed=1, session="230404_9")
    exp = aggregate.experiment_dataset([a, b])
    avg = aggregate.average_trace(exp)
    cells = [a["norm"].values[i] for i in range(2)] + [b["norm"].values[i] for i in range(3)]
    for t in (5, 29, 35):
        values = [c[t] for c in cells if t < c.size and np.isfinite(c[t])]
        assert avg["n_cells"][t] == len(values)
        assert avg["mean"][t] == pytest.approx(np.mean(values), rel=1e-6)
        assert avg["sem"][t] == pytest.approx(np.std(values, ddof=1) / np.sqrt(len(values)),
                                              rel=1e-5)
    assert avg["n_cells"][0] == 0 and np.isnan(avg["mean"][0])  # trimmed frames


def test_cell_summaries():
    a = _result(n_roi=2, n_time=40)
    b = _result(n_roi=3, n_time=40, seed=1, session="230404_9")
    exp = aggregate.experiment_dataset([a, b])
    cells = aggregate.cell_summaries({"E": exp})
    assert len(cells) == 5 and set(cells["session"]) == {"230404_5", "230404_9"}
    assert cells["mean_norm"].iloc[0] == pytest.approx(np.nanmean(a["norm"].values[0]),
                                                       rel=1e-5)
