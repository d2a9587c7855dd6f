"""Tests for calim_helpers.plots.qc: the QC page of a session and the fit QC."""

from __future__ import annotations

import copy
import warnings

import matplotlib as mpl
import numpy as np
import pytest
import xarray as xr
from matplotlib import patheffects
from test_plots_movie import TITLE, all_text, frozen, image_data, make_image, make_shifts, renders
from test_plots_traces import make_session

from calim_helpers.plots import COLORS, qc


def make_qc(n_roi: int = 4):
    image = make_image((48, 64))
    labels = np.zeros(image.shape, dtype=np.int32)
    for k in range(1, n_roi + 1):
        labels[5:12, 12 * k - 8:12 * k - 2] = k
    status = np.full(n_roi, "converged", dtype="<U9")
    status[1:2] = "failed"  # ROI 2 (if any)
    status[2:3] = "stable"  # ROI 3 (if any): max_iter reached, baseline stable
    snr = np.linspace(1.0, 8.0, n_roi)  # ROI 1 below the threshold 3
    background = xr.DataArray(300 + np.arange(30.0), dims="time",
                              coords={"time": np.arange(30) * 2.0})
    return image, labels, status, snr, background


def _summary(fig) -> dict[str, str]:
    """Summary box lines -> their colour (hex)."""
    return {t.get_text(): mpl.colors.to_hex(t.get_color()) for t in fig.axes[4].texts}


def test_qc_figure_flags_rois_and_counts():
    image, labels, status, snr, background = make_qc()
    shifts = make_shifts(60)
    bad = np.zeros(60, dtype=bool)
    bad[30] = True
    args = [frozen(image), frozen(labels), shifts, background, frozen(status),
            frozen(snr)]
    fig = qc.qc_figure(*args, bad_frames=bad, title=TITLE)
    assert len(fig.axes) == 5
    mip, sh, bg, bars, summary = fig.axes
    colors = {t.get_text(): t.get_color() for t in mip.texts}
    # ROI 1: low SNR; ROI 2: failed fit; ROI 3 reached max_iter with a stable baseline
    assert colors == {"1": "red", "2": "red", "3": "yellow", "4": "yellow"}
    (outlines,) = mip.collections  # one outline per ROI, in ROI order
    assert len(outlines.get_paths()) == 4
    assert [mpl.colors.to_hex(c) for c in outlines.get_edgecolor()] == [
        "#ff0000", "#ff0000", "#ffff00", "#ffff00"]
    np.testing.assert_array_equal(image_data(mip), image)
    np.testing.assert_array_equal(bg.get_lines()[0].get_ydata(), background)
    np.testing.assert_array_equal([p.get_height() for p in bars.patches[:4]], snr)
    bar_colors = [mpl.colors.to_hex(p.get_facecolor()) for p in bars.patches[:4]]
    assert bar_colors[2] == bar_colors[3] != bar_colors[1] == bar_colors[0]
    ticks = {t.get_text(): mpl.colors.to_hex(t.get_color()) for t in bars.get_xticklabels()}
    red = mpl.colors.to_hex(COLORS["warn"])
    assert ticks["2"] == red and red not in (ticks["1"], ticks["3"], ticks["4"])
    assert bars.get_lines()[0].get_ydata()[0] == 3.0
    text = all_text(fig)
    assert TITLE in text
    assert "SNR < 3: 1" in text and "flagged ROIs: 2" in text
    assert "bad frames: 1" in text and "max |shift|" in text
    lines = _summary(fig)
    assert lines["failed fits: 1"] == red and lines["  ROI 2"] == red
    grey = mpl.colors.to_hex("0.45")
    assert lines["max_iter reached, stable: 1"] == lines["  ROI 3"] == grey
    renders(fig)


def test_qc_figure_counts_both_fits_and_reads_booleans():
    image, labels, status, snr, background = make_qc()
    raw = np.array(["failed", "converged", "stable", "stable"])
    snr = np.full(4, 10.0)
    fig = qc.qc_figure(image, labels, None, background, status, snr, fit_status_raw=raw)
    text = all_text(fig)
    lines = _summary(fig)
    assert "arPLS fits, signal/raw:" in lines
    assert lines["failed fits: 1/1"] == mpl.colors.to_hex(COLORS["warn"])
    assert lines["max_iter reached, stable: 1/2"] == mpl.colors.to_hex("0.45")
    assert lines["  ROI 1, 2"] == mpl.colors.to_hex(COLORS["warn"])
    assert lines["  ROI 3, 4"] == mpl.colors.to_hex("0.45")
    colors = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colors == {"1": "red", "2": "red", "3": "yellow", "4": "yellow"}
    assert "flagged ROIs: 2" in text
    # converged as earlier versions passed it: not converged reads as failed
    fig = qc.qc_figure(image, labels, None, background, status == "converged", snr)
    colors = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colors == {"1": "yellow", "2": "red", "3": "red", "4": "yellow"}
    assert "failed fits: 2" in all_text(fig)


def test_qc_figure_without_shifts_one_roi_and_errors():
    image, labels, converged, snr, background = make_qc(1)
    fig = qc.qc_figure(image, labels, None, background.values, converged, snr,
                       time_unit="frame")
    assert "not motion-corrected" in all_text(fig)
    assert fig.axes[2].get_xlabel() == "frame"  # plain array: frame index
    np.testing.assert_array_equal(fig.axes[2].get_lines()[0].get_xdata(), np.arange(30))
    renders(fig)
    with pytest.raises(ValueError, match="labels must be an int image"):
        qc.qc_figure(image, labels[:-1], None, background, converged, snr)
    with pytest.raises(ValueError, match="labels holds ROI numbers up to 1"):
        qc.qc_figure(image, labels, None, background, np.ones(0, bool), np.ones(0))
    with pytest.raises(ValueError, match="fit_status must hold converged, stable, failed"):
        qc.qc_figure(image, labels, None, background, np.ones(2, bool), snr)
    with pytest.raises(ValueError, match="fit_status must hold"):
        qc.qc_figure(image, labels, None, background, np.array(["ok"]), snr)
    with pytest.raises(ValueError, match="fit_status_raw must hold"):
        qc.qc_figure(image, labels, None, background, converged, snr,
                     fit_status_raw=np.array([1.0]))
    with pytest.raises(ValueError, match="bad_frames needs shifts"):
        qc.qc_figure(image, labels, None, background, converged, snr,
                     bad_frames=np.zeros(30, bool))
    with pytest.raises(ValueError, match="background has no time coordinate"):
        qc.qc_figure(image, labels, None, background.values, converged, snr)
    with pytest.raises(ValueError, match="shifts has no time coordinate"):
        qc.qc_figure(image, labels, make_shifts().values, background, converged, snr)


def test_qc_session_figure():
    ds = make_session(failed=(1,), stable=(3, 4))
    ds["fit_status_raw"][1] = "failed"
    fig = qc.qc_session_figure(ds)
    assert len(fig.axes) == 3
    assert "230404_5" in fig.get_suptitle() and "GLUT_DNQX" in fig.get_suptitle()
    conv = fig.axes[0]
    heights = [p.get_height() for p in conv.patches]
    # (signal, raw) for converged, stable, failed
    assert heights == [1, 3, 2, 0, 1, 1]
    colors = [mpl.colors.to_hex(p.get_facecolor()) for p in conv.patches]
    assert colors[4] == colors[5] == mpl.colors.to_hex(COLORS["warn"])
    assert mpl.colors.to_hex(COLORS["warn"]) not in colors[:4]
    labels = [t.get_text() for t in conv.get_legend().get_texts()]
    assert labels == ["converged", "max_iter reached, stable", "failed"]
    red = [t.get_text() for t in fig.axes[2].get_xticklabels() if t.get_color() == "tab:red"]
    assert red == ["1", "2"]  # failed fit of signal (1) or of raw (2); not the stable 3, 4
    renders(fig)


def test_qc_session_figure_of_a_dataset_without_fit_status():
    ds = make_session(failed=(1,), stable=(3,)).drop_vars(["fit_status", "fit_status_raw"])
    fig = qc.qc_session_figure(ds)
    assert [p.get_height() for p in fig.axes[0].patches] == [2, 4, 0, 0, 2, 0]
    with pytest.raises(ValueError, match="lacks a fit status"):
        qc.qc_session_figure(ds.drop_vars("converged"))


def test_qc_figure_roi_numbers_have_a_halo():
    image, labels, converged, snr, background = make_qc()
    fig = qc.qc_figure(image, labels, make_shifts(60), background, converged, snr)
    texts = fig.axes[0].texts
    assert sorted(t.get_text() for t in texts) == ["1", "2", "3", "4"]
    for t in texts:
        assert any(isinstance(e, patheffects.withStroke) for e in t.get_path_effects())
        rows, cols = np.nonzero(labels == int(t.get_text()))
        assert t.get_position() == pytest.approx((cols.mean(), rows.mean()))


def test_qc_figure_one_time_axis_in_seconds():
    image, labels, converged, snr, background = make_qc()
    shifts = make_shifts(240).assign_coords(time=np.arange(240) * 0.25)  # native 4 Hz
    fig = qc.qc_figure(image, labels, shifts, background, converged, snr)
    _, sh, bg, _, _ = fig.axes
    assert sh.get_xlabel() == bg.get_xlabel() == "time (s)"
    assert sh.get_xlim() == bg.get_xlim()  # shifts and background line up in time
    assert sh.get_xlim()[0] < 0 < 58 < sh.get_xlim()[1]
    text = all_text(fig)
    assert "frame" not in text.replace("bad frames", "")


def test_qc_figure_time_unit_frame_never_says_seconds():
    image, labels, converged, snr, background = make_qc()
    frames = background.assign_coords(time=np.arange(30) * 10.0 + 4.5)  # block centres
    shifts = make_shifts(300).assign_coords(time=np.arange(300.0))
    bad = np.zeros(300, dtype=bool)
    bad[100] = True
    fig = qc.qc_figure(image, labels, shifts, frames, converged, snr, bad_frames=bad,
                       time_unit="frame")
    _, sh, bg, _, _ = fig.axes
    assert sh.get_xlabel() == bg.get_xlabel() == "frame"
    assert "(s)" not in all_text(fig)
    np.testing.assert_array_equal(bg.get_lines()[0].get_xdata(), frames["time"])
    renders(fig)


def test_qc_session_figure_time_unit():
    ds = make_session().assign_coords(time=np.arange(60.0))
    fig = qc.qc_session_figure(ds, time_unit="frame")
    assert fig.axes[1].get_xlabel() == "frame" and "(s)" not in all_text(fig)
    assert qc.qc_session_figure(make_session()).axes[1].get_xlabel() == "time (s)"


def test_qc_session_figure_edge_cases_and_no_mutation():
    ds = make_session(n_roi=1, trim_start=0, failed=(1,))
    ds["norm"][:] = np.nan
    ds["raw"][:] = np.nan
    before = copy.deepcopy(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = qc.qc_session_figure(ds)
    renders(fig)
    xr.testing.assert_identical(ds, before)


def test_one_absurd_snr_does_not_flatten_the_others():
    """A noise of ~0 (e.g. a trace of a few frames) gives a huge SNR: the axis keeps the
    other bars readable and that bar is labelled with its value."""
    image, labels, status, _, background = make_qc()
    snr = np.array([5.0, 1e14, 2.0, 6.0])
    fig = qc.qc_figure(image, labels, None, background, status, snr)
    (ax,) = [a for a in fig.axes if a.get_ylabel() == "SNR"]
    assert ax.get_ylim()[1] == pytest.approx(1.45 * 6.0)
    assert [t.get_text() for t in ax.texts] == ["↑1e+14"]
    fig = qc.qc_figure(image, labels, None, background, status, np.array([5.0, 7, 2, 6]))
    (ax,) = [a for a in fig.axes if a.get_ylabel() == "SNR"]
    assert ax.get_ylim()[1] == pytest.approx(1.45 * 7) and not ax.texts
    renders(fig)
