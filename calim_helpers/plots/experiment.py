"""Figures of an experiment (sessions side by side) and of experiments (conditions) side by side.

Per experiment (sessions concatenated along ``cell``, see SPEC §3):

- :func:`heatmap_figure` — ``heatmap.pdf``: normalized signal, cells × time by
  session, and one row per session
- :func:`hist_cum_figure` — ``hist_cum.pdf``: average over all cells per frame, and
  before/after drift correction

Across experiments (conditions), or across the sessions of one experiment:

- :func:`comparison_figure` — average traces and per-cell summaries side by side
- :func:`condition_summary_figure` — per-ROI features side by side with the rank
  tests of :func:`calim_helpers.stats.condition_tests` (``condition_summary.pdf``
  with ``group_label="experiment"``; ``sessions_summary.pdf`` with
  ``group_label="session"``)

Time axes follow the Datasets' ``time`` coordinate, in seconds (``time_unit="s"``)
or in frames (``time_unit="frame"``) when the frame interval is unknown.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> features = pd.DataFrame({"session": np.repeat(["s1", "s2", "s3"], 8),
...                          "snr": rng.gamma(3, 2, 24)})
>>> by_session = dict(tuple(features.groupby("session")))
>>> fig = condition_summary_figure(by_session, metrics=["snr"], group_label="session")
>>> fig.get_suptitle().splitlines()[0]
'Sessions side by side: 3 sessions (s1, s2, s3)'
"""

from __future__ import annotations

import re
import textwrap
import warnings
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from calim_helpers import stats
from calim_helpers.errors import CalimWarning
from calim_helpers.plots._style import (
    COLORS,
    EXPERIMENT_COLORS,
    _check_time_unit,
    _check_vars,
    _coord_time,
    _count,
    _jitter,
    _mean_sem,
    _metric_label,
    _nanmean,
    _norm_label,
    _shade_trim,
    _strip_box,
    _time_extent,
    _time_label,
    _values,
)

__all__ = ["comparison_figure", "condition_summary_figure", "heatmap_figure",
           "hist_cum_figure"]

_TEST_NAMES = {"mannwhitney": ("Mann–Whitney", "U"), "kruskal": ("Kruskal–Wallis", "H")}
_UNIT_TEXT = {
    "session": "test unit: session (one sample per session: the median over its cells)",
    "cell": "test unit: cell (each cell one sample)",
}


# --------------------------------------------------------------------------- helpers


def _session_groups(exp_ds: xr.Dataset, /) -> list[tuple[str, np.ndarray]]:
    """``(label, cell indices)`` per (date, session), in order of first appearance."""
    n = exp_ds.sizes["cell"]
    dates = ([str(d) for d in exp_ds["date"].values] if "date" in exp_ds.coords
             else [""] * n)
    sessions = ([str(s) for s in exp_ds["session"].values] if "session" in exp_ds.coords
                else ["all"] * n)
    keys = list(zip(dates, sessions, strict=True))
    order = list(dict.fromkeys(keys))
    ambiguous = len({s for _, s in order}) < len(order)
    groups = []
    for key in order:
        idx = np.array([i for i, k in enumerate(keys) if k == key], dtype=int)
        label = f"{key[0]} {key[1]}" if ambiguous else key[1]
        groups.append((label, idx))
    return groups


def _check_experiment(exp_ds: xr.Dataset, names: Sequence[str], what: str, /) -> None:
    if "cell" not in exp_ds.dims or "time" not in exp_ds.dims:
        raise ValueError(f"{what} must have dims 'cell' and 'time', got {tuple(exp_ds.dims)}")
    _check_vars(exp_ds, names, what)


# ------------------------------------------------------------------- per experiment


def heatmap_figure(
    exp_ds: xr.Dataset,
    /,
    *,
    vmin: float = 0.0,
    vmax: float = 0.5,
    cmap: str = "viridis",
    time_unit: str = "s",
) -> Figure:
    """Plot the normalized signal of all cells × time by session (``heatmap.pdf``).

    Top panel: one row per cell, cells grouped by (date, session) in order of first
    appearance (input order within a session), with separators and session labels.
    Bottom panel: one row per session, the mean over its cells (NaN ignored) — the
    lab's group-analysis figure. Both share one colour scale and colour bar; NaN
    (trimmed or padded frames, empty cells) is drawn light grey.

    Parameters
    ----------
    exp_ds : xarray.Dataset
        Experiment Dataset with dims ``(cell, time)``, variable ``norm``, coordinates
        ``date`` and ``session`` along ``cell`` and attribute ``normalize``.
    vmin, vmax : float, optional
        Colour scale limits, in units of the normalization. Defaults are 0.0 and 0.5.
    cmap : str, optional
        Matplotlib colour map name. Default is ``"viridis"``.
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate: ``"s"``, or ``"frame"`` when the frame
        interval is unknown (the axis is then labelled "frame"). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Two image axes and one colour-bar axes.

    Raises
    ------
    ValueError
        If ``norm`` or the dims are missing, ``vmin >= vmax`` or ``time_unit`` is
        unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_experiment(exp_ds, ["norm"], "exp_ds")
    if not vmin < vmax:
        raise ValueError(f"vmin must be < vmax, got vmin={vmin!r}, vmax={vmax!r}")
    groups = _session_groups(exp_ds)
    norm = _values(exp_ds["norm"].transpose("cell", "time"))
    order = np.concatenate([idx for _, idx in groups])
    rows = norm[order]
    means = np.stack([_nanmean(norm[idx], axis=0) for _, idx in groups])
    t = _coord_time(exp_ds, "exp_ds", time_unit)
    t0, t1 = _time_extent(t)
    n_cell, n_sess = rows.shape[0], len(groups)
    label = _norm_label(exp_ds.attrs.get("normalize", "?"))
    colormap = mpl.colormaps[cmap].with_extremes(bad="0.85")

    # panel heights in inches: the session-mean rows keep a readable height however
    # many cells the upper panel holds
    cells_in = float(np.clip(0.09 * n_cell, 2.0, 11.0))
    sess_in = float(np.clip(0.3 * n_sess, 0.9, 3.0))
    fig = Figure(figsize=(10, cells_in + sess_in + 1.6), layout="constrained")
    ax_cells, ax_sess = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [cells_in, sess_in]})
    kw = {"aspect": "auto", "interpolation": "nearest", "cmap": colormap,
          "vmin": vmin, "vmax": vmax}
    im = ax_cells.imshow(rows, extent=(t0, t1, n_cell - 0.5, -0.5), **kw)
    ax_sess.imshow(means, extent=(t0, t1, n_sess - 0.5, -0.5), **kw)

    bounds = np.cumsum([idx.size for _, idx in groups])
    for b in bounds[:-1]:
        ax_cells.axhline(b - 0.5, color="white", lw=1.5)
    for b in range(1, n_sess):
        ax_sess.axhline(b - 0.5, color="white", lw=1.5)
    centers = bounds - np.array([idx.size for _, idx in groups]) / 2 - 0.5
    fs = 8 if n_sess <= 20 else 6
    ax_cells.set_yticks(centers, [f"{lab} ({idx.size})" for lab, idx in groups], fontsize=fs)
    ax_cells.tick_params(axis="y", length=0)
    ax_cells.set_ylabel("cells, by session (n)")
    ax_sess.set_yticks(np.arange(n_sess), [lab for lab, _ in groups], fontsize=fs)
    ax_sess.set_ylabel("session mean")
    ax_sess.set_xlabel(_time_label(time_unit))
    ax_cells.set_title(f"{exp_ds.attrs.get('experiment', '?')}: {label}, "
                       f"{_count(n_cell, 'cell')} in {_count(n_sess, 'session')}", fontsize=11)
    ax_sess.set_title("mean over each session's cells", fontsize=10)
    cb = fig.colorbar(im, ax=[ax_cells, ax_sess], extend="both", shrink=0.8,
                      aspect=max(20.0, 4 * (cells_in + sess_in + 1.6)), extendfrac=0.03)
    cb.set_label(label)
    return fig


def hist_cum_figure(exp_ds: xr.Dataset, /, *, time_unit: str = "s") -> Figure:
    """Average over all cells per frame, and before/after drift correction (``hist_cum.pdf``).

    Top: the "average histogram" — the mean over all cells of all sessions of
    ``norm`` per frame, ± SEM (NaN ignored; trimmed frames shaded). Bottom, side by
    side on one y scale: the mean of ``dff_raw`` (raw divided by its own baseline,
    background not subtracted) and the mean of ``dff`` (after background subtraction and
    arPLS correction).

    Parameters
    ----------
    exp_ds : xarray.Dataset
        Experiment Dataset with dims ``(cell, time)``, variables ``norm``, ``dff`` and
        ``dff_raw`` and attributes ``experiment``, ``normalize``, ``trim_start``.
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinate (see :func:`heatmap_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: ``"average"``, ``"before"``, ``"after"``.

    Raises
    ------
    ValueError
        If a variable or the dims are missing, or ``time_unit`` is unknown.
    """
    time_unit = _check_time_unit(time_unit)
    _check_experiment(exp_ds, ["norm", "dff", "dff_raw"], "exp_ds")
    t = _coord_time(exp_ds, "exp_ds", time_unit)
    n_cell = exp_ds.sizes["cell"]
    n_sess = len(_session_groups(exp_ds))
    normalize = exp_ds.attrs.get("normalize", "?")
    trim = exp_ds.attrs.get("trim_start", 0)
    fig = Figure(figsize=(10, 7), layout="constrained")
    axd = fig.subplot_mosaic([["average", "average"], ["before", "after"]])
    fig.suptitle(f"{exp_ds.attrs.get('experiment', '?')}: average over "
                 f"{_count(n_cell, 'cell')} in {_count(n_sess, 'session')} (mean ± SEM)")

    def band(ax, values: np.ndarray, color: str, label: str) -> None:
        mean, sem, _ = _mean_sem(values)
        ax.plot(t, mean, color=color, lw=1.3, label=label)
        ax.fill_between(t, mean - sem, mean + sem, color=color, alpha=0.25, lw=0,
                        label="± SEM")

    ax = axd["average"]
    _shade_trim(ax, t, trim)
    ax.axhline(0, color="0.6", lw=0.8)
    band(ax, _values(exp_ds["norm"].transpose("cell", "time")), COLORS["corrected"],
         "mean over cells")
    ax.set_xlim(*_time_extent(t))
    ax.set_ylabel(_norm_label(normalize))
    ax.set_xlabel(_time_label(time_unit))
    ax.set_title("average of the normalized signal per frame", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)

    before, after = axd["before"], axd["after"]
    after.sharey(before)
    for ax, var, color, title in (
        (before, "dff_raw", COLORS["raw"], "before: (raw − F0) / F0, background not subtracted"),
        (after, "dff", COLORS["corrected"], "after: background + arPLS corrected, / F0"),
    ):
        ax.axhline(0, color="0.6", lw=0.8)
        band(ax, _values(exp_ds[var].transpose("cell", "time")), color, f"mean {var}")
        ax.set_xlim(*_time_extent(t))
        ax.set_xlabel(_time_label(time_unit))
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    before.set_ylabel("ΔF/F")
    after.tick_params(labelleft=False)
    return fig


# ------------------------------------------------------------------ across experiments


def _per_cell_summaries(exp_ds: xr.Dataset, /) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell mean and 95th percentile of ``norm`` over the non-trimmed frames."""
    norm = _values(exp_ds["norm"].transpose("cell", "time"))
    norm = norm[:, min(int(exp_ds.attrs.get("trim_start", 0)), norm.shape[1]):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(norm, axis=1) if norm.size else np.full(norm.shape[0], np.nan)
        peak = (np.nanpercentile(norm, 95, axis=1) if norm.size
                else np.full(norm.shape[0], np.nan))
    return mean, peak


def comparison_figure(experiments: Mapping[str, xr.Dataset], /, *,
                      time_unit: str = "s") -> Figure:
    """Experiments (conditions) side by side.

    Top: the average trace of each experiment (mean ± SEM over its cells of
    ``norm``). Bottom: per-experiment distributions (box plot with the cells as
    jittered points) of two per-cell summaries over the non-trimmed frames: the mean
    of ``norm`` and its peak (95th percentile). Cells whose ``norm`` is all NaN are
    left out of the distributions; the labels give the number of cells shown.

    Parameters
    ----------
    experiments : mapping of str to xarray.Dataset
        Experiment name → experiment Dataset (dims ``(cell, time)``, variable
        ``norm``, attributes ``normalize`` and ``trim_start``), in display order.
    time_unit : {"s", "frame"}, optional
        Unit of the ``time`` coordinates (see :func:`heatmap_figure`). Default is
        ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: ``"traces"``, ``"mean"``, ``"peak"``.

    Raises
    ------
    ValueError
        If ``experiments`` is empty, a Dataset lacks ``norm`` or the dims, or
        ``time_unit`` is unknown.

    Warns
    -----
    CalimWarning
        If the experiments were normalized differently (their values do not compare).
    """
    time_unit = _check_time_unit(time_unit)
    if not experiments:
        raise ValueError("experiments must hold at least one experiment, got none")
    for name, exp_ds in experiments.items():
        _check_experiment(exp_ds, ["norm"], f"experiments[{name!r}]")
    norms = list(dict.fromkeys(str(e.attrs.get("normalize", "?"))
                               for e in experiments.values()))
    if len(norms) > 1:
        warnings.warn(f"experiments were normalized differently ({', '.join(norms)}); "
                      "their values are not comparable", CalimWarning, stacklevel=2)
    ylabel = " | ".join(_norm_label(n) for n in norms)
    colors = [EXPERIMENT_COLORS[i % len(EXPERIMENT_COLORS)] for i in range(len(experiments))]

    fig = Figure(figsize=(10, 7.5), layout="constrained")
    axd = fig.subplot_mosaic([["traces", "traces"], ["mean", "peak"]])
    fig.suptitle(f"Comparison of {_count(len(experiments), 'experiment')}: "
                 + ", ".join(experiments))

    ax = axd["traces"]
    summaries = {}
    for (name, exp_ds), color in zip(experiments.items(), colors, strict=True):
        t = _coord_time(exp_ds, f"experiments[{name!r}]", time_unit)
        mean, sem, _ = _mean_sem(_values(exp_ds["norm"].transpose("cell", "time")))
        n = exp_ds.sizes["cell"]
        ax.plot(t, mean, color=color, lw=1.3, label=f"{name} (n = {_count(n, 'cell')})")
        ax.fill_between(t, mean - sem, mean + sem, color=color, alpha=0.2, lw=0)
        summaries[name] = _per_cell_summaries(exp_ds)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel(_time_label(time_unit))
    ax.set_ylabel(ylabel)
    ax.set_title("average trace per experiment (mean ± SEM over cells)", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)

    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    pos = np.arange(len(experiments))
    for key, which, title in (("mean", 0, "per-cell mean"),
                              ("peak", 1, "per-cell peak (95th percentile)")):
        ax = axd[key]
        labels = []
        for p, (name, vals), color in zip(pos, summaries.items(), colors, strict=True):
            v = vals[which][np.isfinite(vals[which])]
            of = f" of {vals[which].size}" if v.size < vals[which].size else ""
            labels.append(f"{name}\n(n = {v.size}{of})")
            if v.size:
                ax.boxplot([v], positions=[p], widths=0.5, showfliers=False,
                           medianprops={"color": "black"}, manage_ticks=False)
                ax.scatter(p + rng.uniform(-0.15, 0.15, v.size), v, s=12, color=color,
                           alpha=0.7, zorder=3, edgecolors="none")
        ax.set_xticks(pos, labels, fontsize=8)
        ax.set_xlim(-0.6, len(experiments) - 0.4)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} over non-trimmed frames", fontsize=10)
    return fig




# ------------------------------------------------------- features side by side


def _format_p(p: float, /) -> str:
    if not np.isfinite(p):
        return "p = n/a"
    return "p < 1e-4" if p < 1e-4 else f"p = {p:.2g}"


def _wrap_name(name: str, width: int, /) -> str:
    """Wrap a group name at ``_``, ``-`` or spaces (kept) into lines of ~``width``."""
    parts = [p for p in re.split(r"(?<=[_\- ])", name) if p]
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(line.strip() for line in lines)


def _overlapping(labels: Sequence, /, *, gap_pt: float = 3.0) -> bool:
    """Whether any two visible, non-empty tick labels overlap, or come closer than ``gap_pt``."""
    boxes = [t.get_window_extent() for t in labels if t.get_visible() and t.get_text()]
    if not boxes:
        return False
    pad = gap_pt / 2 * labels[0].get_figure(root=True).dpi / 72
    boxes = [b.padded(pad) for b in boxes]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _declutter_ticks(fig: Figure, axes: Sequence, /) -> None:
    """Rotate, then shrink, the x tick labels of ``axes`` until none overlap."""
    fig.draw_without_rendering()
    for ax in axes:
        labels = ax.get_xticklabels()
        if not _overlapping(labels):
            continue
        for t in labels:
            t.set_rotation(90)
            t.set_rotation_mode("anchor")
            t.set_horizontalalignment("right")
            t.set_verticalalignment("center")
        fig.draw_without_rendering()
        size = labels[0].get_fontsize() if labels else 8
        while _overlapping(ax.get_xticklabels()) and size > 5:
            size -= 1
            for t in ax.get_xticklabels():
                t.set_fontsize(size)
            fig.draw_without_rendering()


def _check_tests(tests: object, metrics: Sequence[str], unit: str | None, /) -> pd.DataFrame:
    """Rows of a :func:`calim_helpers.stats.condition_tests` table, one per metric."""
    needed = ["metric", "unit", "test", "statistic", "p_value"]
    if not isinstance(tests, pd.DataFrame) or any(c not in tests for c in needed):
        raise ValueError("tests must be a table from calim_helpers.stats.condition_tests "
                         f"(columns {needed})")
    missing = [m for m in metrics if m not in set(tests["metric"])]
    if missing:
        raise ValueError(f"tests has no row for metric(s) {missing}")
    units = sorted(set(tests["unit"]))
    if len(units) != 1:
        raise ValueError(f"tests must be computed at one unit, got {units}")
    if unit is not None and units != [unit]:
        raise ValueError(f"tests were computed at unit {units[0]!r}, but unit={unit!r}")
    return tests.set_index("metric").loc[list(metrics)].reset_index()


def _result_text(res: pd.Series, /) -> str:
    if res["test"] not in _TEST_NAMES:
        note = str(res.get("note", "") or "fewer than 2 groups with values")
        return "\n".join(textwrap.wrap(f"test n/a: {note}", 46))
    name, symbol = _TEST_NAMES[res["test"]]
    return f"{name}: {symbol} = {res['statistic']:.3g}, {_format_p(res['p_value'])}"


def condition_summary_figure(
    features_by_experiment: Mapping[str, pd.DataFrame] | pd.DataFrame,
    /,
    *,
    metrics: Sequence[str] = ("rate_per_min", "mean_amplitude", "participation"),
    test: str = "auto",
    amplitude_label: str = "ΔF/F",
    group_label: str = "experiment",
    unit: str | None = None,
    tests: pd.DataFrame | None = None,
    time_unit: str = "s",
) -> Figure:
    """Plot groups (experiments, or one experiment's sessions) side by side, a panel per feature.

    Each panel shows, per group, the cells as points and the result of the rank
    test of :func:`calim_helpers.stats.condition_tests` (statistic and p-value, or
    why it is not computable) in its title. At ``unit="session"`` each session's
    median is drawn as a large diamond over its cells, with a bar at the median
    of the session medians (what the test compared); at ``unit="cell"`` a box
    plot summarizes the cells. The figure says which unit the tests used; tick
    labels give the number of samples per group (and of cells). Tick labels that
    would overlap (many or long names) are wrapped, rotated, then shrunk.

    Parameters
    ----------
    features_by_experiment : mapping of str to pandas.DataFrame, or pandas.DataFrame
        Group name → its feature table (one row per cell), in display order; or
        one feature table with an ``experiment`` column.
    metrics : sequence of str, optional
        Feature columns, one panel each. Default is ``("rate_per_min",
        "mean_amplitude", "participation")``.
    test : {"auto", "mannwhitney", "kruskal"}, optional
        See :func:`calim_helpers.stats.condition_tests`. Default is ``"auto"``.
    amplitude_label : str, optional
        Unit of the amplitudes (the normalization). Default is ``"ΔF/F"``.
    group_label : str, optional
        What a group is, for the title and axis text: ``"experiment"``
        (conditions), or ``"session"`` for the sessions of one experiment
        (``sessions_summary.pdf``). Default is ``"experiment"``.
    unit : {"session", "cell"}, optional
        Statistical unit of the tests. Default is None: ``"cell"`` when
        ``group_label == "session"`` (the groups are sessions), else
        ``"session"``; or the unit of ``tests`` when given.
    tests : pandas.DataFrame, optional
        A :func:`calim_helpers.stats.condition_tests` result for these groups,
        drawn as is (``test`` is then ignored). Default is None: computed here.
    time_unit : {"s", "frame"}, optional
        Time unit the features were computed in (labels of rates and durations,
        see :func:`calim_helpers.plots.session_summary_figure`). Default is ``"s"``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric.

    Raises
    ------
    ValueError
        As :func:`calim_helpers.stats.condition_tests`, if ``metrics`` is empty,
        or if ``tests`` lacks a metric or disagrees with ``unit``.
    """
    time_unit = _check_time_unit(time_unit)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one feature column, got none")
    if unit is not None and unit not in stats.UNITS:
        raise ValueError(f"unit must be one of {stats.UNITS} or None, got {unit!r}")
    groups = stats.feature_groups(features_by_experiment)
    if tests is None:
        unit = unit or ("cell" if group_label == "session" else "session")
        results = stats.condition_tests(groups, metrics=metrics, test=test, unit=unit)
    else:
        results = _check_tests(tests, metrics, unit)
        unit = str(results["unit"].iloc[0])
    names = list(groups)
    n_groups = len(names)
    colors = [EXPERIMENT_COLORS[i % len(EXPERIMENT_COLORS)] for i in range(n_groups)]

    panel_w = max(3.2, 0.8 * n_groups + 1.3)
    n_cols = max(1, min(len(metrics), int(17.0 // panel_w)))
    n_rows = int(np.ceil(len(metrics) / n_cols))
    fig = Figure(figsize=(panel_w * n_cols, 4.3 * n_rows + 1.1), layout="constrained")
    grid = fig.add_gridspec(n_rows, n_cols)
    axes = [fig.add_subplot(grid[i // n_cols, i % n_cols]) for i in range(len(metrics))]
    pos = np.arange(n_groups)
    sessions = {name: (stats.per_session(groups[name], metrics=metrics)
                       if unit == "session" else None) for name in names}
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    for ax, metric, (_, res) in zip(axes, metrics, results.iterrows(), strict=True):
        ticks = []
        for p, name, color in zip(pos, names, colors, strict=True):
            values = groups[name][metric].to_numpy(dtype=float, copy=True)
            n_cells = int(np.isfinite(values).sum())
            n_samples = int(res.get(f"n_{name}", n_cells if unit == "cell" else 0))
            if unit == "cell":
                _strip_box(ax, p, values, color)
                count = _count(n_cells, "cell")
            else:
                v = values[np.isfinite(values)]
                ax.scatter(p + rng.uniform(-0.2, 0.2, v.size), v, s=8, color=color,
                           alpha=0.35, edgecolors="none", zorder=2)
                med = sessions[name][metric].to_numpy(dtype=float)
                med = med[np.isfinite(med)]
                ax.scatter(p + _jitter(med.size, seed=1) * 0.5, med, s=55, marker="D",
                           color=color, edgecolors="black", linewidths=0.8, zorder=4)
                if med.size:
                    ax.hlines(np.median(med), p - 0.3, p + 0.3, color="black", lw=2,
                              zorder=3)
                count = f"{_count(n_samples, 'session')}\n{_count(n_cells, 'cell')}"
            ticks.append(f"{_wrap_name(name, 12)}\n({count})")
        ax.set_xticks(pos, ticks, fontsize=8)
        ax.set_xlim(-0.6, n_groups - 0.4)
        ax.set_xlabel(group_label)
        label, metric_unit = _metric_label(metric, amplitude_label, time_unit)
        ax.set_ylabel(metric_unit)
        significant = res["test"] in _TEST_NAMES and res["p_value"] < 0.05
        ax.set_title("\n".join(textwrap.wrap(label, 40)) + "\n" + _result_text(res),
                     fontsize=9, fontweight="bold" if significant else "normal")

    shown = ", ".join(names)
    head = f"{group_label.capitalize()}s side by side: {_count(n_groups, group_label)}"
    if len(shown) <= 60:
        head += f" ({shown})"
    why = _UNIT_TEXT[unit]
    if unit == "cell" and group_label != "session":
        why += " — cells of one session are not independent: p too small"
    fig.suptitle(f"{head}\n{why}; p uncorrected, bold: p < 0.05", fontsize=10)
    if unit == "session":
        fig.legend(handles=[
            Line2D([], [], ls="", marker="o", ms=4, color="0.5", alpha=0.6, label="cell"),
            Line2D([], [], ls="", marker="D", ms=7, color="0.7", mec="black",
                   label="session median (the samples tested)"),
            Line2D([], [], color="black", lw=2, label="median of the session medians"),
        ], loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    _declutter_ticks(fig, axes)
    return fig
