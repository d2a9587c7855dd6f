"""Tests for calim_helpers.plots.movie (projections, motion correction, ROI overlay).

The generic helpers here (``renders``, ``all_text``, ``image_data``, ``frozen``,
``make_shifts``, ``make_image``) are shared with the other ``test_plots_*`` modules.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from calim_helpers.plots import movie

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


def drawn(fig: Figure) -> Figure:
    """Draw ``fig`` on an Agg canvas so that text extents are the rendered ones."""
    FigureCanvasAgg(fig).draw()
    return fig


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


# --------------------------------------------------------------------------- load


def test_load_figure_shows_both_images():
    mip, mean = frozen(make_image((40, 60))), frozen(make_image((20, 30), seed=1))
    fig = movie.load_figure(mip, mean, title=TITLE)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(image_data(fig.axes[0]), mip)
    np.testing.assert_array_equal(image_data(fig.axes[1]), mean)
    text = all_text(fig)
    assert "native 40 x 60" in text and "downsampled 20 x 30" in text and TITLE in text
    renders(fig)


# --------------------------------------------------------------------------- shifts


def test_shifts_figure_plots_inputs_and_marks_bad_frames():
    shifts = make_shifts()
    before = shifts.copy(deep=True)
    bad = np.zeros(shifts.sizes["time"], dtype=bool)
    bad[[3, 25, 26]] = True
    fig = movie.shifts_figure(shifts, bad=frozen(bad), title=TITLE)
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
    fig = movie.shifts_figure(values, time_unit="frame")
    ax = fig.axes[0]
    assert ax.get_lines()[1].get_label() == "dy (rows)"
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), values[:, 0])
    np.testing.assert_array_equal(ax.get_lines()[1].get_xdata(), np.arange(5.0))
    assert fig.axes[1].get_xlabel() == "frame"
    # an axis coordinate in another order is reordered to (dy, dx)
    da = xr.DataArray(values[:, ::-1], dims=("time", "axis"), coords={"axis": ["dx", "dy"]})
    np.testing.assert_array_equal(
        movie.shifts_figure(da, time_unit="frame").axes[0].get_lines()[1].get_ydata(),
        values[:, 0])


def test_shifts_figure_time_unit_frame_never_says_seconds():
    shifts = make_shifts(20).assign_coords(time=np.arange(20.0) * 10)  # native frames
    fig = movie.shifts_figure(shifts, time_unit="frame")
    assert fig.axes[1].get_xlabel() == "frame"
    assert "(s)" not in all_text(fig) and "time" not in fig.axes[1].get_xlabel()
    np.testing.assert_array_equal(fig.axes[0].get_lines()[1].get_xdata(), np.arange(20) * 10)


def test_shifts_figure_bad_input():
    with pytest.raises(ValueError, match="shifts must have shape"):
        movie.shifts_figure(np.zeros((5, 3)), time_unit="frame")
    with pytest.raises(ValueError, match="bad must be boolean"):
        movie.shifts_figure(np.zeros((5, 2)), bad=np.zeros(4, dtype=bool), time_unit="frame")
    with pytest.raises(ValueError, match="shifts has no time coordinate"):
        movie.shifts_figure(np.zeros((5, 2)))  # frame index cannot be labelled in s
    with pytest.raises(ValueError, match="time_unit must be one of"):
        movie.shifts_figure(make_shifts(), time_unit="ms")


def test_shifts_figure_warns_when_coordinate_units_disagree():
    from calim_helpers.errors import CalimWarning

    shifts = make_shifts(10)
    shifts["time"].attrs["units"] = "frame"
    with pytest.warns(CalimWarning, match="time coordinate is in 'frame'"):
        movie.shifts_figure(shifts)


# --------------------------------------------------------------------- registration


def test_registration_figure_shows_images_and_sharpness_gain():
    sharp = frozen(make_image())
    blurred = frozen(make_image(blur=2.0))
    assert movie._gradient_energy(sharp) > 2 * movie._gradient_energy(blurred)
    fig = movie.registration_figure(blurred, sharp, title=TITLE)
    assert len(fig.axes) == 7  # six panels and a colour bar
    keys = ["before", "after", "after − before", "zoom_before", "zoom_after", "profile"]
    axes = dict(zip(keys, fig.axes, strict=False))
    np.testing.assert_array_equal(image_data(axes["before"]), blurred)
    np.testing.assert_array_equal(image_data(axes["after"]), sharp)
    np.testing.assert_allclose(image_data(axes["after − before"]), sharp - blurred)
    text = all_text(fig)
    assert TITLE in text and "x (pixel)" in text and "after − before (counts)" in text
    assert f"sharpness {movie._gradient_energy(sharp):.3g}" in text
    assert "(+" in axes["after"].get_title()  # the gain is positive
    renders(fig)


def test_registration_figure_bad_input():
    with pytest.raises(ValueError, match="must have one shape"):
        movie.registration_figure(np.ones((10, 12)), np.ones((10, 11)))
    with pytest.raises(ValueError, match="mean_before must be 2-D"):
        movie.registration_figure(np.ones(10), np.ones(10))


# ----------------------------------------------------------------------- ROI overlay


def disks(shape, centres, radius: float) -> np.ndarray:
    """Label image of disks numbered from 1 in the order of ``centres``."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, dtype=np.int32)
    for k, (cy, cx) in enumerate(centres, 1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (labels == 0)] = k
    return labels


def roi_texts(fig: Figure) -> dict[str, object]:
    return {t.get_text(): t for t in fig.axes[0].texts}


def overlaps(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes)
            if i < j and a.overlaps(b)]


def test_roi_overlay_one_haloed_number_per_roi_at_its_centroid():
    shape = (60, 90)
    centres = [(10, 10), (30, 45), (48, 75)]
    labels = frozen(disks(shape, centres, 5))
    image = frozen(make_image(shape))
    fig = movie.roi_overlay(image, labels, title=TITLE)
    texts = roi_texts(fig)
    assert sorted(texts) == ["1", "2", "3"]  # one text per ROI, nothing else on the image
    for k, (cy, cx) in enumerate(centres, 1):
        t = texts[str(k)]
        rows, cols = np.nonzero(labels == k)
        assert t.get_position() == pytest.approx((cols.mean(), rows.mean()))  # centroid
        assert (cx, cy) == pytest.approx((cols.mean(), rows.mean()))
        effects = t.get_path_effects()
        assert any(isinstance(e, patheffects.withStroke) for e in effects)
        assert t.get_color() == "white"
    assert TITLE in fig.axes[0].get_title() and "3 ROIs" in fig.axes[0].get_title()
    np.testing.assert_array_equal(image_data(fig.axes[0]), image)
    assert fig.axes[0].get_xlim() == (-0.5, 89.5)  # outlines do not widen the image
    renders(fig)


def test_roi_outlines_are_matplotlibs_contours_pixel_for_pixel():
    """The outlines, one collection for all ROIs, render as ``ax.contour`` of each ROI's
    mask at 0.5 with the same halo (the reference drawn here): touching ROIs, a ROI
    with a hole, one cut by the image's edge and a one-pixel ROI."""
    from matplotlib.collections import PathCollection

    from calim_helpers.plots import _style

    labels = disks((50, 70), [(12, 12), (12, 21), (35, 50), (46, 4)], 6)
    labels[35, 50] = 0  # a hole
    labels[2, 66] = 5  # one pixel
    colors = ["red", "yellow", "cyan", "white", "magenta"]

    def drawn(reference: bool, outlines: bool = True) -> np.ndarray:
        fig = Figure(figsize=(4, 3), dpi=100)
        ax = fig.subplots()
        ax.imshow(np.zeros(labels.shape), cmap="gray")
        _style._label_rois(ax, labels, colors)
        if reference or not outlines:
            (collection,) = [c for c in ax.collections if isinstance(c, PathCollection)]
            collection.remove()
        if reference:
            limits = ax.get_xlim(), ax.get_ylim()
            for k, box in enumerate(ndimage.find_objects(labels), 1):
                cs = ax.contour(np.arange(box[1].start - 1, box[1].stop + 1),
                                np.arange(box[0].start - 1, box[0].stop + 1),
                                np.pad(labels[box] == k, 1), levels=[0.5],
                                colors=colors[k - 1], linewidths=0.8)
                cs.set_path_effects(_style._halo(0.8 + 1.2))
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.array(canvas.buffer_rgba())

    ours = drawn(False)
    assert np.array_equal(ours, drawn(True))
    assert not np.array_equal(ours, drawn(False, outlines=False))  # they are drawn


def test_roi_overlay_close_centroids_are_nudged_apart():
    shape = (200, 300)
    labels = disks(shape, [(100, 100), (100, 103), (102, 101), (40, 240)], 2)
    fig = drawn(movie.roi_overlay(make_image(shape), labels))
    ax = fig.axes[0]
    texts = roi_texts(fig)
    assert sorted(texts) == ["1", "2", "3", "4"]
    centroid = {k: np.nonzero(labels == k)[::-1] for k in range(1, 5)}  # (cols, rows)
    centroid = {k: (c.mean(), r.mean()) for k, (c, r) in centroid.items()}
    # precondition: at their centroids, numbers 1-3 would overlap (display pixels)
    width = min(texts[k].get_window_extent().width for k in "123")
    xy = ax.transData.transform([centroid[k] for k in (1, 2, 3)])
    assert np.abs(np.diff(xy[:, 0])).min() < width
    boxes = [texts[k].get_window_extent() for k in sorted(texts)]
    assert overlaps(boxes) == []
    # the isolated ROI 4 stays at its centroid, the crowded ones do not all
    assert texts["4"].get_position() == pytest.approx(centroid[4])
    assert not all(texts[str(k)].get_position() == pytest.approx(centroid[k])
                   for k in (1, 2, 3))


def test_roi_overlay_80_rois_on_a_native_frame_are_legible():
    rng = np.random.default_rng(4)
    shape = (512, 688)
    centres = rng.uniform([15, 15], [shape[0] - 15, shape[1] - 15], (80, 2))
    centres[1] = centres[0] + [6, 4]  # close pairs
    centres[3] = centres[2] + [-5, 7]
    labels = disks(shape, centres, 8)
    image = 100 + 3000 * (labels > 0)  # bright cells, dark background
    fig = drawn(movie.roi_overlay(image, labels))
    texts = roi_texts(fig)
    present = np.unique(labels[labels > 0])
    assert sorted(texts, key=int) == [str(k) for k in present]
    boxes = [t.get_window_extent() for t in texts.values()]
    assert overlaps(boxes) == []
    assert min(t.get_fontsize() for t in texts.values()) >= 6
    renders(fig)


def test_roi_overlay_names_go_to_a_key():
    labels = disks((40, 60), [(10, 10), (30, 45)], 4)
    fig = movie.roi_overlay(np.zeros((40, 60)), labels, names=["0010-0010", "0030-0045"])
    assert len(fig.axes) == 2
    assert sorted(roi_texts(fig)) == ["1", "2"]  # names are not written on the image
    key = "\n".join(t.get_text() for t in fig.axes[1].texts)
    assert "1  0010-0010" in key and "2  0030-0045" in key
    renders(fig)


def test_roi_overlay_edge_cases_and_errors():
    empty = movie.roi_overlay(np.ones((20, 30)), np.zeros((20, 30), dtype=int))
    assert len(empty.axes[0].texts) == 0 and "0 ROIs" in empty.axes[0].get_title()
    renders(empty)
    with pytest.raises(ValueError, match="labels must be an int image"):
        movie.roi_overlay(np.ones((20, 30)), np.zeros((20, 31), dtype=int))
    with pytest.raises(ValueError, match="labels must be an int image"):
        movie.roi_overlay(np.ones((20, 30)), np.zeros((20, 30)))
