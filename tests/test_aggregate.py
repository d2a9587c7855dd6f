"""Tests of calim_helpers.aggregate: sessions side by side, the SPEC §3 tables."""

from __future__ import annotations

import numpy as np
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


def test_mixed_frame_intervals_warn():
    a = _result(n_roi=2, n_time=40)
    b_tr = traces(n_roi=2, n_time=40, seed=1)
    b_tr = b_tr.assign_coords(time=b_tr["time"] * 2)
    b_tr.attrs["session"] = "230404_9"
    b = correct_traces(b_tr, **ARPLS, normalize="dff", trim_start=0)
    with pytest.warns(CalimWarning, match="different frame intervals"):
        aggregate.experiment_dataset([a, b])


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
