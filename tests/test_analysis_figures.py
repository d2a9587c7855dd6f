"""Tests for calim_helpers.analysis_figures on synthetic data with known answers."""

from __future__ import annotations

import io

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.collections import EventCollection
from matplotlib.figure import Figure
from scipy import ndimage, stats

from calim_helpers import analysis_figures as af

TITLE = "GLUT_DNQX · 04-04-23 · session 230404_5"


# ------------------------------------------------------------------------ helpers


def renders(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    for fmt, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        assert buf.getvalue()[:4] == magic


def all_text(fig: Figure) -> str:
    texts = [fig.get_suptitle()] if fig.get_suptitle() else []
    texts += [t.get_text() for t in fig.texts]
    for ax in [*fig.axes, *(c for a in fig.axes for c in a.child_axes)]:
        if hasattr(ax, "get_title"):  # not on secondary axes
            texts += [ax.get_title(loc) for loc in ("left", "center", "right")]
        texts += [ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        texts += [t.get_text() for t in ax.texts]
        if ax.get_legend():
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(texts)


def image_data(ax) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(ax.get_images()[0].get_array(), dtype=float), np.nan)


def frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def make_shifts(n: int = 50, *, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(0, 0.2, (n, 2)), axis=0)
    values[n // 2:] += [2.0, -1.0]  # a motion jump
    return xr.DataArray(values, dims=("time", "axis"),
                        coords={"time": np.arange(n) * 0.5, "axis": ["dy", "dx"]})


def make_image(shape=(64, 80), *, blur: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.full(shape, 100.0)
    for cy, cx in rng.uniform(6, min(shape) - 6, (12, 2)):
        img += 500 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6)
    return ndimage.gaussian_filter(img, blur) if blur else img


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


# --------------------------------------------------------------------------- shifts


def test_shifts_figure_plots_inputs_and_marks_bad_frames():
    shifts = make_shifts()
    before = shifts.copy(deep=True)
    bad = np.zeros(shifts.sizes["time"], dtype=bool)
    bad[[3, 25, 26]] = True
    fig = af.shifts_figure(shifts, bad=frozen(bad), title=TITLE)
    assert len(fig.axes) == 2
    ax, bx = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["dy (rows)"].get_ydata(), shifts.sel(axis="dy"))
    np.testing.assert_array_equal(lines["dx (columns)"].get_xdata(), shifts["time"])
    mag = [line for line in bx.get_lines() if line.get_label() == "|shift|"][0]
    np.testing.assert_allclose(mag.get_ydata(), np.hypot(shifts[:, 0], shifts[:, 1]))
    assert len(ax.patches) == 2  # runs of bad frames: [3] and [25, 26]
    text = all_text(fig)
    assert TITLE in text and "time (s)" in text and "shift (px)" in text
    assert "bad frames (3)" in text
    xr.testing.assert_identical(shifts, before)
    renders(fig)


def test_shifts_figure_numpy_input_uses_frames_and_axis_order():
    values = frozen(np.column_stack([np.arange(5.0), -np.arange(5.0)]))
    fig = af.shifts_figure(values)
    ax = fig.axes[0]
    assert ax.get_lines()[1].get_label() == "dy (rows)"
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), values[:, 0])
    assert fig.axes[1].get_xlabel() == "frame"
    # an axis coordinate in another order is reordered to (dy, dx)
    da = xr.DataArray(values[:, ::-1], dims=("time", "axis"), coords={"axis": ["dx", "dy"]})
    np.testing.assert_array_equal(
        af.shifts_figure(da).axes[0].get_lines()[1].get_ydata(), values[:, 0])


def test_shifts_figure_bad_input():
    with pytest.raises(ValueError, match="shifts must have shape"):
        af.shifts_figure(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="bad must be boolean"):
        af.shifts_figure(np.zeros((5, 2)), bad=np.zeros(4, dtype=bool))


# --------------------------------------------------------------------- registration


def test_registration_figure_shows_images_and_sharpness_gain():
    sharp = frozen(make_image())
    blurred = frozen(make_image(blur=2.0))
    assert af._gradient_energy(sharp) > 2 * af._gradient_energy(blurred)
    fig = af.registration_figure(blurred, sharp, title=TITLE)
    assert len(fig.axes) == 7  # six panels and a colour bar
    keys = ["before", "after", "after − before", "zoom_before", "zoom_after", "profile"]
    axes = dict(zip(keys, fig.axes, strict=False))
    np.testing.assert_array_equal(image_data(axes["before"]), blurred)
    np.testing.assert_array_equal(image_data(axes["after"]), sharp)
    np.testing.assert_allclose(image_data(axes["after − before"]), sharp - blurred)
    text = all_text(fig)
    assert TITLE in text and "x (pixel)" in text and "after − before (counts)" in text
    assert f"sharpness {af._gradient_energy(sharp):.3g}" in text
    assert "(+" in axes["after"].get_title()  # the gain is positive
    renders(fig)


def test_registration_figure_bad_input():
    with pytest.raises(ValueError, match="must have one shape"):
        af.registration_figure(np.ones((10, 12)), np.ones((10, 11)))
    with pytest.raises(ValueError, match="mean_before must be 2-D"):
        af.registration_figure(np.ones(10), np.ones(10))


# --------------------------------------------------------------------------- raster


def raster_rows(ax) -> dict[float, np.ndarray]:
    return {c.get_lineoffset(): np.sort(c.get_positions())
            for c in ax.collections if isinstance(c, EventCollection)}


def test_raster_ticks_are_the_event_times_in_order():
    events = make_events()
    before = events.copy()
    order = frozen(np.array([2, 0, 1]))
    network = pd.DataFrame({"start_s": [4.8], "end_s": [5.5]})
    fig = af.raster_figure(events, 3, frozen(np.arange(10.0)), network=network, order=order,
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
    fig = af.raster_figure(make_events(), 4, np.arange(10.0))
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
    fig = af.raster_figure(empty, 3, np.arange(5.0))
    np.testing.assert_array_equal(fig.axes[1].get_lines()[0].get_ydata(), np.zeros(5))
    assert "0 events in 3 ROIs" in all_text(fig)
    renders(fig)
    one = af.raster_figure(pd.DataFrame({"roi": [1], "time_s": [2.0]}), 1, np.arange(5.0),
                           network=pd.DataFrame({"time_s": [1.5], "duration_s": [1.0]}))
    np.testing.assert_array_equal(raster_rows(one.axes[0])[0.0], [2.0])
    np.testing.assert_array_equal(one.axes[1].get_lines()[0].get_ydata(), [0, 0, 1, 0, 0])
    renders(one)


def test_raster_bad_input():
    t = np.arange(10.0)
    with pytest.raises(ValueError, match="ROI numbers 1..3"):
        af.raster_figure(pd.DataFrame({"roi": [4], "time_s": [1.0]}), 3, t)
    with pytest.raises(ValueError, match="missing column"):
        af.raster_figure(pd.DataFrame({"roi": [1]}), 3, t)
    with pytest.raises(ValueError, match="order must be a permutation"):
        af.raster_figure(make_events(), 3, t, order=[0, 0, 1])
    with pytest.raises(ValueError, match="n_roi must be"):
        af.raster_figure(make_events(), 0, t)
    with pytest.raises(ValueError, match="roi_labels must have 3"):
        af.raster_figure(make_events(), 3, t, roi_labels=["a"])
    with pytest.raises(ValueError, match="network must have a column"):
        af.raster_figure(make_events(), 3, t, network=pd.DataFrame({"x": [1.0]}))


# ---------------------------------------------------------------------- correlation


def make_corr(n: int = 9, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = np.array([2, 1, 3, 1, 2, 3, 1, 2, 3])[:n]
    x = rng.normal(size=(4, 200))[clusters] + rng.normal(size=(n, 200))
    return np.corrcoef(x), clusters


def test_correlation_image_is_the_reordered_matrix():
    corr, clusters = make_corr()
    corr, clusters = frozen(corr), frozen(clusters)
    fig = af.correlation_figure(corr, clusters=clusters, title=TITLE)
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
    fig = af.correlation_figure(corr, order=order, labels=[f"n{k}" for k in range(9)])
    np.testing.assert_array_equal(image_data(fig.axes[0]), corr[::-1, ::-1])
    assert fig.axes[0].get_xticklabels()[0].get_text() == "n8"
    assert not fig.axes[0].get_lines()  # no clusters, no boundaries
    renders(af.correlation_figure(np.ones((1, 1)), clusters=[1]))
    with pytest.raises(ValueError, match="corr must be square"):
        af.correlation_figure(np.ones((2, 3)))
    with pytest.raises(ValueError, match="clusters must have shape"):
        af.correlation_figure(corr, clusters=[1, 2])


# ------------------------------------------------------------------ cluster heatmap


def test_cluster_heatmap_rows_are_norm_in_order():
    rng = np.random.default_rng(1)
    norm = rng.uniform(0, 0.5, (6, 20))
    norm[:, :3] = np.nan
    norm = frozen(norm)
    clusters = frozen(np.array([1, 2, 1, 3, 2, 1]))
    order = frozen(np.argsort(clusters, kind="stable"))
    fig = af.cluster_heatmap_figure(norm, np.arange(20) * 2.0, order=order, clusters=clusters,
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
    fig2 = af.cluster_heatmap_figure(da, np.arange(20.0), order=order, clusters=clusters)
    np.testing.assert_array_equal(image_data(fig2.axes[0]), norm[order])


def test_cluster_heatmap_bad_input():
    norm = np.zeros((3, 5))
    with pytest.raises(ValueError, match="vmin must be < vmax"):
        af.cluster_heatmap_figure(norm, np.arange(5.0), order=[0, 1, 2], clusters=[1, 1, 1],
                                  vmin=1.0, vmax=0.5)
    with pytest.raises(ValueError, match="time_s must have 5"):
        af.cluster_heatmap_figure(norm, np.arange(4.0), order=[0, 1, 2], clusters=[1, 1, 1])
    with pytest.raises(ValueError, match="order must be a permutation"):
        af.cluster_heatmap_figure(norm, np.arange(5.0), order=[0, 1], clusters=[1, 1, 1])


# ------------------------------------------------------------------ session summary


def test_session_summary_figure():
    features = make_features()
    features.loc[0, "mean_amplitude"] = np.nan
    before = features.copy()
    fig = af.session_summary_figure(features)
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


def test_session_summary_edge_cases_and_errors():
    one = make_features(1)
    renders(af.session_summary_figure(one, title="one ROI"))
    none = make_features(4)
    none[["n_events", "rate_per_min"]] = 0
    none["mean_amplitude"] = np.nan
    fig = af.session_summary_figure(none)
    assert "(n = 0 of 4)" in fig.axes[1].get_title()
    renders(fig)
    two = pd.concat([make_features(3), make_features(3, session="230404_9")])
    with pytest.raises(ValueError, match="one session, got 2"):
        af.session_summary_figure(two)
    with pytest.raises(ValueError, match="missing column"):
        af.session_summary_figure(make_features().drop(columns="snr"))


# ---------------------------------------------------------------- condition summary


def by_experiment(n: int = 3) -> dict[str, pd.DataFrame]:
    names = ["CTRL", "GLUT_DNQX", "TTX"][:n]
    return {name: make_features(10 + 3 * k, experiment=name, rate=1 + 2 * k, seed=k)
            for k, name in enumerate(names)}


def test_condition_tests_match_scipy():
    two = by_experiment(2)
    two["CTRL"].loc[0, "rate_per_min"] = np.nan  # dropped
    res = af.condition_tests(two)
    assert list(res["metric"]) == ["rate_per_min", "mean_amplitude", "participation"]
    for _, row in res.iterrows():
        a, b = (g[row["metric"]].dropna().to_numpy() for g in two.values())
        ref = stats.mannwhitneyu(a, b, alternative="two-sided")
        assert row["test"] == "mannwhitney"
        assert row["statistic"] == pytest.approx(ref.statistic)
        assert row["p_value"] == pytest.approx(ref.pvalue)
        assert (row["n_CTRL"], row["n_GLUT_DNQX"]) == (a.size, b.size)
    assert res.loc[0, "n_CTRL"] == 9

    three = by_experiment(3)
    res3 = af.condition_tests(three, metrics=["rate_per_min", "snr"])
    for _, row in res3.iterrows():
        ref = stats.kruskal(*(g[row["metric"]].dropna() for g in three.values()))
        assert row["test"] == "kruskal"
        assert row["p_value"] == pytest.approx(ref.pvalue)
        assert row["statistic"] == pytest.approx(ref.statistic)
        assert row["groups"] == "CTRL vs GLUT_DNQX vs TTX"
    # one table with an experiment column gives the same result
    pooled = pd.concat(list(three.values()), ignore_index=True)
    pd.testing.assert_frame_equal(af.condition_tests(pooled, metrics=["rate_per_min", "snr"]),
                                  res3)
    # Kruskal–Wallis on two experiments when asked
    k2 = af.condition_tests(two, metrics=["snr"], test="kruskal")
    assert k2.loc[0, "p_value"] == pytest.approx(
        stats.kruskal(*(g["snr"] for g in two.values())).pvalue)


def test_condition_tests_edge_cases_and_errors():
    one = af.condition_tests(by_experiment(1))
    assert (one["test"] == "n/a").all() and one["p_value"].isna().all()
    empty = by_experiment(2)
    empty["GLUT_DNQX"]["participation"] = np.nan  # no value left -> not testable
    res = af.condition_tests(empty, metrics=["participation"])
    assert res.loc[0, "test"] == "n/a" and res.loc[0, "n_GLUT_DNQX"] == 0
    with pytest.raises(ValueError, match="compares 2 experiments, got 3"):
        af.condition_tests(by_experiment(3), test="mannwhitney")
    with pytest.raises(ValueError, match="test must be one of"):
        af.condition_tests(by_experiment(2), test="ttest")
    with pytest.raises(ValueError, match="missing column"):
        af.condition_tests(by_experiment(2), metrics=["nope"])
    with pytest.raises(ValueError, match="at least one experiment"):
        af.condition_tests({})


def test_condition_summary_figure():
    groups = by_experiment(3)
    copies = {k: v.copy() for k, v in groups.items()}
    fig = af.condition_summary_figure(groups)
    assert len(fig.axes) == 3
    res = af.condition_tests(groups)
    for ax, (_, row) in zip(fig.axes, res.iterrows(), strict=True):
        assert "Kruskal–Wallis" in ax.get_title()
        assert af._format_p(row["p_value"]) in ax.get_title()
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [f"{name}\n(n = {row[f'n_{name}']})" for name in groups]
    assert "CTRL, GLUT_DNQX, TTX" in fig.get_suptitle()
    for k in groups:
        pd.testing.assert_frame_equal(groups[k], copies[k])
    renders(fig)

    two = af.condition_summary_figure(by_experiment(2), metrics=["snr"])
    assert len(two.axes) == 1 and "Mann–Whitney: U =" in two.axes[0].get_title()
    single = af.condition_summary_figure(by_experiment(1))
    assert all("n/a" in ax.get_title() for ax in single.axes)
    renders(single)
    with pytest.raises(ValueError, match="metrics must name"):
        af.condition_summary_figure(by_experiment(2), metrics=[])


# ---------------------------------------------------------------------- QC figure


def make_qc(n_roi: int = 4):
    image = make_image((48, 64))
    labels = np.zeros(image.shape, dtype=np.int32)
    for k in range(1, n_roi + 1):
        labels[5:12, 12 * k - 8:12 * k - 2] = k
    converged = np.ones(n_roi, dtype=bool)
    converged[1:2] = False  # ROI 2 (if any) failed
    snr = np.linspace(1.0, 8.0, n_roi)  # ROI 1 below the threshold 3
    background = xr.DataArray(300 + np.arange(30.0), dims="time",
                              coords={"time": np.arange(30) * 2.0})
    return image, labels, converged, snr, background


def test_qc_figure_flags_rois_and_counts():
    image, labels, converged, snr, background = make_qc()
    shifts = make_shifts(60)
    bad = np.zeros(60, dtype=bool)
    bad[30] = True
    args = [frozen(image), frozen(labels), shifts, background, frozen(converged),
            frozen(snr)]
    fig = af.qc_figure(*args, bad_frames=bad, title=TITLE)
    assert len(fig.axes) == 5
    mip, sh, bg, bars, summary = fig.axes
    colors = {t.get_text(): t.get_color() for t in mip.texts}
    assert colors == {"1": "red", "2": "red", "3": "yellow", "4": "yellow"}
    outlines = [mpl.colors.to_hex(c.get_edgecolor()[0]) for c in mip.collections]
    assert outlines == ["#ff0000", "#ff0000", "#ffff00", "#ffff00"]
    np.testing.assert_array_equal(image_data(mip), image)
    np.testing.assert_array_equal(bg.get_lines()[0].get_ydata(), background)
    np.testing.assert_array_equal([p.get_height() for p in bars.patches[:4]], snr)
    assert bars.get_lines()[0].get_ydata()[0] == 3.0
    text = all_text(fig)
    assert TITLE in text
    assert "failed fits: 1" in text and "SNR < 3: 1" in text and "flagged ROIs: 2" in text
    assert "bad frames: 1" in text and "max |shift|" in text
    renders(fig)


def test_qc_figure_without_shifts_one_roi_and_errors():
    image, labels, converged, snr, background = make_qc(1)
    fig = af.qc_figure(image, labels, None, background.values, converged, snr)
    assert "not motion-corrected" in all_text(fig)
    assert fig.axes[2].get_xlabel() == "frame"  # plain array: frame index
    renders(fig)
    with pytest.raises(ValueError, match="labels must be an int image"):
        af.qc_figure(image, labels[:-1], None, background, converged, snr)
    with pytest.raises(ValueError, match="labels holds ROI numbers up to 1"):
        af.qc_figure(image, labels, None, background, np.ones(0, bool), np.ones(0))
    with pytest.raises(ValueError, match="converged must be boolean"):
        af.qc_figure(image, labels, None, background, np.ones(2, bool), snr)
    with pytest.raises(ValueError, match="bad_frames needs shifts"):
        af.qc_figure(image, labels, None, background, converged, snr,
                     bad_frames=np.zeros(30, bool))
