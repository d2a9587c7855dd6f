"""Tests for calim_helpers.figures on synthetic session and experiment Datasets."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from calim_helpers import figures
from calim_helpers.errors import CalimWarning

DT = 2.0  # s per downsampled frame


def make_session(
    *,
    experiment: str = "GLUT_DNQX",
    date: str = "04-04-23",
    session: str = "230404_5",
    n_roi: int = 4,
    n_time: int = 60,
    normalize: str = "dff",
    trim_start: int = 5,
    seed: int = 0,
    not_converged: tuple[int, ...] = (),
    amplitude: float = 0.3,
) -> xr.Dataset:
    """A session Dataset with the pipeline's contract (SPEC §2), synthetic values."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time) * DT
    background = 300 + 20 * np.exp(-t / 60) + rng.normal(0, 1, n_time)
    level = rng.uniform(50, 200, (n_roi, 1))
    transient = np.zeros((n_roi, n_time))
    for k in range(n_roi):  # three calcium transients of ~ΔF/F = amplitude per ROI
        for onset in rng.integers(0, n_time, 3):
            size = amplitude * rng.uniform(0.5, 1.5) * (300 + level[k, 0])
            transient[k, onset:] += size * np.exp(-(t[onset:] - t[onset]) / 10)
    drift = level * (1 + 0.2 * np.exp(-t / 80))
    raw = background + drift + transient + rng.normal(0, 2, (n_roi, n_time))
    signal = raw - background
    baseline = drift
    corrected = signal - baseline
    baseline_raw = background + drift
    dff = corrected / baseline_raw
    dff_raw = (raw - baseline_raw) / baseline_raw
    norm = dff.copy()
    norm[:, :trim_start] = np.nan
    converged = np.ones(n_roi, dtype=bool)
    n_iter = np.full(n_roi, 7)
    for r in not_converged:
        converged[r - 1] = False
        n_iter[r - 1] = 100
    f32 = np.float32
    rt = ("roi", "time")
    return xr.Dataset(
        {
            "raw": (rt, raw.astype(f32)),
            "signal": (rt, signal.astype(f32)),
            "baseline": (rt, baseline.astype(f32)),
            "corrected": (rt, corrected.astype(f32)),
            "baseline_raw": (rt, baseline_raw.astype(f32)),
            "dff": (rt, dff.astype(f32)),
            "dff_raw": (rt, dff_raw.astype(f32)),
            "norm": (rt, norm.astype(f32)),
            "background": ("time", background.astype(f32)),
            "converged": ("roi", converged),
            "n_iter": ("roi", n_iter),
            "converged_raw": ("roi", np.ones(n_roi, dtype=bool)),
            "n_iter_raw": ("roi", np.full(n_roi, 5)),
        },
        coords={
            "roi": np.arange(1, n_roi + 1),
            "roi_name": ("roi", [f"{1000 + 7 * k:04d}-0{k}" for k in range(n_roi)]),
            "time": t,
            "frame": ("time", np.arange(n_time)),
        },
        attrs={
            "experiment": experiment, "date": date, "session": session, "lam": 10.0,
            "cutoff_s": 12.0, "normalize": normalize, "trim_start": trim_start, "seed": 0,
            "background_fraction": 0.1, "n_background_pixels": 8000,
            "session_scale": 123.0,
        },
    )


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


def renders(fig: Figure) -> None:
    for fmt in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
        assert buf.getvalue()[:4] in (b"\x89PNG", b"%PDF")


def all_text(fig: Figure) -> str:
    texts = [fig.get_suptitle()] if fig.get_suptitle() else []
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend():
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return "\n".join(texts)


def image_rows(ax) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(ax.get_images()[0].get_array(), dtype=float), np.nan)


# --------------------------------------------------------------------- ROI figures

ROI_FIGURES = [figures.roi_raw_figure, figures.roi_clean_figure, figures.roi_norm_figure]


@pytest.mark.parametrize(("func", "n_axes"), list(zip(ROI_FIGURES, [2, 2, 1], strict=True)))
def test_roi_figures_axes_titles_render(func, n_axes):
    ds = make_session()
    fig = func(ds, 3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    title = fig.axes[0].get_title()
    for part in ("GLUT_DNQX", "04-04-23", "230404_5", "ROI 3", str(ds.roi_name.values[2])):
        assert part in title
    assert "did not converge" not in title
    assert "time (s)" in all_text(fig)
    renders(fig)


def test_roi_raw_figure_plots_the_four_traces():
    ds = make_session()
    fig = figures.roi_raw_figure(ds, 2)
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    got = {ln.get_label(): ln.get_ydata() for ln in lines}
    one = ds.sel(roi=2)
    np.testing.assert_array_equal(got["ROI (raw)"], one.raw.values)
    np.testing.assert_array_equal(got["background"], one.background.values)
    np.testing.assert_array_equal(got["ROI − background"], one.signal.values)
    np.testing.assert_array_equal(got["arPLS baseline (λ = 10)"], one.baseline.values)
    styles = {ln.get_label(): (ln.get_color(), ln.get_linestyle()) for ln in lines}
    assert styles["ROI (raw)"][0] == "tab:red"
    assert styles["background"][0] == "tab:blue"
    assert styles["arPLS baseline (λ = 10)"] == ("black", "--")


def test_roi_clean_figure_is_green_corrected():
    ds = make_session()
    fig = figures.roi_clean_figure(ds, 1)
    (green,) = [ln for ln in fig.axes[0].get_lines() if ln.get_color() == "tab:green"]
    np.testing.assert_array_equal(green.get_ydata(), ds.corrected.values[0])


@pytest.mark.parametrize(("normalize", "name"), [
    ("dff", "ΔF/F"), ("session", "session-normalized"), ("zscore", "z-score")])
def test_roi_norm_figure_names_normalization_and_shades_trim(normalize, name):
    ds = make_session(normalize=normalize, trim_start=7)
    fig = figures.roi_norm_figure(ds, 4)
    ax = fig.axes[0]
    assert name in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "trimmed (first 7 frames)" in labels
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "normalized"]
    np.testing.assert_array_equal(line.get_ydata(), ds.norm.values[3])
    renders(fig)


@pytest.mark.parametrize("func", ROI_FIGURES)
def test_roi_figures_mark_non_converged(func):
    ds = make_session(not_converged=(2,))
    title = func(ds, 2).axes[0].get_title()
    assert "arPLS (signal) did not converge (n_iter = 100)" in title
    assert "did not converge" not in func(ds, 1).axes[0].get_title()


def test_roi_norm_figure_flags_raw_fit_for_dff():
    ds = make_session()
    ds["converged_raw"][0] = False
    assert "arPLS (raw) did not converge (n_iter = 5)" in (
        figures.roi_norm_figure(ds, 1).axes[0].get_title())


@pytest.mark.parametrize("func", ROI_FIGURES)
@pytest.mark.parametrize("bad", [0, 5, "1", 1.0, True])
def test_roi_figures_reject_unknown_roi(func, bad):
    with pytest.raises(ValueError, match="roi must be one of"):
        func(make_session(), bad)


@pytest.mark.parametrize("func", [*ROI_FIGURES, figures.qc_session_figure])
def test_session_figures_edge_cases(func):
    ds = make_session(n_roi=1, trim_start=0, not_converged=(1,))
    ds["norm"][:] = np.nan
    ds["raw"][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = func(ds) if func is figures.qc_session_figure else func(ds, 1)
    renders(fig)


def test_session_figures_do_not_mutate_input():
    ds = make_session(not_converged=(1,))
    ds["norm"][0] = np.nan
    before = copy.deepcopy(ds)
    for func in ROI_FIGURES:
        func(ds, 1)
    figures.qc_session_figure(ds)
    xr.testing.assert_identical(ds, before)


def test_qc_session_figure():
    ds = make_session(not_converged=(1, 3))
    fig = figures.qc_session_figure(ds)
    assert len(fig.axes) == 3
    assert "230404_5" in fig.get_suptitle() and "GLUT_DNQX" in fig.get_suptitle()
    conv = fig.axes[0]
    heights = [p.get_height() for p in conv.patches]
    assert heights == [2, 4, 2, 0]  # converged (signal, raw), not converged (signal, raw)
    red = [t.get_text() for t in fig.axes[2].get_xticklabels() if t.get_color() == "tab:red"]
    assert red == ["1", "3"]
    renders(fig)


# ------------------------------------------------------------------------ heatmap


def test_heatmap_rows_grouped_by_session_and_session_means():
    exp = three_sessions()
    # interleave two sessions: the figure must regroup them (stable within a session)
    order = [0, 4, 1, 5, 2, 6, 3, 7, 8, 9, 10, 11]
    exp = exp.isel(cell=order)
    fig = figures.heatmap_figure(exp)
    ax_cells, ax_sess, cbar = fig.axes
    assert len(fig.axes) == 3
    sessions = exp.session.values
    grouped = [i for s in ("230404_5", "230404_9", "230405_2")
               for i in range(exp.sizes["cell"]) if sessions[i] == s]
    norm = exp.norm.values.astype(float)
    np.testing.assert_array_equal(image_rows(ax_cells), norm[grouped])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.stack([np.nanmean(norm[sessions == s], axis=0)
                          for s in ("230404_5", "230404_9", "230405_2")])
    np.testing.assert_allclose(image_rows(ax_sess), means, equal_nan=True)
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
    fig = figures.heatmap_figure(exp, vmin=-1.0, vmax=3.0, cmap="magma")
    im = fig.axes[0].get_images()[0]
    assert im.get_clim() == (-1.0, 3.0)
    assert im.get_cmap().name.startswith("magma")
    assert "z-score" in fig.axes[2].get_ylabel()
    with pytest.raises(ValueError, match="vmin must be < vmax"):
        figures.heatmap_figure(exp, vmin=1.0, vmax=1.0)
    with pytest.raises(ValueError, match="dims 'cell' and 'time'"):
        figures.heatmap_figure(make_session())


def test_heatmap_same_session_name_on_two_dates_stays_apart():
    exp = make_experiment([make_session(date="04-04-23", session="s1", seed=1),
                           make_session(date="05-04-23", session="s1", seed=2)])
    fig = figures.heatmap_figure(exp)
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [
        "04-04-23 s1", "05-04-23 s1"]


# ------------------------------------------------------------------------ hist_cum


def test_hist_cum_lines_are_nanmean_over_cells():
    exp = three_sessions()
    fig = figures.hist_cum_figure(exp)
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
    fig = figures.comparison_figure({"GLUT_DNQX": a, "GLUT_CTRL": b})
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
    fig = figures.comparison_figure({"empty": one})
    assert "empty\n(n = 0 of 1)" in all_text(fig)
    renders(fig)
    with pytest.raises(ValueError, match="at least one experiment"):
        figures.comparison_figure({})
    z = three_sessions(normalize="zscore")
    with pytest.warns(CalimWarning, match="normalized differently"):
        figures.comparison_figure({"a": three_sessions(), "z": z})


# ------------------------------------------------------------- experiment edge cases


@pytest.mark.parametrize("func", [figures.heatmap_figure, figures.hist_cum_figure])
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
    figures.heatmap_figure(exp)
    figures.hist_cum_figure(exp)
    figures.comparison_figure({"a": exp, "b": other})
    xr.testing.assert_identical(exp, before)
    xr.testing.assert_identical(other, before_other)


def test_heatmap_read_only_input():
    exp = three_sessions()
    exp["norm"].values.setflags(write=False)
    renders(figures.heatmap_figure(exp))
    renders(figures.hist_cum_figure(exp))
