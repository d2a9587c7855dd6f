"""What the notebooks show: figures displayed inline, tables, and text summaries for nbval.

Each notebook calls :func:`open_experiment` (which also sends the ``calim`` log
records to the notebook's stderr), runs its step, then calls the ``show_*`` view of the
step. A view shows the experiment-level picture of the step when several sessions are
selected, and that session's own figures when one is (``sessions = ["230404_5"]`` in
the notebook's parameters cell). Views return :class:`Figures`, which Jupyter displays
as images (and nbconvert embeds in the HTML run record); in a plain Python session
``figures[0].savefig(...)`` works as usual.

The exploration notebook (``00_explore``) uses :func:`open_session_results`,
:func:`refit_roi`, :func:`show_refit`, :func:`redetect_events` and :func:`show_events`.
"""

from __future__ import annotations

import io as _bytes_io
import json
import logging
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers import aggregate, correction, noise, plots
from calim_helpers import events as evt
from calim_helpers import io as cio
from calim_helpers.plots import overview
from calim_helpers.workflow.experiment import (
    COMPARISON_CELLS,
    COMPARISON_PDF,
    CONDITION_SUMMARY,
    Experiment,
)
from calim_helpers.workflow.steps import (
    experiment_figures,
    read_table,
    session_results,
    session_title,
    sessions_summary_figure,
    time_unit,
)

__all__ = [
    "Figures",
    "SessionResults",
    "convergence_table",
    "open_experiment",
    "open_session_results",
    "redetect_events",
    "refit_roi",
    "show_aggregate",
    "show_analysis",
    "show_arpls",
    "show_comparison",
    "show_events",
    "show_load",
    "show_refit",
    "show_rois",
    "show_session",
    "summary_aggregate",
    "summary_analysis",
    "summary_arpls",
    "summary_load",
    "summary_rois",
]

#: ROIs whose lab figures a one-session view shows.
N_EXAMPLE_ROIS = 3


class Figures(list):
    """A list of figures (matplotlib Figures or PNG files) that Jupyter shows as images."""

    def _ipython_display_(self) -> None:
        from IPython.display import Image, display

        for item in self:
            if isinstance(item, str | Path):
                display(Image(filename=str(item)))
            elif hasattr(item, "savefig"):
                buf = _bytes_io.BytesIO()
                item.savefig(buf, format="png", dpi=90)
                display(Image(data=buf.getvalue(), format="png"))
            else:
                display(item)

    def __repr__(self) -> str:
        return f"Figures({len(self)}: {', '.join(_describe(f) for f in self)})"


def _describe(item: Any) -> str:
    if isinstance(item, str | Path):
        return Path(item).name
    title = getattr(item, "_suptitle", None)
    return title.get_text() if title is not None else type(item).__name__


class _NotebookHandler(logging.StreamHandler):
    """Writes ``calim`` log records to the current ``sys.stderr`` (the cell's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def open_experiment(experiment_dir: str, out_dir: str, sessions: Iterable[str] = (),
                    /) -> Experiment:
    """Open an experiment for a notebook, and show the ``calim`` progress records.

    Parameters
    ----------
    experiment_dir : str
        The experiment folder (read only).
    out_dir : str
        Output root; the experiment's outputs go to ``out_dir/<experiment>/``.
    sessions : iterable of str, optional
        Session ids or names to keep; empty for all.

    Returns
    -------
    Experiment
    """
    logger = logging.getLogger("calim")
    if not any(isinstance(h, _NotebookHandler) for h in logger.handlers):
        handler = _NotebookHandler()
        handler.setFormatter(logging.Formatter("[calim] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return Experiment.open(experiment_dir, out_dir, list(sessions))


def _one(experiment: Experiment) -> bool:
    return len(experiment.sessions) == 1


def _with(experiment: Experiment, kind: str) -> list:
    return [s for s in experiment.sessions if experiment.has(s, kind)]


def _pngs(experiment: Experiment, session, suffixes: Iterable[str]) -> list[Path]:
    return [p for p in (experiment.file(session, f"{x}.png") for x in suffixes) if p.exists()]


# --------------------------------------------------------------------------- 01 load


def _shift_table(ds: xr.Dataset) -> pd.DataFrame | None:
    if "shifts" not in ds:
        return None
    shifts = ds["shifts"].load()
    return pd.DataFrame({"time_s": shifts["native_time"].values,
                         "dy": shifts.sel(axis="dy").values, "dx": shifts.sel(axis="dx").values,
                         "bad": ds["bad_frame"].values})


def show_load(experiment: Experiment, /) -> Figures | str:
    """MIPs and motion of every session; for one session its load and motion figures."""
    loaded = _with(experiment, "load")
    if not loaded:
        return "no session was loaded"
    if _one(experiment):
        s = loaded[0]
        ds = experiment.open_store(s, "load")
        figs = Figures([plots.load_figure(ds["mip"].values, ds["movie"].mean("time").values,
                                          title=session_title(s))])
        return Figures(figs + _pngs(experiment, s, ("shifts", "registration")))
    stores = {s.id: experiment.open_store(s, "load") for s in loaded}
    unit = time_unit(*stores.values())
    return Figures([overview.sessions_overview_figure(
        {k: ds["mip"].values for k, ds in stores.items()},
        {k: _shift_table(ds) for k, ds in stores.items()}, title=experiment.name,
        time_unit=unit)])


def summary_load(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of the load step (for nbval)."""
    lines = [f"experiment {experiment.name}: {len(experiment.sessions)} session(s)"]
    lines += _status_lines(status)
    for s in _with(experiment, "load"):
        ds = experiment.open_store(s, "load")
        moved = (f", motion {ds.attrs['shift_rms_px']:.1f} px rms"
                 if "shift_rms_px" in ds.attrs else "")
        lines.append(f"{s.id}: native {'x'.join(map(str, ds.attrs['native_shape']))} -> "
                     f"{'x'.join(map(str, ds['movie'].shape))}, "
                     f"mean {float(ds['movie'].mean()):.1f}{moved}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- 02 rois


def show_rois(experiment: Experiment, /) -> Figures | str:
    """ROI maps of every session; for one session its ROI map and raw traces."""
    done = _with(experiment, "traces")
    if not done:
        return "no session has traces"
    if _one(experiment):
        s = done[0]
        tr = experiment.open_store(s, "traces").load()
        return Figures(_pngs(experiment, s, ("rois",))
                       + [plots.traces_figure(tr, title=session_title(s),
                                              time_unit=time_unit(tr))])
    maps = {}
    for s in done:
        maps[s.id] = (experiment.open_store(s, "load")["mip"].values,
                      experiment.open_store(s, "traces")["labels"].values)
    return Figures([overview.roi_maps_figure(maps, title=experiment.name)])


def summary_rois(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of the ROI step (for nbval)."""
    lines = _status_lines(status)
    for s in _with(experiment, "traces"):
        ds = experiment.open_store(s, "traces").load()
        lines.append(f"{s.id}: {ds.sizes['roi']} ROIs, {ds.attrs['n_background_pixels']} "
                     f"background pixels, median raw {float(ds['raw'].median()):.0f}, "
                     f"median background {float(ds['background'].median()):.0f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- 03 arpls


def show_arpls(experiment: Experiment, /, *, heatmap: Mapping[str, float]) -> Figures | str:
    """Heatmap of the normalized signal of every session; for one session, example ROIs.

    With one session selected: the lab's raw/baseline and normalized figures of its
    first :data:`N_EXAMPLE_ROIS` ROIs.
    """
    results, _ = session_results(experiment)
    if not results:
        return "no session was corrected"
    if _one(experiment):
        ds = results[0]
        figs = Figures()
        for roi in ds["roi"].values.tolist()[:N_EXAMPLE_ROIS]:
            figs += [plots.roi_raw_figure(ds, roi, time_unit=time_unit(ds)),
                     plots.roi_norm_figure(ds, roi, time_unit=time_unit(ds))]
        return figs
    exp = aggregate.experiment_dataset(results)
    return Figures([plots.heatmap_figure(exp, vmin=float(heatmap["vmin"]),
                                         vmax=float(heatmap["vmax"]),
                                         time_unit=time_unit(exp))])


def convergence_table(experiment: Experiment, /) -> pd.DataFrame:
    """ROIs whose arPLS fit (of ``signal`` or of ``raw``) did not converge.

    One row per such ROI: per fit, its status (``converged``; ``stable``: ``max_iter``
    reached, the baseline stable; ``failed``, see :func:`calim_helpers.baseline.arpls`),
    iterations and final relative weight change. The ``failed`` and ``stable`` counts
    are those of the arpls status table, :func:`summary_arpls` and the QC page.
    """
    rows = []
    for s in _with(experiment, "result"):
        ds = experiment.open_store(s, "result")
        fits = {"signal": correction.fit_status(ds), "raw": correction.fit_status(ds, raw=True)}
        for i, roi in enumerate(ds["roi"].values.tolist()):
            if all(f[i] == "converged" for f in fits.values()):
                continue
            row = {"session": s.id, "roi": roi, "roi_name": str(ds["roi_name"].values[i])}
            for fit, status in fits.items():
                suffix = "" if fit == "signal" else "_raw"
                change = (float(ds[f"weight_change{suffix}"][i])
                          if f"weight_change{suffix}" in ds else float("nan"))
                row |= {f"{fit}_fit": str(status[i]),
                        f"{fit}_n_iter": int(ds[f"n_iter{suffix}"][i]),
                        f"{fit}_weight_change": change}
            rows.append(row)
    return pd.DataFrame(rows, columns=["session", "roi", "roi_name",
                                       "signal_fit", "signal_n_iter", "signal_weight_change",
                                       "raw_fit", "raw_n_iter", "raw_weight_change"])


def summary_arpls(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of the arPLS step (for nbval)."""
    lines = _status_lines(status)
    for s in _with(experiment, "result"):
        ds = experiment.open_store(s, "result").load()
        n = ds.sizes["roi"]
        fits = [correction.fit_status(ds), correction.fit_status(ds, raw=True)]
        failed, stable = ("/".join(str(int((f == k).sum())) for f in fits)
                          for k in ("failed", "stable"))
        lines.append(f"{s.id}: {n} ROIs x {ds.sizes['time']} frames, "
                     f"lam {ds.attrs['lam']:g}, fits (signal/raw) failed {failed}, "
                     f"stable at max_iter {stable}"
                     f", median {ds.attrs['normalize']} {float(ds['norm'].median()):.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- 04 analysis


def show_analysis(experiment: Experiment, /) -> Figures | str:
    """Sessions side by side (features); for one session its raster, QC and clusters."""
    done = [s for s in experiment.sessions if experiment.file(s, "features.csv").exists()]
    if not done:
        return "no session was analysed"
    if _one(experiment):
        return Figures(_pngs(experiment, done[0],
                             ("raster", "qc", "correlation", "clusters", "summary")))
    by_session, units = {}, set()
    for s in done:
        f, unit = read_table(experiment.file(s, "features.csv"))
        if len(f):
            by_session[s.id] = f
            units.add(unit)
    figs = Figures(_pngs(experiment, done[0], ("raster",)))
    if len(by_session) > 1:
        from calim_helpers import stats

        tests = stats.condition_tests(by_session, unit="cell")
        figs.insert(0, sessions_summary_figure(
            by_session, tests, time_unit="frame" if "frame" in units else "s"))
    return figs


def summary_analysis(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of the analysis step (for nbval)."""
    lines = _status_lines(status)
    for r in status.itertuples():
        if r.status == "ok":
            lines.append(f"{r.session}: {int(r.n_events)} events, {int(r.n_network_events)} "
                         f"network events, {int(r.n_clusters)} clusters, "
                         f"{int(r.low_snr_rois)} low-SNR ROIs")
    return "\n".join(lines)


# --------------------------------------------------------------------------- 05 aggregate


def show_aggregate(exp: xr.Dataset, /, *, heatmap: Mapping[str, float]) -> Figures:
    """Heatmap and average-trace figures of an experiment Dataset (as in the PDFs)."""
    return Figures(experiment_figures(exp, heatmap=heatmap).values())


def show_comparison(out_dir: str | Path, /) -> Figures | str:
    """Show the comparison across experiments, when there is one (``OUT/comparison/``)."""
    folder = Path(out_dir) / "comparison"
    names = [n for n in (COMPARISON_PDF, CONDITION_SUMMARY) if (folder / n).exists()]
    if not names:
        return "one experiment: nothing to compare"
    cells = pd.read_csv(folder / COMPARISON_CELLS)
    exps = {n: cio.open_store(Path(out_dir) / n / "experiment.zarr").load()
            for n in cells["experiment"].unique()}
    return Figures([plots.comparison_figure(exps, time_unit=time_unit(*exps.values()))])


def summary_aggregate(exp: xr.Dataset, /) -> str:
    """Return a rounded, order-stable text summary of the aggregate (for nbval)."""
    norm = exp["norm"].values
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        avg = np.nanmean(norm, axis=0)
    return "\n".join([
        f"{exp.attrs['experiment']}: {exp.sizes['cell']} ROIs from "
        f"{len(exp.attrs['sessions'])} session(s), {exp.sizes['time']} frames",
        f"normalize {exp.attrs['normalize']}, trim_start {exp.attrs['trim_start']}",
        f"median {float(np.nanmedian(norm)):.3f}, peak of the average trace "
        f"{float(np.nanmax(avg)):.3f} at frame {int(np.nanargmax(avg))}",
    ])


def _status_lines(status: pd.DataFrame) -> list[str]:
    return [f"{r.session}: {r.status}" + (f" ({_short(r.reason)})" if r.reason else "")
            for r in status.itertuples()]


def _short(reason: str) -> str:
    """Reason without machine-specific paths, for order-stable summaries."""
    return " ".join(Path(w).name if "/" in w else w for w in str(reason).split())[:120]


# --------------------------------------------------------------------------- 00 explore


@dataclass(frozen=True)
class SessionResults:
    """One session's stored results, as the pipeline wrote them."""

    experiment: Experiment
    session: Any
    load: xr.Dataset
    traces: xr.Dataset
    result: xr.Dataset

    @property
    def title(self) -> str:
        """``<experiment> <date>_<session>``."""
        return session_title(self.session)

    def roi_index(self, roi: int) -> int:
        """Position of ROI number ``roi`` (numbered from 1 in the zip's order)."""
        rois = self.result["roi"].values.tolist()
        if roi not in rois:
            raise ValueError(f"roi must be one of {rois[0]}..{rois[-1]} in {self.title}, "
                             f"got {roi!r}")
        return rois.index(roi)


def open_session_results(out_dir: str | Path, experiment_dir: str | Path, session: str,
                         /) -> SessionResults:
    """Open one session's stored results (the ``load``, ``traces`` and ``result`` stores).

    Parameters
    ----------
    out_dir : path-like
        The output root of a run (``calim run ... --out OUT``).
    experiment_dir : path-like
        The experiment folder the run read.
    session : str
        Session id (``<date>_<session>``) or name.
    """
    experiment = Experiment.open(experiment_dir, out_dir, [session])
    s = experiment.sessions[0]
    return SessionResults(experiment, s, experiment.open_store(s, "load"),
                          experiment.open_store(s, "traces").load(),
                          experiment.open_store(s, "result").load())


def show_session(results: SessionResults, /) -> Figures:
    """Show the session's MIP with its ROIs, and its QC page when the analysis ran."""
    figs = Figures(_pngs(results.experiment, results.session, ("rois", "qc")))
    if not figs:
        figs.append(plots.roi_overlay(results.load["mip"].values,
                                      results.traces["labels"].values,
                                      title=results.title))
    return figs


def refit_roi(results: SessionResults, roi: int, /, *, lam: float | None = None,
              cutoff_s: float | None = None) -> xr.Dataset:
    """Re-fit one ROI with another λ (or cut-off period in s); other settings as stored.

    Calls :func:`calim_helpers.correction.correct_traces` on the ROI's stored traces
    with the stored ``tol``, ``max_iter``, ``normalize`` and ``trim_start``.

    Parameters
    ----------
    results : SessionResults
    roi : int
        ROI number (from 1).
    lam : float, optional
        arPLS smoothness; None keeps the stored one unless ``cutoff_s`` is given.
    cutoff_s : float, optional
        Cut-off period in seconds; overrides ``lam``.

    Returns
    -------
    xarray.Dataset
        The one-ROI result (as in the ``result`` store).
    """
    i = results.roi_index(roi)
    stored = results.result.attrs
    one = results.traces.isel(roi=[i])
    return correction.correct_traces(
        one, lam=float(stored["lam"] if lam is None else lam), cutoff_s=cutoff_s,
        tol=float(stored["tol"]), max_iter=int(stored["max_iter"]),
        normalize=str(stored["normalize"]), trim_start=int(stored["trim_start"]))


def show_refit(results: SessionResults, refit: xr.Dataset, /) -> Figures:
    """Show the stored fit of a ROI next to a re-fit (:func:`refit_roi`)."""
    roi = int(refit["roi"].values[0])
    stored = results.result.isel(roi=results.roi_index(roi))
    new = refit.isel(roi=0)

    def label(attrs: Mapping[str, Any]) -> str:
        cut = attrs.get("cutoff_s")
        return f"λ = {attrs['lam']:.4g}" + (f" (cut-off {cut:.3g} s)" if cut else "")

    fits = {f"stored, {label(results.result.attrs)}": (stored["baseline"].values,
                                                       stored["norm"].values),
            f"re-fit, {label(refit.attrs)}": (new["baseline"].values, new["norm"].values)}
    return Figures([overview.fit_comparison_figure(
        stored["time"].values, stored["signal"].values, fits,
        title=f"{results.title} ROI {roi}", time_unit=time_unit(results.result),
        norm_label=plots.NORM_LABELS.get(results.result.attrs.get("normalize"),
                                         "normalized"))])


def redetect_events(results: SessionResults, roi: int, /, **events: Any) -> pd.DataFrame:
    """Detect the events of one ROI again with other ``events`` settings.

    Keywords not given keep the values of the run (its ``run_record.json``); see
    :func:`calim_helpers.events.detect_events_dataset` for their meaning.
    """
    record = results.experiment.root / "run_record.json"
    used = dict(json.loads(record.read_text())["params"]["events"]) if record.exists() else {}
    one = results.result.isel(roi=[results.roi_index(roi)])
    table = evt.detect_events_dataset(one, **(used | events))
    table.attrs["events"] = used | events  # the settings, for show_events
    return table


def show_events(results: SessionResults, roi: int, events: pd.DataFrame, /) -> Figures:
    """Show one ROI's normalized trace with the events of :func:`redetect_events`.

    The resting level and the threshold are drawn from the one noise estimate the event
    detection uses (:func:`calim_helpers.noise.noise_sigma`).
    """
    one = results.result.isel(roi=results.roi_index(roi))
    estimate = noise.noise_sigma(one["norm"].values)
    return Figures([overview.events_figure(
        one["time"].values, one["norm"].values, events, level=float(estimate.level),
        sigma=float(estimate.sigma), threshold=events.attrs.get("events", {}).get("threshold"),
        title=f"{results.title} ROI {roi}: {len(events)} events",
        time_unit=time_unit(results.result),
        norm_label=plots.NORM_LABELS.get(results.result.attrs.get("normalize"),
                                         "normalized"))])
