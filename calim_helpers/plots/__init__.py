"""Figures of the CALIM pipeline, grouped by subject.

Every function takes arrays, :class:`xarray.DataArray` / :class:`xarray.Dataset`
objects or :class:`pandas.DataFrame` tables and returns a
:class:`matplotlib.figure.Figure` built with ``Figure(...)`` (no pyplot, no global
state, no file access: :func:`calim_helpers.io.save_figure` saves); inputs are never
modified. Figures with a time axis take ``time_unit="s"`` (default) or
``time_unit="frame"`` when the frame interval is unknown; their axes then say
"frame", never "s". Statistics live in :mod:`calim_helpers.stats`.

Modules and what they hold (re-exported here unless said otherwise):

- :mod:`calim_helpers.plots.movie` — :func:`load_figure`, :func:`shifts_figure`,
  :func:`registration_figure`, :func:`roi_overlay`
- :mod:`calim_helpers.plots.traces` — :func:`roi_raw_figure`,
  :func:`roi_clean_figure`, :func:`roi_norm_figure`, :func:`roi_figure_pages` (one
  figure redrawn for every ROI, :data:`ROI_FIGURE_KINDS`), :func:`roi_figure_images` (the
  same pages as images, drawn over a background kept from ROI to ROI), :func:`traces_figure`
- :mod:`calim_helpers.plots.activity` — :func:`raster_figure`,
  :func:`correlation_figure`, :func:`cluster_heatmap_figure`,
  :func:`session_summary_figure`
- :mod:`calim_helpers.plots.experiment` — :func:`heatmap_figure`,
  :func:`hist_cum_figure`, :func:`comparison_figure`,
  :func:`condition_summary_figure`
- :mod:`calim_helpers.plots.qc` — :func:`qc_figure`, :func:`qc_session_figure`
- :mod:`calim_helpers.plots.overview` (not re-exported; the notebooks' views use it) —
  several sessions at a glance and the exploration notebook's figures
- ``calim_helpers.plots._style`` (private) — the shared :data:`COLORS`,
  :data:`EXPERIMENT_COLORS`, :data:`NORM_LABELS`, :data:`METRIC_LABELS`,
  :data:`TIME_UNITS` and helpers

Examples
--------
>>> from calim_helpers import plots
>>> plots.heatmap_figure is plots.experiment.heatmap_figure
True
>>> plots.NORM_LABELS["dff"]
'ΔF/F (dff)'
"""

from calim_helpers.plots import activity, experiment, movie, qc, traces
from calim_helpers.plots._style import (
    COLORS,
    EXPERIMENT_COLORS,
    METRIC_LABELS,
    NORM_LABELS,
    TIME_UNITS,
)
from calim_helpers.plots.activity import (
    cluster_heatmap_figure,
    correlation_figure,
    raster_figure,
    session_summary_figure,
)
from calim_helpers.plots.experiment import (
    comparison_figure,
    condition_summary_figure,
    heatmap_figure,
    hist_cum_figure,
)
from calim_helpers.plots.movie import (
    load_figure,
    registration_figure,
    roi_overlay,
    shifts_figure,
)
from calim_helpers.plots.qc import qc_figure, qc_session_figure
from calim_helpers.plots.traces import (
    ROI_FIGURE_KINDS,
    roi_clean_figure,
    roi_figure_images,
    roi_figure_pages,
    roi_norm_figure,
    roi_raw_figure,
    traces_figure,
)

__all__ = [
    "COLORS",
    "EXPERIMENT_COLORS",
    "METRIC_LABELS",
    "NORM_LABELS",
    "ROI_FIGURE_KINDS",
    "TIME_UNITS",
    "activity",
    "cluster_heatmap_figure",
    "comparison_figure",
    "condition_summary_figure",
    "correlation_figure",
    "experiment",
    "heatmap_figure",
    "hist_cum_figure",
    "load_figure",
    "movie",
    "qc",
    "qc_figure",
    "qc_session_figure",
    "raster_figure",
    "registration_figure",
    "roi_clean_figure",
    "roi_figure_images",
    "roi_figure_pages",
    "roi_norm_figure",
    "roi_overlay",
    "roi_raw_figure",
    "session_summary_figure",
    "shifts_figure",
    "traces",
    "traces_figure",
]
