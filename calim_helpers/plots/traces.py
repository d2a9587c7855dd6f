"""Figures of one session's traces (a Dataset with dims ``roi`` and ``time``, SPEC §2).

- :func:`roi_raw_figure` — ``<session>_mask<n>.png``: raw ROI trace, background,
  ROI − background and its arPLS baseline
- :func:`roi_clean_figure` — ``<session>_mask_arpls_clean_<n>.png``: corrected
  signal and background
- :func:`roi_norm_figure` — ``<session>_mask_arpls_NORM_<n>.png``: normalized signal
- :func:`roi_figure_pages` — any of these three for many ROIs, drawn into one figure
  ROI after ROI (the cheap way to save a session's per-ROI PNGs or one multi-page PDF)
- :func:`traces_figure` — all raw ROI traces and the background of a session

Colours follow :data:`calim_helpers.plots.COLORS`: raw red, background blue,
ROI − background purple, neuropil olive (with a neuropil correction), corrected green,
baseline black dashed. The time axis is
the Dataset's ``time`` coordinate, in seconds (``time_unit="s"``) or in frames
(``time_unit="frame"``, when the frame interval is unknown). A failed arPLS fit
(``fit_status == "failed"``) turns a ROI figure's title and frame red; a fit that
reached ``max_iter`` with a stable baseline is only noted, in grey, under the title.

Examples
--------
>>> import numpy as np, xarray as xr
>>> tr = xr.Dataset({"raw": (("roi", "time"), np.ones((3, 5))),
...                  "background": ("time", np.zeros(5))},
...                 coords={"time": np.arange(5.0)})
>>> traces_figure(tr, title="demo", time_unit="frame").axes[0].get_xlabel()
'frame'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from calim_helpers import correction
from calim_helpers.plots._style import (
    _INTENSITY_LABEL,
    COLORS,
    _check_time_unit,
    _check_vars,
    _coord_time,
    _count,
    _norm_label,
    _shade_trim,
    _time_extent,
    _time_label,
    _values,
)

__all__ = ["ROI_FIGURE_KINDS", "roi_clean_figure", "roi_figure_images", "roi_figure_pages",
           "roi_norm_figure", "roi_raw_figure", "traces_figure"]


#: Kinds of per-ROI figure (:func:`roi_figure_pages`): the lab's three PNGs per ROI.
ROI_FIGURE_KINDS = ("raw", "clean", "norm")

_KIND_VARS = {"raw": ("raw", "background", "signal", "baseline"),
              "clean": ("corrected", "background"),
              "norm": ("norm",)}
_FIGSIZE = {"raw": (8, 5.5), "clean": (8, 5), "norm": (8, 4)}  # inches
_NOTE = "0.45"  # grey of neutral notes (stable fits)


def _check_kind(kind: object, /) -> str:
    if kind not in ROI_FIGURE_KINDS:
        raise ValueError(f"kind must be one of {ROI_FIGURE_KINDS}, got {kind!r}")
    return str(kind)


def _roi_index(ds: xr.Dataset, rois: Sequence[int] | None, /) -> list[int]:
    """Positions along ``roi`` of the ROI numbers ``rois`` (None: all, in order)."""
    if "roi" not in ds.dims:
        raise ValueError(f"ds must have a 'roi' dimension, got dims {tuple(ds.dims)}")
    numbers = [int(r) for r in ds["roi"].values]
    if rois is None:
        return list(range(len(numbers)))
    index = []
    for roi in rois:
        if (isinstance(roi, bool) or not isinstance(roi, int | np.integer)
                or int(roi) not in numbers):
            raise ValueError(f"roi must be one of the ROI numbers {numbers}, got {roi!r}")
        index.append(numbers.index(int(roi)))
    return index


def _roi_titles(ds: xr.Dataset, /) -> list[str]:
    """``experiment · date · session · ROI n "name"`` of every ROI, in ``roi`` order."""
    a = ds.attrs
    head = " · ".join([str(a.get("experiment", "?")), str(a.get("date", "?")),
                       f"session {a.get('session', '?')}"])
    names = (np.asarray(ds["roi_name"].values).astype(str) if "roi_name" in ds.coords
             else [""] * ds.sizes["roi"])
    titles = []
    for number, name in zip(ds["roi"].values, names, strict=True):
        title = f"{head} · ROI {int(number)}"
        titles.append(f'{title} "{name}"' if name else title)
    return titles


def _per_roi(ds: xr.Dataset, name: str, /) -> np.ndarray | None:
    """Values of the per-ROI variable ``name`` in ``roi`` order, None if absent."""
    return np.asarray(ds[name].values) if name in ds else None


def _fit_notes(ds: xr.Dataset, which: Sequence[str], /) -> list[tuple[list[str], list[str]]]:
    """Lines on the arPLS fits ``which`` ⊂ {"signal", "raw"} of each ROI: (failed, stable).

    Uses ``fit_status`` / ``fit_status_raw``; a Dataset without them (earlier
    versions) reads a fit that did not converge as failed. Silent without either.
    """
    notes: list[tuple[list[str], list[str]]] = [([], []) for _ in range(ds.sizes["roi"])]
    for fit in which:
        suffix = "" if fit == "signal" else "_raw"
        try:
            status = np.asarray(correction.fit_status(ds, raw=fit == "raw")).reshape(-1)
        except ValueError:
            continue
        n_iter = _per_roi(ds, f"n_iter{suffix}")
        change = _per_roi(ds, f"weight_change{suffix}")
        for k, (failed, stable) in enumerate(notes):
            n = int(n_iter[k]) if n_iter is not None else "?"
            if status[k] == "failed":
                failed.append(f"arPLS ({fit}) failed (n_iter = {n})")
            elif status[k] == "stable":
                dw = f", weight change {float(change[k]):.1e}" if change is not None else ""
                stable.append(f"arPLS ({fit}): max_iter reached, stable (n_iter = {n}{dw})")
    return notes


def _note_fits(ds: xr.Dataset, kind: str, /) -> list[str]:
    """Name the fits a figure of ``kind`` reports: also the raw fit when ``norm`` uses it."""
    if kind == "norm" and ds.attrs.get("normalize", "?") in ("dff", "session"):
        return ["signal", "raw"]
    return ["signal"]


class _Title:
    """Title, grey note and frame of the top axes of a ROI figure, set again per ROI.

    A failed fit turns the title red, with a warning line, and the frame red; stable
    fits (``max_iter`` reached, baseline stable) are noted in small grey text just
    above the axes, under the title. Each :meth:`set` first restores what the
    previous ROI changed (the axes' own title colour and frame, no note). The title
    sits at the top of the axes (``y=1.0``, where matplotlib would put it with no
    decorations above the axes), so that drawing it does not measure the axes' ticks.
    """

    def __init__(self, ax, /) -> None:
        self.ax = ax
        self.color = ax.title.get_color()
        self.frame = {k: (sp.get_edgecolor(), sp.get_linewidth())
                      for k, sp in ax.spines.items()}
        self.note = None

    def set(self, title: str, notes: tuple[list[str], list[str]], /) -> None:
        ax = self.ax
        failed, stable = notes
        if self.note is not None:
            self.note.remove()
            self.note = None
        pad = 6.0  # points, matplotlib's default
        if stable:
            self.note = ax.annotate("\n".join(stable), (0.5, 1.0), xycoords="axes fraction",
                                    xytext=(0, 2), textcoords="offset points", ha="center",
                                    va="bottom", color=_NOTE, fontsize=7)
            pad = 4.0 + 9.0 * len(stable)  # the title goes above the note (7 pt lines)
        if failed:
            ax.set_title("\n".join([title, *failed]), color=COLORS["warn"], fontsize=10,
                         pad=pad, y=1.0)
            for spine in ax.spines.values():
                spine.set_edgecolor(COLORS["warn"])
                spine.set_linewidth(1.5)
        else:
            ax.set_title(title, color=self.color, fontsize=10, pad=pad, y=1.0)
            for k, spine in ax.spines.items():
                spine.set_edgecolor(self.frame[k][0])
                spine.set_linewidth(self.frame[k][1])


def _baseline_label(ds: xr.Dataset, /) -> str:
    lam = ds.attrs.get("lam")
    return "arPLS baseline" + (f" (λ = {float(lam):g})" if lam is not None else "")


def _draw_raw(fig: Figure, ds: xr.Dataset, t: np.ndarray, time_unit: str, /) -> tuple:
    """Axes and lines of a raw figure (no ROI yet): ``(axes, lines by variable, top axes)``."""
    nan = np.full(t.shape, np.nan)
    ax_raw, ax_sig = fig.subplots(2, 1, sharex=True)
    (raw,) = ax_raw.plot(t, nan, color=COLORS["raw"], lw=1.2, label="ROI (raw)")
    (bg,) = ax_raw.plot(t, nan, color=COLORS["background"], lw=1.2, label="background")
    lines = {"raw": raw, "background": bg}
    signal_label = "ROI − background"
    if "neuropil" in ds:  # a neuropil correction: its ring, and its share in the signal
        (lines["neuropil"],) = ax_raw.plot(t, nan, color=COLORS["neuropil"], lw=1.0,
                                           label="neuropil (ring around the ROI)")
        signal_label = "ROI − background − neuropil share"
    ax_raw.set_ylabel(_INTENSITY_LABEL)
    ax_raw.legend(loc="best", fontsize=8)
    (sig,) = ax_sig.plot(t, nan, color=COLORS["signal"], lw=1.2, label=signal_label)
    (base,) = ax_sig.plot(t, nan, color=COLORS["baseline"], ls="--", lw=1.2,
                          label=_baseline_label(ds))
    ax_sig.set_ylabel(f"{signal_label}\n{_INTENSITY_LABEL}")
    ax_sig.set_xlabel(_time_label(time_unit))
    ax_sig.legend(loc="best", fontsize=8)
    lines |= {"signal": sig, "baseline": base}
    return (ax_raw, ax_sig), lines, ax_raw


def _draw_clean(fig: Figure, ds: xr.Dataset, t: np.ndarray, time_unit: str, /) -> tuple:
    """Axes and lines of a clean figure (no ROI yet), as :func:`_draw_raw`."""
    nan = np.full(t.shape, np.nan)
    ax, bx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax.axhline(0, color="0.6", lw=0.8)
    (corrected,) = ax.plot(t, nan, color=COLORS["corrected"], lw=1.3,
                           label="corrected (ROI − background − baseline)")
    ax.set_ylabel(f"corrected\n{_INTENSITY_LABEL}")
    ax.legend(loc="best", fontsize=8)
    (bg,) = bx.plot(t, nan, color=COLORS["background"], lw=1.2, label="background")
    bx.set_ylabel(f"background\n{_INTENSITY_LABEL}")
    bx.set_xlabel(_time_label(time_unit))
    bx.legend(loc="best", fontsize=8)
    return (ax, bx), {"corrected": corrected, "background": bg}, ax


def _draw_norm(fig: Figure, ds: xr.Dataset, t: np.ndarray, time_unit: str, /) -> tuple:
    """Axes and line of a normalized-signal figure (no ROI yet), as :func:`_draw_raw`."""
    normalize = ds.attrs.get("normalize", "?")
    ax = fig.subplots()
    _shade_trim(ax, t, ds.attrs.get("trim_start", 0))
    ax.axhline(0, color="0.6", lw=0.8)
    (norm,) = ax.plot(t, np.full(t.shape, np.nan), color=COLORS["corrected"], lw=1.3,
                      label="normalized")
    ax.set_xlim(*_time_extent(t))
    ax.set_ylabel(_norm_label(normalize))
    ax.set_xlabel(_time_label(time_unit))
    if normalize == "session" and "session_scale" in ds.attrs:
        ax.text(0.01, 0.97, f"S = {float(ds.attrs['session_scale']):.4g} counts",
                transform=ax.transAxes, ha="left", va="top", fontsize=8)
    ax.legend(loc="best", fontsize=8)
    return (ax,), {"norm": norm}, ax


_DRAW = {"raw": _draw_raw, "clean": _draw_clean, "norm": _draw_norm}

# Margins of the per-ROI figures, inches: fixed (a layout engine would take over half
# of the time of drawing a page), wide enough for two-line axis labels and tick labels
# of up to 8 characters. The top grows with the lines above the axes (title, failed
# fits, stable-fit notes).
_MARGIN = {"left": 1.15, "right": 0.2, "bottom": 0.55, "top": 0.4, "gap": 0.35}
_LINE_IN = {"title": 10 * 1.2 / 72, "note": 7 * 1.25 / 72}  # one more line of each


# Axis labels at fixed distances from their axes, points: matplotlib would place them
# beside the tick labels, measuring every tick label again at each draw (a fifth of the
# time of drawing a page). The y label's right edge leaves room for tick labels of up
# to 8 characters; the x label's top is below one line of tick labels, as matplotlib
# puts it (ticks 3.5 pt, pad 3.5 pt, 10 pt text, label pad 4 pt).
_LABEL_GAP_PT = {"y": 48.0, "x": 21.0}


def _fix_labels(fig: Figure, axes: Sequence, /) -> None:
    """Put the axis labels of ``axes`` at :data:`_LABEL_GAP_PT` from their axes."""
    for ax in axes:
        ax.yaxis.set_label_coords(0.0, 0.5, transform=offset_copy(
            ax.transAxes, fig, x=-_LABEL_GAP_PT["y"], units="points"))
        ax.xaxis.set_label_coords(0.5, 0.0, transform=offset_copy(
            ax.transAxes, fig, y=-_LABEL_GAP_PT["x"], units="points"))


def _place_axes(fig: Figure, title_lines: int, note_lines: int, /) -> None:
    """Set the axes' margins for a title of ``title_lines`` and ``note_lines`` notes."""
    w, h = fig.get_size_inches()
    top = (_MARGIN["top"] + _LINE_IN["title"] * max(title_lines - 1, 0)
           + _LINE_IN["note"] * note_lines)
    n_axes = len(fig.axes)
    height = (h - top - _MARGIN["bottom"] - (n_axes - 1) * _MARGIN["gap"]) / n_axes  # each
    fig.subplots_adjust(left=_MARGIN["left"] / w, right=1 - _MARGIN["right"] / w,
                        bottom=_MARGIN["bottom"] / h, top=1 - top / h,
                        hspace=_MARGIN["gap"] / max(height, 0.1))


def _pages(ds: xr.Dataset, kind: str, index: list[int], t: np.ndarray, time_unit: str, /,
           *, fig: Figure) -> Iterator[tuple[int, Figure]]:
    """Draw the ROIs at positions ``index`` one after the other into ``fig``.

    The axes, lines, labels and legends are made once; per ROI only the lines'
    y data, the y limits, the title, the note and the frame change.
    """
    names = _KIND_VARS[kind] + (("neuropil",) if kind == "raw" and "neuropil" in ds else ())
    values = {v: np.broadcast_to(_values(ds[v].transpose("roi", "time") if "roi" in ds[v].dims
                                         else ds[v].transpose("time")),
                                 (ds.sizes["roi"], t.size))
              for v in names}
    titles = _roi_titles(ds)
    notes = _fit_notes(ds, _note_fits(ds, kind))
    numbers = ds["roi"].values
    axes, lines, top = _DRAW[kind](fig, ds, t, time_unit)
    _fix_labels(fig, axes)
    title = _Title(top)
    for k in index:
        for v in names:
            lines[v].set_ydata(values[v][k])
        for ax in axes:  # every axes first: siblings share the time axis
            ax.relim()
        for ax in axes:
            ax.autoscale_view()
        title.set(titles[k], notes[k])
        _place_axes(fig, 1 + len(notes[k][0]), len(notes[k][1]))
        yield int(numbers[k]), fig


def _check_ds(ds: xr.Dataset, kind: str, /) -> None:
    _check_vars(ds, _KIND_VARS[kind], "ds")
    for v in _KIND_VARS[kind]:
        if not set(ds[v].dims) <= {"roi", "time"} or "time" not in ds[v].dims:
            raise ValueError(f"ds[{v!r}] must have dims ('roi', 'time') or ('time',), "
                             f"got {ds[v].dims}")


def _roi_figure(ds: xr.Dataset, roi: int, kind: str, time_unit: str, /) -> Figure:
    """Check the arguments, then draw one fresh figure of ``kind`` for ROI number ``roi``."""
    time_unit = _check_time_unit(time_unit)
    _check_ds(ds, kind)
    one = ds.isel(roi=_roi_index(ds, [roi]))  # read only this ROI's values
    t = _coord_time(ds, "ds", time_unit)
    fig = Figure(figsize=_FIGSIZE[kind])
    ((_, fig),) = _pages(one, kind, [0], t, time_unit, fig=fig)
    return fig


def roi_figure_pages(ds: xr.Dataset, kind: str, /, *, rois: Sequence[int] | None = None,
                     time_unit: str = "s") -> Iterator[tuple[int, Figure]]:
    """Draw the per-ROI figures of one kind into ONE figure, ROI after ROI.

    The cheap way to save a session's per-ROI figures: the figure, its axes,
    lines, labels and legends are built once; each step of the iterator puts the
    next ROI's traces, y limits, title, fit note and frame colour into it. Each
    page is identical in content to the fresh figure of :func:`roi_raw_figure`,
    :func:`roi_clean_figure` or :func:`roi_norm_figure` for that ROI (those build
    their figure with the same code). The figure has an Agg canvas; save (or
    display) it before advancing the iterator: every step yields the SAME
    :class:`~matplotlib.figure.Figure`, redrawn.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with dims ``(roi, time)`` and the variables of ``kind``
        (see the three functions above): ``raw``, ``background``, ``signal``,
        ``baseline`` for ``"raw"``; ``corrected``, ``background`` for ``"clean"``;
        ``norm`` for ``"norm"``. Read once, when this function is called.
    kind : {"raw", "clean", "norm"}
        Which figure: :func:`roi_raw_figure` (``<session>_mask<n>``),
        :func:`roi_clean_figure` (``<session>_mask_arpls_clean_<n>``) or
        :func:`roi_norm_figure` (``<session>_mask_arpls_NORM_<n>``).
    rois : sequence of int, optional
        ROI numbers (coordinate ``roi``, from 1), drawn in this order. Default is
        None (every ROI, in the Dataset's order).
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Yields
    ------
    roi : int
        The ROI number now drawn.
    figure : matplotlib.figure.Figure
        The same figure at every step, showing ROI ``roi``.

    Raises
    ------
    ValueError
        Here, not at the first step: if ``kind`` or ``time_unit`` is unknown, a
        variable is missing or a number of ``rois`` is not a ROI number.

    Examples
    --------
    Save each page, e.g. as PNGs (``io.save_figure`` closes nothing that matters
    here: the figure is not managed by pyplot) or as the pages of one PDF:

    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"norm": (("roi", "time"), np.arange(10.0).reshape(2, 5))},
    ...                 coords={"roi": [1, 2], "time": np.arange(5.0)},
    ...                 attrs={"normalize": "dff"})
    >>> pages = roi_figure_pages(ds, "norm", time_unit="frame")
    >>> [(roi, round(float(fig.axes[0].get_ylim()[1]), 2)) for roi, fig in pages]
    [(1, 4.2), (2, 9.45)]
    >>> from matplotlib.backends.backend_pdf import PdfPages
    >>> import io
    >>> with PdfPages(io.BytesIO()) as pdf:
    ...     for roi, fig in roi_figure_pages(ds, "norm", time_unit="frame"):
    ...         pdf.savefig(fig)
    """
    return _new_pages(ds, kind, rois, time_unit)[0]


def _new_pages(ds: xr.Dataset, kind: str, rois: Sequence[int] | None, time_unit: str, /,
               dpi: float | None = None) -> tuple[Iterator[tuple[int, Figure]], Figure]:
    """Check the arguments; return the pages of ``kind`` and the one figure they draw into.

    ``dpi``: the figure's (None: matplotlib's default), checked when given.
    """
    kind = _check_kind(kind)
    time_unit = _check_time_unit(time_unit)
    _check_ds(ds, kind)
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, (int, float))
                            or not dpi > 0):
        raise ValueError(f"dpi must be a positive number, got {dpi!r}")
    index = _roi_index(ds, rois)
    t = _coord_time(ds, "ds", time_unit)
    fig = Figure(figsize=_FIGSIZE[kind], dpi=None if dpi is None else float(dpi))
    FigureCanvasAgg(fig)
    return _pages(ds, kind, index, t, time_unit, fig=fig), fig


def roi_figure_images(ds: xr.Dataset, kind: str, /, *, rois: Sequence[int] | None = None,
                      time_unit: str = "s", dpi: float = 100.0,
                      ) -> Iterator[tuple[int, np.ndarray]]:
    """Render the per-ROI figures of one kind as images, ROI after ROI: the cheap way to PNGs.

    The pages of :func:`roi_figure_pages`, rendered at ``dpi`` (the pixels its figure
    saved with ``savefig(dpi=dpi)`` would have), faster: what no ROI changes (the
    background, the time axis, the shading of trimmed frames) is rendered once and
    restored for each ROI, and only what a ROI changes (its lines, the y axis,
    legends, title, note and frame) is drawn over it, in matplotlib's drawing order.
    The background is rendered again when the layout changes (a title of failed fits
    or a note of stable fits takes more lines). The y axes' labels, the same for every
    ROI, are part of the background. A full-size session's three PNGs per ROI, saved
    by :func:`calim_helpers.io.save_png`: 0.106 s per ROI, against 0.170 s saving the
    pages of :func:`roi_figure_pages` and 0.297 s with a new figure per ROI
    (``benchmarks/bench_figures.py``, 50 synthetic ROIs x 1500 frames).

    Parameters
    ----------
    ds, kind, rois, time_unit
        As for :func:`roi_figure_pages`.
    dpi : float, optional
        Dots per inch (the PNGs' ``figures.dpi``). Default is 100.

    Yields
    ------
    roi : int
        The ROI number drawn.
    image : numpy.ndarray
        uint8, shape ``(height, width, 4)``: RGBA, top row first (height and width in
        pixels: the kind's figure size in inches times ``dpi``). A new array each step.

    Raises
    ------
    ValueError
        Here, not at the first step: as :func:`roi_figure_pages`, or ``dpi`` not a
        positive number.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"norm": (("roi", "time"), np.arange(10.0).reshape(2, 5))},
    ...                 coords={"roi": [1, 2], "time": np.arange(5.0)},
    ...                 attrs={"normalize": "dff"})
    >>> [(roi, image.shape) for roi, image in
    ...  roi_figure_images(ds, "norm", time_unit="frame", dpi=50)]
    [(1, (200, 400, 4)), (2, (200, 400, 4))]
    """
    return _images(*_new_pages(ds, kind, rois, time_unit, dpi))


def _images(pages: Iterator[tuple[int, Figure]], fig: Figure, /
            ) -> Iterator[tuple[int, np.ndarray]]:
    """Render each page of ``pages`` (all into ``fig``) over a background kept by layout."""
    canvas = fig.canvas
    backgrounds: dict[tuple, Any] = {}
    for number, _ in pages:
        moving = _moving_artists(fig)
        for artist in moving:
            artist.set_animated(True)  # left out of canvas.draw(): the background
        layout = (fig.subplotpars.top, fig.subplotpars.hspace,
                  *(ax.get_xlim() for ax in fig.axes))
        labels = [ax.yaxis.label for ax in fig.axes]
        if layout in backgrounds:
            canvas.restore_region(backgrounds[layout])
        else:
            canvas.draw()
            for ax, label in zip(fig.axes, labels, strict=True):
                ax.draw_artist(label)  # no ROI changes it: part of the background
            backgrounds[layout] = canvas.copy_from_bbox(fig.bbox)
        ids = {id(a) for a in moving}
        for label in labels:
            label.set_visible(False)  # drawn with the background
        for ax in fig.axes:  # as Axes.draw orders its children: by zorder, stably
            for artist in sorted((a for a in ax.get_children() if id(a) in ids),
                                 key=lambda a: a.get_zorder()):
                ax.draw_artist(artist)
        for label in labels:
            label.set_visible(True)
        yield number, np.array(canvas.buffer_rgba())


def _moving_artists(fig: Figure, /) -> list:
    """Return what a ROI changes in a per-ROI figure (y axes, lines, texts, legends, frames).

    The rest (figure and axes background, the time axes, the shading of trimmed frames)
    is the same for every ROI of a layout and lies under all of these (lower zorder), or
    beside them, so drawing these over it gives the full drawing's pixels. So does the
    y axes' label, at a fixed place beside the tick labels (:func:`_fix_labels`):
    :func:`_images` draws it with the background and hides it when it draws the y axis.
    """
    moving = []
    for ax in fig.axes:
        moving += [ax.yaxis, *ax.lines, *ax.texts, *ax.spines.values(), ax.title]
        if ax.get_legend() is not None:
            moving.append(ax.get_legend())
    return moving


def roi_raw_figure(ds: xr.Dataset, roi: int, /, *, time_unit: str = "s") -> Figure:
    """Raw ROI trace, background, ROI − background and its arPLS baseline (``<session>_mask<n>``).

    The top panel shows the intensities as measured (ROI mean in red, background in
    blue); the bottom panel the background-subtracted signal (purple) with the arPLS
    baseline fitted to it (black dashed). A failed fit turns the title and frame red
    and says so with its iteration count; a fit that reached ``max_iter`` with a
    stable baseline is noted in grey. To draw many ROIs, :func:`roi_figure_pages`
    is much cheaper.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with dims ``(roi, time)`` and variables ``raw``,
        ``background``, ``signal``, ``baseline``; ``fit_status`` (or ``converged``),
        ``n_iter`` and ``weight_change`` if present.
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate: ``"s"``, or ``"frame"`` when the frame
        interval is unknown (the axis is then labelled "frame"). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers, a variable is missing or
        ``time_unit`` is unknown.
    """
    return _roi_figure(ds, roi, "raw", time_unit)


def roi_clean_figure(ds: xr.Dataset, roi: int, /, *, time_unit: str = "s") -> Figure:
    """Plot the drift-corrected signal and background (``<session>_mask_arpls_clean_<n>``).

    Top: the corrected signal (``signal − baseline``, green), the lab's "clean"
    curve. Bottom, on its own scale (both are in counts but at very different
    levels): the background trace (blue) that was subtracted from it.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with variables ``corrected`` and ``background``.
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes sharing the time axis.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers, a variable is missing or
        ``time_unit`` is unknown.
    """
    return _roi_figure(ds, roi, "clean", time_unit)


def roi_norm_figure(ds: xr.Dataset, roi: int, /, *, time_unit: str = "s") -> Figure:
    """Plot the normalized signal of one ROI (``<session>_mask_arpls_NORM_<n>``).

    The y label names the normalization (``ds.attrs["normalize"]``); the first
    ``trim_start`` frames (NaN in ``norm``) are shaded.

    Parameters
    ----------
    ds : xarray.Dataset
        A session Dataset with variable ``norm`` and attributes ``normalize`` and
        ``trim_start`` (``session_scale`` is shown for ``normalize="session"``).
    roi : int
        ROI number (coordinate ``roi``, numbered from 1).
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes.

    Raises
    ------
    ValueError
        If ``roi`` is not one of the ROI numbers, ``norm`` is missing or
        ``time_unit`` is unknown.
    """
    return _roi_figure(ds, roi, "norm", time_unit)


def traces_figure(tr: xr.Dataset, /, *, title: str = "", time_unit: str = "s") -> Figure:
    """Raw ROI traces (one line per ROI) and the background trace of one session.

    Parameters
    ----------
    tr : xarray.Dataset
        ``raw`` (roi, time) and ``background`` (time), with a ``time`` coordinate.
    title : str, optional
        Figure title. Default is ``""``.
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`roi_raw_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes.

    Raises
    ------
    ValueError
        If a variable is missing or ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_vars(tr, ("raw", "background"), "traces")
    time = _coord_time(tr, "traces", time_unit)
    raw = _values(tr["raw"].transpose("roi", "time"))
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    for k in range(raw.shape[0]):
        ax.plot(time, raw[k], lw=0.8, alpha=0.7, color=COLORS["raw"] if k == 0 else None)
    ax.plot(time, _values(tr["background"]), lw=2, color=COLORS["background"],
            label="background")
    ax.set_xlabel(_time_label(time_unit))
    ax.set_ylabel("mean fluorescence (counts)")
    what = f"{_count(raw.shape[0], 'ROI')} (thin) and background"
    ax.set_title(f"{title}: {what}" if title else what, fontsize=10)
    ax.legend(loc="best")
    return fig
