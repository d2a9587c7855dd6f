"""Tests for calim_helpers.plots.traces on synthetic session Datasets.

``make_session`` (a session Dataset with the pipeline's contract) is shared with the
other ``test_plots_*`` modules.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from test_plots_movie import all_text, renders

from calim_helpers.errors import CalimWarning
from calim_helpers.plots import traces

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


# --------------------------------------------------------------------- ROI figures

ROI_FIGURES = [traces.roi_raw_figure, traces.roi_clean_figure, traces.roi_norm_figure]


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
    fig = traces.roi_raw_figure(ds, 2)
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
    fig = traces.roi_clean_figure(ds, 1)
    (green,) = [ln for ln in fig.axes[0].get_lines() if ln.get_color() == "tab:green"]
    np.testing.assert_array_equal(green.get_ydata(), ds.corrected.values[0])


@pytest.mark.parametrize(("normalize", "name"), [
    ("dff", "ΔF/F"), ("session", "session-normalized"), ("zscore", "z-score")])
def test_roi_norm_figure_names_normalization_and_shades_trim(normalize, name):
    ds = make_session(normalize=normalize, trim_start=7)
    fig = traces.roi_norm_figure(ds, 4)
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
        traces.roi_norm_figure(ds, 1).axes[0].get_title())


@pytest.mark.parametrize("func", ROI_FIGURES)
@pytest.mark.parametrize("bad", [0, 5, "1", 1.0, True])
def test_roi_figures_reject_unknown_roi(func, bad):
    with pytest.raises(ValueError, match="roi must be one of"):
        func(make_session(), bad)


@pytest.mark.parametrize("func", ROI_FIGURES)
def test_session_figures_edge_cases(func):
    ds = make_session(n_roi=1, trim_start=0, not_converged=(1,))
    ds["norm"][:] = np.nan
    ds["raw"][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = func(ds, 1)
    renders(fig)


def test_session_figures_do_not_mutate_input():
    ds = make_session(not_converged=(1,))
    ds["norm"][0] = np.nan
    before = copy.deepcopy(ds)
    for func in ROI_FIGURES:
        func(ds, 1)
    traces.traces_figure(ds)
    xr.testing.assert_identical(ds, before)


# -------------------------------------------------------------------- all traces


def test_traces_figure_plots_every_roi_and_the_background():
    ds = make_session(n_roi=3)
    fig = traces.traces_figure(ds, title="GLUT_DNQX 230404_5")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4  # three ROIs and the background
    for k in range(3):
        np.testing.assert_array_equal(lines[k].get_ydata(), ds.raw.values[k])
        np.testing.assert_array_equal(lines[k].get_xdata(), ds.time.values)
    assert lines[3].get_label() == "background" and lines[3].get_color() == "tab:blue"
    assert "3 ROIs" in ax.get_title() and "GLUT_DNQX 230404_5" in ax.get_title()
    assert ax.get_xlabel() == "time (s)"
    renders(fig)


# --------------------------------------------------------------------- time unit


ALL_FIGURES = [*ROI_FIGURES, lambda ds, roi, **kw: traces.traces_figure(ds, **kw)]


@pytest.mark.parametrize("func", ALL_FIGURES)
def test_time_unit_frame_labels_every_time_axis_frame(func):
    ds = make_session().assign_coords(time=np.arange(60.0))  # interval unknown
    fig = func(ds, 2, time_unit="frame")
    time_axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert time_axes and all(ax.get_xlabel() == "frame" for ax in time_axes)
    assert "(s)" not in all_text(fig) and "time" not in all_text(fig)
    np.testing.assert_array_equal(fig.axes[0].get_lines()[-1].get_xdata(), np.arange(60.0))
    seconds = func(make_session(), 2)
    assert [ax.get_xlabel() for ax in seconds.axes if ax.get_xlabel()][-1] == "time (s)"


@pytest.mark.parametrize("func", ALL_FIGURES)
def test_time_unit_is_checked(func):
    with pytest.raises(ValueError, match="time_unit must be one of"):
        func(make_session(), 1, time_unit="seconds")


def test_coordinate_in_frames_with_time_unit_s_warns():
    ds = make_session()
    ds["time"].attrs["units"] = "frame"
    with pytest.warns(CalimWarning, match="time_unit='s'"):
        traces.roi_norm_figure(ds, 1)
