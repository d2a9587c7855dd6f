"""Tests for calim_helpers.plots.experiment: experiment Datasets and feature tables."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from scipy import stats as sps
from test_plots_activity import make_features
from test_plots_movie import all_text, image_data, renders
from test_plots_traces import DT, make_session

from calim_helpers import stats
from calim_helpers.errors import CalimWarning
from calim_helpers.plots import experiment


def make_experiment(sessions: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate sessions along ``cell`` as the pipeline does (NaN-padded time)."""
    n_time = max(s.sizes["time"] for s in sessions)
    time = np.arange(n_time) * DT
    variables = ["raw", "signal", "baseline", "corrected", "baseline_raw", "dff", "dff_raw",
                 "norm"]
    parts = []
    for s in sessions:
        a, n, names = s.attrs, s.sizes["roi"], s.roi_name.values.tolist()
        s = s[variables].drop_vars(["time", "frame", "roi", "roi_name"])
        s = s.pad(time=(0, n_time - s.sizes["time"])).rename(roi="cell")
        parts.append(s.assign_coords(
            cell_id=("cell", [f"{a['date']}_{a['session']}_ROI{k}" for k in range(1, n + 1)]),
            date=("cell", [a["date"]] * n),
            session=("cell", [a["session"]] * n),
            roi=("cell", np.arange(1, n + 1)),
            roi_name=("cell", names),
        ).astype(np.float32))
    exp = xr.concat(parts, dim="cell", combine_attrs="drop")
    exp = exp.assign_coords(time=time, frame=("time", np.arange(n_time)))
    exp.attrs = {k: sessions[0].attrs[k] for k in ("experiment", "normalize", "trim_start")}
    return exp


def three_sessions(**kw) -> xr.Dataset:
    return make_experiment([
        make_session(session="230404_5", seed=1, **kw),
        make_session(session="230404_9", seed=2, n_roi=3, **kw),
        make_session(date="05-04-23", session="230405_2", seed=3, n_roi=5, n_time=50, **kw),
    ])


# ------------------------------------------------------------------------ heatmap


def test_heatmap_rows_grouped_by_session_and_session_means():
    exp = three_sessions()
    # interleave two sessions: the figure must regroup them (stable within a session)
    order = [0, 4, 1, 5, 2, 6, 3, 7, 8, 9, 10, 11]
    exp = exp.isel(cell=order)
    fig = experiment.heatmap_figure(exp)
    ax_cells, ax_sess, cbar = fig.axes
    assert len(fig.axes) == 3
    sessions = exp.session.values
    grouped = [i for s in ("230404_5", "230404_9", "230405_2")
               for i in range(exp.sizes["cell"]) if sessions[i] == s]
    norm = exp.norm.values.astype(float)
    np.testing.assert_array_equal(image_data(ax_cells), norm[grouped])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.stack([np.nanmean(norm[sessions == s], axis=0)
                          for s in ("230404_5", "230404_9", "230405_2")])
    np.testing.assert_allclose(image_data(ax_sess), means, equal_nan=True)
    ticks = [t.get_text() for t in ax_cells.get_yticklabels()]
    assert ticks == ["230404_5 (4)", "230404_9 (3)", "230405_2 (5)"]
    assert [t.get_text() for t in ax_sess.get_yticklabels()] == [
        "230404_5", "230404_9", "230405_2"]
    assert "GLUT_DNQX" in ax_cells.get_title()
    assert "ΔF/F" in cbar.get_ylabel()
    assert ax_sess.get_xlabel() == "time (s)"
    im = ax_cells.get_images()[0]
    assert im.get_clim() == (0.0, 0.5)
    # separators between the three sessions
    assert len(ax_cells.get_lines()) == 2 and len(ax_sess.get_lines()) == 2
    renders(fig)


def test_heatmap_options_and_validation():
    exp = three_sessions(normalize="zscore")
    fig = experiment.heatmap_figure(exp, vmin=-1.0, vmax=3.0, cmap="magma")
    im = fig.axes[0].get_images()[0]
    assert im.get_clim() == (-1.0, 3.0)
    assert im.get_cmap().name.startswith("magma")
    assert "z-score" in fig.axes[2].get_ylabel()
    with pytest.raises(ValueError, match="vmin must be < vmax"):
        experiment.heatmap_figure(exp, vmin=1.0, vmax=1.0)
    with pytest.raises(ValueError, match="dims 'cell' and 'time'"):
        experiment.heatmap_figure(make_session())


def test_heatmap_same_session_name_on_two_dates_stays_apart():
    exp = make_experiment([make_session(date="04-04-23", session="s1", seed=1),
                           make_session(date="05-04-23", session="s1", seed=2)])
    fig = experiment.heatmap_figure(exp)
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [
        "04-04-23 s1", "05-04-23 s1"]


# ------------------------------------------------------------------------ hist_cum


def test_hist_cum_lines_are_nanmean_over_cells():
    exp = three_sessions()
    fig = experiment.hist_cum_figure(exp)
    assert len(fig.axes) == 3
    avg, before, after = fig.axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = {v: np.nanmean(exp[v].values.astype(float), axis=0)
                    for v in ("norm", "dff_raw", "dff")}
    for ax, var in ((avg, "norm"), (before, "dff_raw"), (after, "dff")):
        (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("mean")]
        np.testing.assert_allclose(line.get_ydata(), expected[var], equal_nan=True)
        np.testing.assert_array_equal(line.get_xdata(), exp.time.values)
    assert np.isnan(avg.get_lines()[1].get_ydata()[: exp.attrs["trim_start"]]).all()
    assert before.get_ylim() == after.get_ylim()  # same y scale
    assert "ΔF/F" in avg.get_ylabel()
    assert "GLUT_DNQX" in fig.get_suptitle() and "12 cells" in fig.get_suptitle()
    assert "before" in before.get_title() and "after" in after.get_title()
    renders(fig)


# ---------------------------------------------------------------------- comparison


def test_comparison_figure():
    a = three_sessions()
    b = make_experiment([make_session(experiment="GLUT_CTRL", seed=9, n_roi=6)])
    b.attrs["experiment"] = "GLUT_CTRL"
    fig = experiment.comparison_figure({"GLUT_DNQX": a, "GLUT_CTRL": b})
    assert len(fig.axes) == 3
    traces, mean_ax, peak_ax = fig.axes
    text = all_text(fig)
    assert "GLUT_DNQX (n = 12 cells)" in text and "GLUT_CTRL (n = 6 cells)" in text
    assert "GLUT_DNQX\n(n = 12)" in text and "ΔF/F" in traces.get_ylabel()
    lines = [ln for ln in traces.get_lines() if ln.get_label().startswith("GLUT")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(lines[0].get_ydata(),
                                   np.nanmean(a.norm.values.astype(float), axis=0),
                                   equal_nan=True)
        trim = a.attrs["trim_start"]
        per_cell = np.nanmean(a.norm.values[:, trim:].astype(float), axis=1)
        peak = np.nanpercentile(a.norm.values[:, trim:].astype(float), 95, axis=1)
    pts = mean_ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.sort(pts[:, 1]), np.sort(per_cell), rtol=1e-6)
    np.testing.assert_allclose(np.sort(peak_ax.collections[0].get_offsets()[:, 1]),
                               np.sort(peak), rtol=1e-6)
    renders(fig)


def test_comparison_figure_edge_cases():
    one = make_experiment([make_session(n_roi=1)])
    one["norm"][:] = np.nan
    fig = experiment.comparison_figure({"empty": one})
    assert "empty\n(n = 0 of 1)" in all_text(fig)
    renders(fig)
    with pytest.raises(ValueError, match="at least one experiment"):
        experiment.comparison_figure({})
    z = three_sessions(normalize="zscore")
    with pytest.warns(CalimWarning, match="normalized differently"):
        experiment.comparison_figure({"a": three_sessions(), "z": z})


# ------------------------------------------------------------- experiment edge cases


@pytest.mark.parametrize("func", [experiment.heatmap_figure, experiment.hist_cum_figure])
def test_experiment_figures_single_session_single_roi_all_nan(func):
    exp = make_experiment([make_session(n_roi=1, trim_start=0)])
    exp["norm"][:] = np.nan
    exp["dff"][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = func(exp)
    renders(fig)


def test_experiment_figures_do_not_mutate_inputs():
    exp = three_sessions()
    exp["norm"][1] = np.nan
    other = three_sessions(normalize="dff")
    before, before_other = copy.deepcopy(exp), copy.deepcopy(other)
    experiment.heatmap_figure(exp)
    experiment.hist_cum_figure(exp)
    experiment.comparison_figure({"a": exp, "b": other})
    xr.testing.assert_identical(exp, before)
    xr.testing.assert_identical(other, before_other)


def test_heatmap_read_only_input():
    exp = three_sessions()
    exp["norm"].values.setflags(write=False)
    renders(experiment.heatmap_figure(exp))
    renders(experiment.hist_cum_figure(exp))


# --------------------------------------------------------------------- time unit


@pytest.mark.parametrize("func", [experiment.heatmap_figure, experiment.hist_cum_figure,
                                  lambda e, **kw: experiment.comparison_figure({"a": e}, **kw)])
def test_time_unit_frame_labels_every_time_axis_frame(func):
    exp = three_sessions()
    exp = exp.assign_coords(time=np.arange(exp.sizes["time"], dtype=float))
    fig = func(exp, time_unit="frame")
    xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert xlabels and all(label == "frame" for label in xlabels)
    assert "(s)" not in all_text(fig)
    seconds = func(three_sessions())
    assert "time (s)" in [ax.get_xlabel() for ax in seconds.axes]
    with pytest.raises(ValueError, match="time_unit must be one of"):
        func(exp, time_unit="ms")


# ---------------------------------------------------------------- condition summary


def by_experiment(n: int = 3) -> dict[str, pd.DataFrame]:
    """Conditions of one session each (cell-level comparisons)."""
    names = ["CTRL", "GLUT_DNQX", "TTX"][:n]
    return {name: make_features(10 + 3 * k, experiment=name, rate=1 + 2 * k, seed=k)
            for k, name in enumerate(names)}


def with_sessions(sizes=(2, 3, 4)) -> dict[str, pd.DataFrame]:
    """Conditions holding ``sizes`` sessions of 15 cells each."""
    out = {}
    for c, (name, n_sess) in enumerate(zip(["CTRL", "GLUT_DNQX", "TTX"], sizes, strict=False)):
        out[name] = pd.concat([make_features(15, experiment=name, session=f"23040{c}_{j}",
                                             rate=1.0 + c, seed=10 * c + j)
                               for j in range(n_sess)], ignore_index=True)
    return out


def sessions_of_one_experiment(n: int) -> dict[str, pd.DataFrame]:
    return {f"04-04-23_230404_{k}": make_features(20, session=f"230404_{k}", seed=k,
                                                   rate=1 + 0.2 * k)
            for k in range(1, n + 1)}


def tick_overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of x tick labels whose rendered boxes overlap (Agg canvas)."""
    FigureCanvasAgg(fig).draw()
    bad = []
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes = [t.get_window_extent() for t in labels]
        bad += [(labels[i].get_text(), labels[j].get_text())
                for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                if boxes[i].overlaps(boxes[j])]
        width = fig.bbox.width
        assert all(b.x0 >= 0 and b.x1 <= width for b in boxes)  # inside the figure
    return bad


def test_condition_summary_figure_cell_unit():
    groups = by_experiment(3)
    copies = {k: v.copy() for k, v in groups.items()}
    fig = experiment.condition_summary_figure(groups, unit="cell")
    assert len(fig.axes) == 3
    res = stats.condition_tests(groups, unit="cell")
    for ax, (_, row) in zip(fig.axes, res.iterrows(), strict=True):
        assert "Kruskal–Wallis" in ax.get_title()
        assert experiment._format_p(row["p_value"]) in ax.get_title()
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == [f"{name}\n({row[f'n_{name}']} cells)" for name in groups]
        assert ax.get_xlabel() == "experiment"
    title = fig.get_suptitle()
    assert "CTRL, GLUT_DNQX, TTX" in title and "3 experiments" in title
    assert "test unit: cell" in title and "not independent" in title
    for k in groups:
        pd.testing.assert_frame_equal(groups[k], copies[k])
    renders(fig)

    two = experiment.condition_summary_figure(by_experiment(2), metrics=["snr"], unit="cell")
    assert len(two.axes) == 1 and "Mann–Whitney: U =" in two.axes[0].get_title()
    single = experiment.condition_summary_figure(by_experiment(1), unit="cell")
    assert all("n/a" in ax.get_title() for ax in single.axes)
    renders(single)
    with pytest.raises(ValueError, match="metrics must name"):
        experiment.condition_summary_figure(by_experiment(2), metrics=[])


def test_condition_summary_session_unit_draws_the_session_medians():
    groups = with_sessions()
    fig = experiment.condition_summary_figure(groups, metrics=["rate_per_min"])
    ax = fig.axes[0]
    medians = {name: np.array([np.median(g.loc[g["session"] == s, "rate_per_min"])
                               for s in g["session"].unique()]) for name, g in groups.items()}
    diamonds = [c for c in ax.collections
                if isinstance(c, PathCollection) and c.get_sizes().max() > 30]
    assert len(diamonds) == 3
    for c, name in zip(diamonds, groups, strict=True):
        np.testing.assert_allclose(np.sort(c.get_offsets()[:, 1]), np.sort(medians[name]))
    ref = sps.kruskal(*medians.values())
    assert f"H = {ref.statistic:.3g}" in ax.get_title()
    assert experiment._format_p(ref.pvalue) in ax.get_title()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "CTRL\n(2 sessions\n30 cells)"
    assert "test unit: session" in fig.get_suptitle()
    assert "session median (the samples tested)" in all_text(fig)
    renders(fig)


def test_condition_summary_reports_why_a_test_is_not_computable():
    fig = experiment.condition_summary_figure(with_sessions((2, 1)), metrics=["snr"])
    title = fig.axes[0].get_title()
    assert "test n/a" in title and "GLUT_DNQX has 1 session" in title


@pytest.mark.parametrize("n", [4, 8, 12])
def test_sessions_summary_tick_labels_do_not_overlap(n):
    fig = experiment.condition_summary_figure(sessions_of_one_experiment(n),
                                              group_label="session")
    assert tick_overlaps(fig) == []
    title = fig.get_suptitle()
    assert title.startswith(f"Sessions side by side: {n} sessions")
    assert "experiment" not in title and "test unit: cell" in title
    assert all(ax.get_xlabel() == "session" for ax in fig.axes)
    renders(fig)


def test_long_group_names_are_rotated_rather_than_overlapping():
    long = {f"GLUTDNQXplusCNQXplusAPV{k}": t  # nowhere to wrap
            for k, t in enumerate(sessions_of_one_experiment(8).values())}
    fig = experiment.condition_summary_figure(long, metrics=["snr"], group_label="session")
    assert tick_overlaps(fig) == []
    assert {t.get_rotation() for t in fig.axes[0].get_xticklabels()} == {90.0}


def test_condition_summary_draws_given_tests():
    groups = with_sessions()
    tests = stats.condition_tests(groups, metrics=["rate_per_min"])
    tests.loc[0, ["statistic", "p_value"]] = [4.56, 0.0123]  # drawn, not recomputed
    fig = experiment.condition_summary_figure(groups, metrics=["rate_per_min"], tests=tests)
    assert "H = 4.56, p = 0.012" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="unit"):
        experiment.condition_summary_figure(groups, metrics=["rate_per_min"], tests=tests,
                                            unit="cell")
    with pytest.raises(ValueError, match="no row for metric"):
        experiment.condition_summary_figure(groups, metrics=["snr"], tests=tests)
    with pytest.raises(ValueError, match="unit must be one of"):
        experiment.condition_summary_figure(groups, unit="roi")


def test_condition_summary_units_follow_time_unit():
    fig = experiment.condition_summary_figure(by_experiment(2), unit="cell",
                                              metrics=["rate_per_min", "mean_duration_s"],
                                              time_unit="frame")
    text = all_text(fig)
    assert "events / 60 frames" in text and "duration (frames)" in text and "(s)" not in text
