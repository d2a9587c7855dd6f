"""Tests for calim_helpers.plots.traces on synthetic session Datasets.

``make_session`` (a session Dataset with the pipeline's contract) is shared with the
other ``test_plots_*`` modules.
"""

from __future__ import annotations

import copy
import io
import warnings

import matplotlib as mpl
import numpy as np
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from test_plots_movie import all_text, renders

from calim_helpers.errors import CalimWarning
from calim_helpers.plots import COLORS, traces

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
    failed: tuple[int, ...] = (),
    stable: tuple[int, ...] = (),
    amplitude: float = 0.3,
) -> xr.Dataset:
    """A session Dataset with the pipeline's contract (SPEC §2), synthetic values.

    ``failed`` and ``stable``: ROI numbers whose arPLS fit of ``signal`` reached
    ``max_iter`` (100) and failed, or has a stable baseline.
    """
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
    status = np.full(n_roi, "converged", dtype="<U9")
    change = np.full(n_roi, 3e-6)
    for r in (*failed, *stable):
        converged[r - 1] = False
        n_iter[r - 1] = 100
        status[r - 1] = "failed" if r in failed else "stable"
        change[r - 1] = 0.2 if r in failed else 9.3e-4
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
            "fit_status": ("roi", status),
            "fit_status_raw": ("roi", np.full(n_roi, "converged", dtype="<U9")),
            "weight_change": ("roi", change),
            "weight_change_raw": ("roi", np.full(n_roi, 4e-6)),
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


def _is_red(ax) -> bool:
    """Title and frame in the warning colour."""
    red = mpl.colors.to_rgba(COLORS["warn"])
    return (mpl.colors.to_rgba(ax.title.get_color()) == red
            and all(mpl.colors.to_rgba(sp.get_edgecolor()) == red for sp in ax.spines.values()))


def _grey_notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts
            if mpl.colors.to_rgba(t.get_color()) == mpl.colors.to_rgba("0.45")]


@pytest.mark.parametrize("func", ROI_FIGURES)
def test_roi_figures_red_only_for_a_failed_fit(func):
    ds = make_session(failed=(2,), stable=(3,))
    failed_ax = func(ds, 2).axes[0]
    assert "arPLS (signal) failed (n_iter = 100)" in failed_ax.get_title()
    assert _is_red(failed_ax) and _grey_notes(failed_ax) == []
    stable_fig = func(ds, 3)
    stable_ax = stable_fig.axes[0]
    assert not _is_red(stable_ax) and "arPLS" not in stable_ax.get_title()
    (note,) = _grey_notes(stable_ax)
    assert note == "arPLS (signal): max_iter reached, stable (n_iter = 100, weight change 9.3e-04)"
    renders(stable_fig)
    # the note sits between the axes and the title, clear of both
    renderer = FigureCanvasAgg(stable_fig).get_renderer()
    stable_fig.draw(renderer)
    (text,) = [t for t in stable_ax.texts if t.get_text() == note]
    box, title_box = text.get_window_extent(renderer), stable_ax.title.get_window_extent(renderer)
    assert stable_ax.get_window_extent(renderer).y1 <= box.y0 and box.y1 <= title_box.y0
    ok_ax = func(ds, 1).axes[0]
    assert not _is_red(ok_ax) and _grey_notes(ok_ax) == [] and "arPLS" not in ok_ax.get_title()


def test_roi_norm_figure_flags_raw_fit_for_dff():
    ds = make_session()
    ds["fit_status_raw"][0] = "failed"
    ax = traces.roi_norm_figure(ds, 1).axes[0]
    assert "arPLS (raw) failed (n_iter = 5)" in ax.get_title() and _is_red(ax)
    ds["fit_status_raw"][0] = "stable"
    ax = traces.roi_norm_figure(ds, 1).axes[0]
    assert not _is_red(ax) and _grey_notes(ax)[0].startswith("arPLS (raw): max_iter reached")
    # zscore does not divide by the raw baseline: its fit is not mentioned
    ds.attrs["normalize"] = "zscore"
    assert _grey_notes(traces.roi_norm_figure(ds, 1).axes[0]) == []


def test_roi_figures_of_datasets_without_fit_status():
    # result stores of earlier versions have only converged: not converged reads as failed
    ds = make_session(failed=(2,)).drop_vars(["fit_status", "fit_status_raw"])
    assert _is_red(traces.roi_raw_figure(ds, 2).axes[0])
    assert not _is_red(traces.roi_raw_figure(ds, 1).axes[0])
    bare = ds.drop_vars(["converged", "converged_raw"])
    assert not _is_red(traces.roi_raw_figure(bare, 2).axes[0])


@pytest.mark.parametrize("func", ROI_FIGURES)
@pytest.mark.parametrize("bad", [0, 5, "1", 1.0, True])
def test_roi_figures_reject_unknown_roi(func, bad):
    with pytest.raises(ValueError, match="roi must be one of"):
        func(make_session(), bad)


@pytest.mark.parametrize("func", ROI_FIGURES)
def test_session_figures_edge_cases(func):
    ds = make_session(n_roi=1, trim_start=0, failed=(1,))
    ds["norm"][:] = np.nan
    ds["raw"][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = func(ds, 1)
    renders(fig)


def test_session_figures_do_not_mutate_input():
    ds = make_session(failed=(1,))
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


# ------------------------------------------------------------ one figure, many ROIs

KINDS = {"raw": traces.roi_raw_figure, "clean": traces.roi_clean_figure,
         "norm": traces.roi_norm_figure}
#: ROIs drawn one after the other into the same figure: a failed fit, then a converged
#: one, a stable one, a ROI at 1000 times the scale, one with a NaN start, repeats
ORDER = [2, 1, 3, 4, 5, 2, 6, 4, 1]


def varied_session(normalize: str = "dff") -> xr.Dataset:
    """Six ROIs of different fit statuses, scales and NaN starts."""
    ds = make_session(n_roi=6, normalize=normalize, trim_start=5, failed=(2,), stable=(3, 6))
    for var in ("raw", "signal", "baseline", "corrected", "norm"):
        ds[var][3] = ds[var][3] * 1000  # ROI 4: a y range far from the others'
    for var in ("raw", "signal", "baseline", "corrected"):
        ds[var][4, :12] = np.nan  # ROI 5: starts with NaN
    ds["fit_status_raw"][5] = "stable"  # ROI 6: both fits noted (norm: dff, session)
    return ds


def pixels(fig: Figure, dpi: int = 60) -> np.ndarray:
    """The PNG of ``fig`` (as io.save_figure writes it), decoded to RGBA."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    return mpl.image.imread(buf)


@pytest.mark.parametrize(("kind", "normalize"), [
    ("raw", "dff"), ("clean", "dff"), ("norm", "dff"), ("norm", "session"),
    ("norm", "zscore")])
def test_roi_figure_pages_equal_fresh_figures_pixel_for_pixel(kind, normalize):
    ds = varied_session(normalize)
    pages = traces.roi_figure_pages(ds, kind, rois=ORDER)
    seen = []
    for roi, fig in pages:
        seen.append((roi, fig))
        fresh = pixels(KINDS[kind](ds, roi))
        reused = pixels(fig)
        assert reused.shape == fresh.shape
        assert np.array_equal(reused, fresh), f"{kind} ROI {roi} differs from a fresh figure"
    assert [roi for roi, _ in seen] == ORDER
    assert all(fig is seen[0][1] for _, fig in seen)  # one figure, redrawn


@pytest.mark.parametrize(("kind", "normalize"), [
    ("raw", "dff"), ("clean", "dff"), ("norm", "dff"), ("norm", "session")])
def test_roi_figure_images_equal_fresh_figures_pixel_for_pixel(kind, normalize, tmp_path):
    """Drawn over a kept background: the pixels of a fresh figure's PNG, whatever the ROI
    before (failed and stable fits change the layout, a NaN start the time axis), and
    the same once written by io.save_png."""
    from calim_helpers.io import save_png

    ds = varied_session(normalize)
    seen = []
    for roi, image in traces.roi_figure_images(ds, kind, rois=ORDER, dpi=60):
        seen.append(roi)
        fresh = (pixels(KINDS[kind](ds, roi)) * 255).round().astype(np.uint8)
        assert image.dtype == np.uint8 and image.shape == fresh.shape
        assert np.array_equal(image, fresh), f"{kind} ROI {roi} differs from a fresh figure"
        if len(seen) == 1:
            path = save_png(image, tmp_path / "roi.png", dpi=60)
            assert np.array_equal(mpl.image.imread(path), pixels(KINDS[kind](ds, roi)))
    assert seen == ORDER
    with pytest.raises(ValueError, match="dpi must be a positive number"):
        traces.roi_figure_images(ds, kind, dpi=0)


def _data_ylim(values: list[np.ndarray]) -> tuple[float, float]:
    """Matplotlib's default y limits of lines: the data range with 5 % margins."""
    lo = min(np.nanmin(v) for v in values)
    hi = max(np.nanmax(v) for v in values)
    return lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)


@pytest.mark.parametrize("kind", list(KINDS))
def test_roi_figure_pages_show_each_rois_data_title_and_limits(kind):
    ds = varied_session()
    lines_of = {"raw": [("raw", "background"), ("signal", "baseline")],
                "clean": [("corrected",), ("background",)],
                "norm": [("norm",)]}[kind]
    for roi, fig in traces.roi_figure_pages(ds, kind, rois=ORDER):
        one = ds.sel(roi=roi)
        for ax, names in zip(fig.axes, lines_of, strict=True):
            data = [ln for ln in ax.get_lines() if ln.get_label()[0] != "_"]
            assert len(data) == len(names)
            expected = [np.asarray(one[v].values, dtype=float) for v in names]
            for line, values in zip(data, expected, strict=True):
                np.testing.assert_array_equal(line.get_ydata(), values)
                np.testing.assert_array_equal(line.get_xdata(), ds.time.values)
            if kind != "raw" and ax is fig.axes[0]:
                expected.append(np.zeros(1))  # the zero line is part of the y range
            np.testing.assert_allclose(ax.get_ylim(), _data_ylim(expected), rtol=1e-9)
        top = fig.axes[0]
        assert top.get_title().startswith(f"GLUT_DNQX · 04-04-23 · session 230404_5 · ROI {roi} ")
        assert _is_red(top) == (roi == 2)
        assert ("failed" in top.get_title()) == (roi == 2)
        notes = _grey_notes(top)
        if roi in (3, 6):
            (note,) = notes
            assert note.startswith("arPLS (signal): max_iter reached, stable")
            assert ("arPLS (raw)" in note) == (kind == "norm" and roi == 6)
        else:
            assert notes == []


def test_roi_figure_pages_default_all_rois_frame_unit_and_pdf():
    ds = make_session(n_roi=3).assign_coords(time=np.arange(60.0))
    pages = traces.roi_figure_pages(ds, "clean", time_unit="frame")
    buf = io.BytesIO()
    with PdfPages(buf) as pdf:
        rois = []
        for roi, fig in pages:
            assert fig.axes[-1].get_xlabel() == "frame"
            pdf.savefig(fig)
            rois.append(roi)
        assert pdf.get_pagecount() == 3
    assert rois == [1, 2, 3]
    assert buf.getvalue()[:4] == b"%PDF"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "mask"}, "kind must be one of"),
    ({"kind": "raw", "rois": [1, 9]}, "roi must be one of"),
    ({"kind": "raw", "rois": [True]}, "roi must be one of"),
    ({"kind": "norm", "time_unit": "ms"}, "time_unit must be one of")])
def test_roi_figure_pages_check_arguments_when_called(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(ValueError, match=match):  # raised before any page is drawn
        traces.roi_figure_pages(make_session(), kind, **kwargs)


def test_roi_figure_pages_check_variables_when_called():
    with pytest.raises(ValueError, match=r"missing variable\(s\) \['corrected'\]"):
        traces.roi_figure_pages(make_session().drop_vars("corrected"), "clean")


def test_roi_figure_pages_do_not_mutate_input():
    ds = varied_session()
    ds["raw"].values.setflags(write=False)
    before = copy.deepcopy(ds)
    for kind in KINDS:
        for _ in traces.roi_figure_pages(ds, kind):
            pass
    xr.testing.assert_identical(ds, before)
