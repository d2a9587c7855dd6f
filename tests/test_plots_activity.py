"""Tests for calim_helpers.plots.activity on synthetic events, matrices and features.

``make_events`` and ``make_features`` are shared with the other ``test_plots_*``
modules.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.collections import EventCollection
from test_plots_movie import TITLE, all_text, frozen, image_data, renders

from calim_helpers.plots import activity


def make_events() -> pd.DataFrame:
    return pd.DataFrame({"roi": [1, 1, 2, 3, 3, 3],
                         "time_s": [1.0, 5.0, 5.2, 0.0, 4.9, 8.0],
                         "duration_s": [1.0, 0.0, 2.0, 0.4, 1.0, 0.0]})


def make_features(n: int = 12, *, experiment: str = "GLUT_DNQX", session: str = "230404_5",
                  rate: float = 2.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_events = rng.poisson(rate * 2.5, n)
    return pd.DataFrame({
        "experiment": experiment, "date": "04-04-23", "session": session,
        "roi": np.arange(1, n + 1), "roi_name": [f"{1000 + k:04d}" for k in range(n)],
        "n_events": n_events, "rate_per_min": n_events / 2.5,
        "mean_amplitude": np.where(n_events > 0, rng.gamma(2, 0.1, n), np.nan),
        "median_amplitude": rng.gamma(2, 0.1, n),
        "mean_duration_s": rng.gamma(3, 0.7, n), "snr": rng.gamma(3, 2, n),
        "participation": rng.uniform(0, 1, n), "mean_corr": rng.uniform(0, 0.5, n),
        "cluster": rng.integers(1, 4, n), "converged": np.arange(n) != 2,
    })


# --------------------------------------------------------------------------- raster


def raster_rows(ax) -> dict[float, np.ndarray]:
    return {c.get_lineoffset(): np.sort(c.get_positions())
            for c in ax.collections if isinstance(c, EventCollection)}


def test_raster_ticks_are_the_event_times_in_order():
    events = make_events()
    before = events.copy()
    order = frozen(np.array([2, 0, 1]))
    network = pd.DataFrame({"start_s": [4.8], "end_s": [5.5]})
    fig = activity.raster_figure(events, 3, frozen(np.arange(10.0)), network=network, order=order,
                           roi_labels=["a", "b", "c"], title=TITLE)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    rows = raster_rows(ax)
    for row, pos in enumerate(order):  # row 0 (top) is ROI order[0] + 1
        expected = np.sort(events.loc[events["roi"] == pos + 1, "time_s"].to_numpy())
        np.testing.assert_array_equal(rows[row], expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c", "a", "b"]
    assert ax.get_ylim() == (2.5, -0.5)  # first row at the top
    assert len(ax.patches) == 1 and len(fig.axes[1].patches) == 1  # network band
    text = all_text(fig)
    assert TITLE in text and "6 events in 3 ROIs" in text and "1 network event" in text
    assert "time (s)" in text and "fraction of\nROIs active" in text
    pd.testing.assert_frame_equal(events, before)
    renders(fig)


def test_raster_population_activity_known_answer():
    # frames at 0..9 s cover [t - 0.5, t + 0.5)
    fig = activity.raster_figure(make_events(), 4, np.arange(10.0))
    line = fig.axes[1].get_lines()[0]
    active = np.zeros((4, 10), dtype=bool)
    active[0, 1:3] = True  # ROI 1: [1, 2] s -> frames 1, 2
    active[0, 5] = True  # ROI 1: 5 s, no duration -> frame 5
    active[1, 5:8] = True  # ROI 2: [5.2, 7.2] s -> frames 5, 6, 7
    active[2, 0] = True  # ROI 3: [0, 0.4] s -> frame 0
    active[2, 5:7] = True  # ROI 3: [4.9, 5.9] s -> frames 5, 6
    active[2, 8] = True  # ROI 3: 8 s -> frame 8
    np.testing.assert_allclose(line.get_ydata(), active.mean(axis=0))
    np.testing.assert_array_equal(line.get_xdata(), np.arange(10.0))


def test_raster_edge_cases():
    empty = pd.DataFrame({"roi": pd.Series([], dtype=int), "time_s": pd.Series([], dtype=float)})
    fig = activity.raster_figure(empty, 3, np.arange(5.0))
    np.testing.assert_array_equal(fig.axes[1].get_lines()[0].get_ydata(), np.zeros(5))
    assert "0 events in 3 ROIs" in all_text(fig)
    renders(fig)
    one = activity.raster_figure(pd.DataFrame({"roi": [1], "time_s": [2.0]}), 1, np.arange(5.0),
                           network=pd.DataFrame({"time_s": [1.5], "duration_s": [1.0]}))
    np.testing.assert_array_equal(raster_rows(one.axes[0])[0.0], [2.0])
    np.testing.assert_array_equal(one.axes[1].get_lines()[0].get_ydata(), [0, 0, 1, 0, 0])
    renders(one)


def test_raster_bad_input():
    t = np.arange(10.0)
    with pytest.raises(ValueError, match="ROI numbers 1..3"):
        activity.raster_figure(pd.DataFrame({"roi": [4], "time_s": [1.0]}), 3, t)
    with pytest.raises(ValueError, match="missing column"):
        activity.raster_figure(pd.DataFrame({"roi": [1]}), 3, t)
    with pytest.raises(ValueError, match="order must be a permutation"):
        activity.raster_figure(make_events(), 3, t, order=[0, 0, 1])
    with pytest.raises(ValueError, match="n_roi must be"):
        activity.raster_figure(make_events(), 0, t)
    with pytest.raises(ValueError, match="roi_labels must have 3"):
        activity.raster_figure(make_events(), 3, t, roi_labels=["a"])
    with pytest.raises(ValueError, match="network must have a column"):
        activity.raster_figure(make_events(), 3, t, network=pd.DataFrame({"x": [1.0]}))


# ---------------------------------------------------------------------- correlation


def make_corr(n: int = 9, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = np.array([2, 1, 3, 1, 2, 3, 1, 2, 3])[:n]
    x = rng.normal(size=(4, 200))[clusters] + rng.normal(size=(n, 200))
    return np.corrcoef(x), clusters


def test_correlation_image_is_the_reordered_matrix():
    corr, clusters = make_corr()
    corr, clusters = frozen(corr), frozen(clusters)
    fig = activity.correlation_figure(corr, clusters=clusters, title=TITLE)
    assert len(fig.axes) == 2  # matrix and colour bar
    ax = fig.axes[0]
    top = ax.child_axes[0]  # cluster names and sizes along the top
    assert [t.get_text() for t in top.get_xticklabels()] == ["1 (3)", "2 (3)", "3 (3)"]
    o = np.argsort(clusters, kind="stable")
    np.testing.assert_array_equal(o, [1, 3, 6, 0, 4, 7, 2, 5, 8])
    np.testing.assert_array_equal(image_data(ax), corr[np.ix_(o, o)])
    assert ax.get_images()[0].get_clim() == (-1, 1)  # centred on 0
    # two boundaries, each drawn as a horizontal and a vertical line
    assert len(ax.get_lines()) == 4
    assert [line.get_xdata()[0] for line in ax.get_lines()[1::2]] == [2.5, 5.5]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i + 1) for i in o]
    text = all_text(fig)
    assert "Pearson r" in text and TITLE in text and "3 clusters" in text
    renders(fig)


def test_correlation_explicit_order_labels_and_one_roi():
    corr, _ = make_corr()
    order = np.arange(9)[::-1]
    fig = activity.correlation_figure(corr, order=order, labels=[f"n{k}" for k in range(9)])
    np.testing.assert_array_equal(image_data(fig.axes[0]), corr[::-1, ::-1])
    assert fig.axes[0].get_xticklabels()[0].get_text() == "n8"
    assert not fig.axes[0].get_lines()  # no clusters, no boundaries
    renders(activity.correlation_figure(np.ones((1, 1)), clusters=[1]))
    with pytest.raises(ValueError, match="corr must be square"):
        activity.correlation_figure(np.ones((2, 3)))
    with pytest.raises(ValueError, match="clusters must have shape"):
        activity.correlation_figure(corr, clusters=[1, 2])


# ------------------------------------------------------------------ cluster heatmap


def test_cluster_heatmap_rows_are_norm_in_order():
    rng = np.random.default_rng(1)
    norm = rng.uniform(0, 0.5, (6, 20))
    norm[:, :3] = np.nan
    norm = frozen(norm)
    clusters = frozen(np.array([1, 2, 1, 3, 2, 1]))
    order = frozen(np.argsort(clusters, kind="stable"))
    fig = activity.cluster_heatmap_figure(norm, np.arange(20) * 2.0, order=order, clusters=clusters,
                                    label="ΔF/F (dff)", title=TITLE)
    ax = fig.axes[0]
    np.testing.assert_array_equal(image_data(ax), norm[order])
    assert ax.get_images()[0].get_clim() == (0.0, 0.5)
    assert len(ax.get_lines()) == 2  # separators between 3 clusters
    text = all_text(fig)
    assert "ΔF/F (dff)" in text and TITLE in text and "6 ROIs in 3 clusters" in text
    assert "1 (3)" in text  # cluster 1 has 3 ROIs
    renders(fig)
    # xarray input in (time, roi) order is transposed
    da = xr.DataArray(norm.T, dims=("time", "roi"))
    fig2 = activity.cluster_heatmap_figure(da, np.arange(20.0), order=order, clusters=clusters)
    np.testing.assert_array_equal(image_data(fig2.axes[0]), norm[order])


def test_cluster_heatmap_bad_input():
    norm = np.zeros((3, 5))
    with pytest.raises(ValueError, match="vmin must be < vmax"):
        activity.cluster_heatmap_figure(norm, np.arange(5.0), order=[0, 1, 2], clusters=[1, 1, 1],
                                  vmin=1.0, vmax=0.5)
    with pytest.raises(ValueError, match="time_s must have 5"):
        activity.cluster_heatmap_figure(norm, np.arange(4.0), order=[0, 1, 2], clusters=[1, 1, 1])
    with pytest.raises(ValueError, match="order must be a permutation"):
        activity.cluster_heatmap_figure(norm, np.arange(5.0), order=[0, 1], clusters=[1, 1, 1])


# ------------------------------------------------------------------ session summary


def test_session_summary_figure():
    features = make_features()
    features.loc[0, "mean_amplitude"] = np.nan
    before = features.copy()
    fig = activity.session_summary_figure(features)
    assert len(fig.axes) == 5
    text = all_text(fig)
    assert "GLUT_DNQX · 04-04-23 · session 230404_5" in text and "12 ROIs" in text
    assert "events / min" in text and "duration (s)" in text and "SNR" in text
    assert "1 failed fits" in text
    amp = fig.axes[1]
    assert "(n = 11 of 12)" in amp.get_title()
    points = amp.collections[0].get_offsets()[:, 1]
    np.testing.assert_allclose(np.sort(points), np.sort(features["mean_amplitude"].dropna()))
    pd.testing.assert_frame_equal(features, before)
    renders(fig)


def test_session_summary_flags_only_failed_fits():
    features = make_features()
    features["converged"] = False  # max_iter reached everywhere ...
    features["fit_status"] = "stable"  # ... but the baselines are stable
    assert "failed fits" not in all_text(activity.session_summary_figure(features))
    features.loc[[2, 5], "fit_status"] = "failed"
    assert "2 failed fits" in all_text(activity.session_summary_figure(features))


def test_session_summary_edge_cases_and_errors():
    one = make_features(1)
    renders(activity.session_summary_figure(one, title="one ROI"))
    none = make_features(4)
    none[["n_events", "rate_per_min"]] = 0
    none["mean_amplitude"] = np.nan
    fig = activity.session_summary_figure(none)
    assert "(n = 0 of 4)" in fig.axes[1].get_title()
    renders(fig)
    two = pd.concat([make_features(3), make_features(3, session="230404_9")])
    with pytest.raises(ValueError, match="one session, got 2"):
        activity.session_summary_figure(two)
    with pytest.raises(ValueError, match="missing column"):
        activity.session_summary_figure(make_features().drop(columns="snr"))


# --------------------------------------------------------------------- time unit


def test_raster_and_cluster_heatmap_in_frames():
    fig = activity.raster_figure(make_events(), 3, np.arange(10.0), time_unit="frame")
    assert fig.axes[1].get_xlabel() == "frame" and "(s)" not in all_text(fig)
    norm = np.zeros((3, 10))
    heat = activity.cluster_heatmap_figure(norm, np.arange(10.0), order=[0, 1, 2],
                                           clusters=[1, 1, 2], time_unit="frame")
    assert heat.axes[0].get_xlabel() == "frame" and "(s)" not in all_text(heat)
    assert activity.cluster_heatmap_figure(norm, np.arange(10.0), order=[0, 1, 2],
                                           clusters=[1, 1, 2]).axes[0].get_xlabel() == "time (s)"
    with pytest.raises(ValueError, match="time_unit must be one of"):
        activity.raster_figure(make_events(), 3, np.arange(10.0), time_unit="min")


def test_session_summary_units_follow_time_unit():
    seconds = all_text(activity.session_summary_figure(make_features()))
    assert "events / min" in seconds and "duration (s)" in seconds
    frames = all_text(activity.session_summary_figure(make_features(), time_unit="frame"))
    assert "events / 60 frames" in frames and "duration (frames)" in frames
    assert "(s)" not in frames and "/ min" not in frames
