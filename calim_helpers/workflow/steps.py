"""The pipeline's steps for one session: read the inputs, call the science, write the outputs.

Each step body takes the :class:`~calim_helpers.workflow.experiment.Experiment`, one
session and the parameter sections it uses (as keyword arguments, exactly as in
``params/default.yaml``), and returns a small summary row for the status table. The
science lives in the modules named for each step; nothing here computes more than a
file name. :func:`calim_helpers.workflow.runner.run_step` runs a step over every session.

==========  =====================================================  ======================
step        science it calls                                       writes
==========  =====================================================  ======================
load        io.open_movie, registration.correct_motion,            ``_load.zarr``,
            denoise.denoise, downsample.downsample                 shifts, figures,
                                                                   corrected movie
rois        rois.read_rois / detection.detect_rois,                ``_traces.zarr``,
            traces.extract_traces                                  ROI map
arpls       correction.correct_traces                              ``_result.zarr``,
                                                                   per-ROI figures
analysis    analysis.analyze_session                               tables, figures
==========  =====================================================  ======================
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers import aggregate, analysis, correction, io, stats, traces
from calim_helpers import denoise as dn
from calim_helpers import events as evt
from calim_helpers import registration as reg
from calim_helpers import rois as roi_io
from calim_helpers import synchrony as syn
from calim_helpers.downsample import downsample as block_mean
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.params import too_short
from calim_helpers.workflow.experiment import (
    COMPARISON_CELLS,
    COMPARISON_PDF,
    CONDITION_SUMMARY,
    CONDITION_TESTS,
    Experiment,
)
from calim_helpers.workflow.record import EXPERIMENT_WARNINGS


class _Imported:
    """A module imported when one of its attributes is first used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


# the figures' modules (matplotlib, 32 MB) are imported once a step draws: a worker's
# load step then computes its chunks without them
plots = _Imported("calim_helpers.plots")
# automatic detection (scikit-image's filters and features, 20 MB) once the rois step
# detects: the kernels of a run on dask workers never import it, a worker only after
# its first load step
det = _Imported("calim_helpers.detection")

__all__ = ["STEPS", "Skip", "aggregate_step", "analysis_step", "arpls_step",
           "collect_analysis_step", "compare_step", "load_step", "rois_step", "session_title"]

log = logging.getLogger("calim.workflow")

#: Per-session tables written by the analysis step (``<session>_<kind>.csv``).
ANALYSIS_TABLES = ("events", "features", "network_events", "spectra")


class Skip(Exception):
    """A session that cannot go through this step for a reported, expected reason."""


def session_title(session: io.Session, /) -> str:
    """Figure title of a session: ``<experiment> <date>_<session>``."""
    return f"{session.experiment} {session.id}"


def _require(experiment: Experiment, session: io.Session, kind: str, step: str) -> None:
    if not experiment.has(session, kind):
        raise Skip(f"no result of step '{step}' ({experiment.path(session, kind).name}); "
                   f"see status/{step}.csv")


def time_unit(*datasets: xr.Dataset | xr.DataArray) -> str:
    """Return ``"s"`` when every store's frame interval is known, else ``"frame"``."""
    def known(ds: xr.Dataset | xr.DataArray) -> bool:
        value = ds.attrs.get("frame_interval_s_downsampled")
        return value is not None and bool(np.isfinite(value)) and value > 0

    return "s" if all(known(ds) for ds in datasets) else "frame"


def in_time_unit(table: pd.DataFrame, unit: str, /) -> pd.DataFrame:
    """Rename a table's time columns for ``unit`` (``"s"`` leaves it unchanged).

    With an unknown frame interval every time is counted in frames, so no column may
    claim seconds: ``*_s`` becomes ``*_frames``, ``rate_per_min`` becomes
    ``rate_per_60_frames`` and ``frequency_hz`` becomes ``frequency_per_frame``.

    Examples
    --------
    >>> t = pd.DataFrame(columns=["frame", "time_s", "rate_per_min", "dff"])
    >>> in_time_unit(t, "frame").columns.tolist()
    ['frame', 'time_frames', 'rate_per_60_frames', 'dff']
    """
    if unit == "s":
        return table

    def rename(col: Any) -> Any:
        if not isinstance(col, str):
            return col
        if col == "rate_per_min":
            return "rate_per_60_frames"
        if col == "frequency_hz":
            return "frequency_per_frame"
        return col[:-2] + "_frames" if col.endswith("_s") else col

    out = table.rename(columns=rename)
    if out.index.name is not None:
        out.index.name = rename(out.index.name)
    return out


def read_table(path: Path, /) -> tuple[pd.DataFrame, str]:
    """Read a CSV written by :func:`write_table`, its time columns named in seconds again.

    Returns the table (columns as the science names them) and the unit it was written
    in (``"s"`` or ``"frame"``).
    """
    table = pd.read_csv(path)
    back = {"rate_per_60_frames": "rate_per_min", "frequency_per_frame": "frequency_hz"}
    frames = [c for c in table.columns if c.endswith("_frames") or c in back]
    back.update({c: c[:-len("_frames")] + "_s" for c in frames if c not in back})
    return table.rename(columns=back), "frame" if frames else "s"


def _tests_in_unit(tests: pd.DataFrame, unit: str, /) -> pd.DataFrame:
    """Rename the time metrics named in a test table's ``metric`` column for ``unit``."""
    if unit == "s" or "metric" not in tests:
        return tests
    names = in_time_unit(pd.DataFrame(columns=tests["metric"].tolist()), unit).columns
    return tests.assign(metric=list(names))


def write_table(path: Path, table: pd.DataFrame, /, *, unit: str, **to_csv: Any) -> Path:
    """Write ``table`` as CSV at ``path`` atomically, its time columns named for ``unit``."""
    to_csv.setdefault("index", False)
    return io.write_text(path, in_time_unit(table, unit).to_csv(**to_csv))


# --------------------------------------------------------------------------- load


def _check_finite(movie: xr.DataArray, /) -> None:
    """Raise CalimInputError naming the file and frames if a float stack holds NaN or inf.

    One extra pass over the stack, for float recordings only (e.g. exported after a
    registration plugin, which may fill the borders it shifted in with NaN).
    """
    bad = np.flatnonzero((~da.isfinite(movie.data)).any(axis=(1, 2)).compute())
    if bad.size:
        movie.close()
        shown = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise CalimInputError(
            f"{movie.attrs['source_files'][0]}: {bad.size} of {movie.sizes['time']} frames "
            f"hold NaN or infinite pixels (frames {shown}, from 0); CALIM needs finite "
            "values: replace them (e.g. with 0 or the frame's median) or crop the borders "
            "in Fiji before the run")


def load_step(experiment: Experiment, session: io.Session, /, *, load: Mapping[str, Any],
              registration: Mapping[str, Any], denoise: Mapping[str, Any],
              downsample: Mapping[str, int], figures: Mapping[str, Any],
              outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Open the stack lazily, correct motion, denoise, block-mean downsample; store it.

    Writes ``<session>_load.zarr`` (``movie`` downsampled float32, ``mip`` native MIP
    after correction; with motion correction also ``mean_before``, ``mean_after``,
    ``shifts`` and ``bad_frame``; bad frames are left out of the block means and the
    projections, with a warning), and with motion correction ``shifts.csv``,
    ``<session>_shifts.png`` and ``<session>_registration.png``. With ``outputs.movie``
    ``native`` or ``downsampled``, also the corrected movie ``<session>_corrected.ome.tif``
    (:func:`native_movie`, written in the same pass over the stack, or
    :func:`downsampled_movie`).
    """
    for note in session.notes:  # files left aside in the session folder, in the run's record
        warnings.warn(note, CalimWarning, stacklevel=2)
    movie = io.open_movie(session, chunks={"time": int(load["chunk_time"])},
                          channel=load["channel"])
    why = too_short(movie.sizes["time"], int(downsample["time"]))
    if why is not None:
        movie.close()
        raise Skip(f"movie too short: {why}")
    if np.issubdtype(movie.dtype, np.floating):  # integer recordings hold no NaN
        _check_finite(movie)
    stack = contextlib.ExitStack()  # the native movie's file
    try:
        motion = None
        corrected = movie
        if registration["enabled"]:
            motion = reg.correct_motion(movie, **{k: v for k, v in registration.items()
                                                  if k != "enabled"})
            corrected = motion.corrected
        cleaned = dn.denoise(corrected, **denoise)
        interval = movie.attrs["frame_interval_s"]
        native = None
        if outputs["movie"] == "native":  # written as each chunk is computed: one pass
            native = stack.enter_context(native_movie(
                experiment, session, shape=cleaned.shape, dtype=movie.dtype,
                pixel_size_um=movie.attrs["pixel_size_um"], frame_interval_s=interval))
            cleaned = cleaned.copy(data=cleaned.data.map_blocks(native.write_block,
                                                                dtype=cleaned.dtype))
        # bad frames of the motion correction (dark, blurred, flashed) are left out of
        # the block means and of the projections: kept, a dark frame dips every ROI and
        # gives each an event beside the dip
        bad = motion.shifts["bad"].values if motion is not None else None
        small = block_mean(cleaned, dict(downsample), skip_frames=bad)
        good = cleaned
        if bad is not None and bad.any() and not bad.all():
            good = cleaned.isel(time=np.flatnonzero(~bad))
            shown = ", ".join(str(int(i)) for i in np.flatnonzero(bad)[:10])
            warnings.warn(
                f"{session.id}: {int(bad.sum())} of {bad.size} frames registered badly "
                f"(frames {shown}{', ...' if bad.sum() > 10 else ''}, from 0: dark, "
                "blurred, flashed or moved beyond registration.max_shift_px); they are "
                "corrected like their neighbours and left out of the downsampled frames "
                "and the projections (the bad column of shifts.csv)", CalimWarning,
                stacklevel=2)
        # only a float recording can hold NaN (correction and denoising add none); skipping
        # NaN copies every chunk (0.9 s of a full-size session's mean, cProfile)
        skipna = bool(np.issubdtype(movie.dtype, np.floating))
        ds = xr.Dataset({"movie": small,
                         "mip": good.max("time", skipna=skipna).rename(y="row", x="col")})
        summary: dict[str, Any] = {}
        if motion is not None:
            shifts = motion.shifts
            ds["mean_before"] = movie.mean("time").astype(np.float32).rename(y="row", x="col")
            ds["mean_after"] = (good.mean("time", skipna=skipna).astype(np.float32)
                                .rename(y="row", x="col"))
            ds["shifts"] = shifts.rename(time="native_time").reset_coords("bad", drop=True)
            ds["bad_frame"] = ("native_time", shifts["bad"].values)
            centred = shifts.values - np.median(shifts.values, axis=0)
            summary = {"shift_rms_px": round(float(np.sqrt(np.mean(np.sum(centred**2, 1)))), 3),
                       "max_shift_px": round(float(np.abs(shifts.values).max()), 3),
                       "bad_frames": int(shifts["bad"].values.sum())}
        for v in ds.data_vars:
            ds[v].attrs = {}
        ds.attrs = dict(small.attrs) | {
            "experiment": session.experiment, "date": session.date, "session": session.name,
            "native_shape": list(movie.shape), "dtype": str(movie.dtype),
            "saturation_value": movie.attrs.get("saturation_value"),
            "frame_interval_s_downsampled": (interval * int(downsample["time"])
                                             if interval and np.isfinite(interval) else None),
            "registration": json.dumps(dict(registration)),
            "denoise": json.dumps(dict(denoise)),
        } | ({"shift_rms_px": summary["shift_rms_px"]} if summary else {})
        ds.attrs["movie_output"] = str(outputs["movie"])
        t_chunk = max(1, int(load["chunk_time"]) // int(downsample["time"]))
        ds["movie"] = ds["movie"].chunk({"time": t_chunk, "y": -1, "x": -1})
        io.write_store(ds, experiment.path(session, "load"))
        if native is not None:
            native.commit()
    finally:
        stack.close()  # a native movie not committed is removed: nothing half-written
        movie.close()
    if outputs["movie"] == "downsampled":
        downsampled_movie(experiment, session)
    if motion is not None:
        _registration_outputs(experiment, session, figures=figures)
    return {"frames": movie.sizes["time"], "native": "x".join(map(str, movie.shape)),
            "downsampled": "x".join(map(str, small.shape)),
            "frame_interval_s": movie.attrs["frame_interval_s"],
            "pixel_size_um": movie.attrs["pixel_size_um"]} | summary


def _registration_outputs(experiment: Experiment, session: io.Session, *,
                          figures: Mapping[str, Any]) -> None:
    stored = experiment.open_store(session, "load")
    shifts = stored["shifts"].rename(native_time="time").load()
    bad = stored["bad_frame"].values
    table = pd.DataFrame({"frame": np.arange(shifts.sizes["time"]),
                          "time_s": shifts["time"].values,
                          "dy": shifts.sel(axis="dy").values, "dx": shifts.sel(axis="dx").values,
                          "bad": bad})
    unit = time_unit(stored)
    write_table(experiment.session_dir(session) / "shifts.csv", table, unit=unit)
    dpi = int(figures["dpi"])
    title = session_title(session)
    io.save_figure(plots.shifts_figure(shifts, bad=bad, title=title, time_unit=unit),
                   experiment.file(session, "shifts.png"), dpi=dpi)
    io.save_figure(plots.registration_figure(stored["mean_before"].values,
                                             stored["mean_after"].values, title=title),
                   experiment.file(session, "registration.png"), dpi=dpi)


# --------------------------------------------------------------------------- rois


def factors_used(attrs: Mapping[str, Any], /) -> dict[str, int]:
    """Return the block-mean factors the load step applied (its store's ``downsample_factors``)."""
    return {k: int(v) for k, v in (item.split("=") for item in attrs["downsample_factors"])}


def saturated_rois(session: io.Session, mip: np.ndarray, labels: np.ndarray,
                   names: Sequence[str], saturation: float | None, dtype: Any, /) -> int | None:
    """Warn naming each ROI with pixels at the camera's maximum; return how many ROIs have them.

    ``mip`` is the load store's native MIP (after motion correction), ``labels`` the
    native ROI label image (ROI ``k`` of ``names`` labelled ``k``), ``saturation`` the
    camera's largest value (the load store's ``saturation_value``, from the recording's
    bit depth; None or NaN: the dtype's maximum), ``dtype`` the recording's dtype. A
    float recording has no saturation value: None. A declared bit depth that the data
    contradict (a MIP pixel above ``1.1 * saturation``, beyond what cubic resampling
    overshoots) is not used: a warning says so and the dtype's maximum is. Counted by
    :func:`calim_helpers.traces.saturated_pixels` (its tolerance of 0.5 and the
    saturation that resampling or denoising can hide).
    """
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer):
        return None
    top = int(np.iinfo(np.dtype(dtype)).max)
    if saturation is not None and np.isfinite(saturation) and saturation < top:
        brightest = float(np.nanmax(mip)) if mip.size else 0.0
        if brightest > 1.1 * float(saturation):
            warnings.warn(
                f"{session.id}: the recording's metadata give a bit depth whose largest value "
                f"is {int(saturation)}, but the data reach {brightest:.0f}: the bit depth is "
                f"wrong; saturation is checked at {np.dtype(dtype)}'s maximum {top} instead",
                CalimWarning, stacklevel=2)
        else:
            top = int(saturation)
    hit, total = traces.saturated_pixels(mip, labels, saturation=top, n_rois=len(names))
    which = np.flatnonzero(hit)
    if which.size:
        listed = "; ".join(f"ROI {k + 1} {names[k]!r}: {hit[k]} of {total[k]} pixels"
                           for k in which)
        warnings.warn(
            f"{session.id}: {which.size} ROI(s) hold pixels that reached the camera's maximum "
            f"({top}, {np.dtype(dtype)}) in at least one frame: {listed}. Their intensity is "
            "clipped there, so these ROIs' ΔF/F is too low (transients flattened); lower the "
            "laser power, gain or exposure, or leave these ROIs out (saturated_rois in "
            "status/rois.csv)", CalimWarning, stacklevel=2)
    return int(which.size)


def rois_step(experiment: Experiment, session: io.Session, /, *, rois: Mapping[str, Any],
              detection: Mapping[str, Any], background: Mapping[str, Any],
              neuropil: Mapping[str, Any], figures: Mapping[str, Any]) -> dict[str, Any]:
    """ROIs (expert or detected) carried to the downsampled grid; ROI and background traces.

    Writes ``<session>_traces.zarr`` (``raw`` (roi, time), ``background`` (time), with
    a neuropil correction ``neuropil`` (roi, time), ...
    ``labels`` native ROI label image, the background pixel indices), ``ROIs_auto.zip``
    when detection ran, and ``<session>_rois.png`` (ROI map over the MIP).
    """
    _require(experiment, session, "load", "load")
    source = rois["source"]
    if source == "expert" and session.roi_file is None:
        raise Skip("no ROI set (ROIs/ROIs.zip, Rois/Rois.zip or RoiSet.zip) and rois.source "
                   "is 'expert'")
    loaded = experiment.open_store(session, "load")
    # the downsampled movie is small (float32, 1/40 of the native pixels): read it once
    # for the detection images and the traces instead of once per pass
    movie = loaded["movie"].load()
    native = tuple(loaded.attrs["native_shape"][1:])
    factors = factors_used(loaded.attrs)
    expert = (session_rois(session.roi_file, native) if session.roi_file is not None
              else None)
    summary: dict[str, Any] = {"roi_source": "expert" if expert else "auto",
                               "n_expert": len(expert or [])}
    auto: list = []
    if source != "expert":  # auto, or auto_if_missing: detect, and compare with experts
        try:
            auto = detection_outputs(experiment, session, movie, loaded.attrs,
                                     factors=factors, detection=detection)
        except ValueError as exc:
            if source == "auto" or expert is None:
                raise
            summary["auto_note"] = f"detection for comparison failed: {exc}"
        summary["n_auto"] = len(auto)
        if expert and auto:
            m = det.match_rois(roi_io.label_image(auto, native),
                                     roi_io.label_image(expert, native),
                                     iou_threshold=float(detection["iou_threshold"]))
            summary |= {f"auto_vs_expert_{k}": round(float(m[k]), 3)
                        for k in ("precision", "recall", "f1")}
        if source == "auto":
            summary["roi_source"] = "auto"
    if source == "expert" and not expert:
        raise Skip("no ROI of the set is an area inside the frame (see the warnings)")
    roi_list = auto if summary["roi_source"] == "auto" else expert
    if not roi_list:
        raise Skip("automatic detection found no neuron and there is no usable expert ROI")
    if source == "auto_if_missing" and expert is None:
        warnings.warn(f"{session.id}: no ROI set; its {len(roi_list)} ROI(s) were detected "
                      "automatically (ROIs_auto.zip; roi_source 'auto' in results_long.csv)",
                      CalimWarning, stacklevel=2)
    tr = traces.extract_traces(
        movie, roi_list, native_shape=native, factors=factors,
        background_fraction=float(background["fraction"]), seed=int(background["seed"]),
        pixel_size_um=_known(loaded.attrs.get("pixel_size_um")),
        **{f"neuropil_{k}": v for k, v in neuropil.items()})
    tr = tr.compute()  # small: (roi, time) traces; one pass over the downsampled movie
    labels = roi_io.label_image(roi_list, native)
    tr["labels"] = (("row", "col"), labels)
    tr.attrs |= {k: loaded.attrs[k] for k in ("experiment", "date", "session", "native_shape",
                                               "frame_interval_s_downsampled",
                                               "frame_interval_s", "pixel_size_um",
                                               "source_files", "metadata_file", "shift_rms_px")
                 if k in loaded.attrs}
    tr.attrs["roi_source"] = summary["roi_source"]
    tr.attrs["roi_file"] = (str(session.roi_file) if summary["roi_source"] == "expert"
                            else str(experiment.session_dir(session) / "ROIs_auto.zip"))
    io.write_store(tr, experiment.path(session, "traces"))
    mip = loaded["mip"].values
    names = [r.name for r in roi_list]
    summary["saturated_rois"] = saturated_rois(session, mip, labels, names,
                                               loaded.attrs.get("saturation_value"),
                                               loaded.attrs.get("dtype"))
    fig = plots.roi_overlay(mip, labels, names=names,
                            title=f"{session_title(session)}: {summary['roi_source']} ROIs "
                                  "over the MIP")
    io.save_figure(fig, experiment.file(session, "rois.png"), dpi=int(figures["dpi"]))
    return {"n_rois": len(roi_list), "n_background_pixels": int(tr.attrs["n_background_pixels"])
            } | summary


def session_rois(path: Path, native_shape: tuple[int, int], /) -> list:
    """Read the area ROIs of a ROI set that touch the frame, in zip order.

    Lines, points and other non-area ROIs (:func:`calim_helpers.rois.read_rois`) and
    ROIs entirely outside the frame (:func:`calim_helpers.rois.drop_outside`) are left
    out with a warning naming each; the kept ROIs are numbered 1..n in zip order.
    """
    kept, _ = roi_io.drop_outside(roi_io.read_rois(path), native_shape)
    return kept


def detection_outputs(experiment: Experiment, session: io.Session, movie: xr.DataArray,
                      attrs: Mapping[str, Any], /, *, factors: Mapping[str, int],
                      detection: Mapping[str, Any]) -> list:
    """Detect somata on the downsampled movie and write them as ``ROIs_auto.zip``."""
    auto = detection_rois(movie, attrs, factors=factors, detection=detection)
    path = experiment.session_dir(session) / "ROIs_auto.zip"
    if auto:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = io.atomic_path(path).with_suffix(".zip")
        roi_io.write_rois(tmp, auto)
        io.commit(tmp, path)
    return auto


def detection_rois(movie: xr.DataArray, attrs: Mapping[str, Any], /, *,
                   factors: Mapping[str, int], detection: Mapping[str, Any]) -> list:
    """:func:`calim_helpers.detection.detect_rois` with the ``detection`` section.

    ``iou_threshold`` of the section is for comparing with expert ROIs, not detection.
    """
    return det.detect_rois(movie, diameter_um=float(detection["diameter_um"]),
                           pixel_size_um=attrs.get("pixel_size_um"), factors=factors,
                           method=detection["method"],
                           diameter_range=tuple(detection["diameter_range"]))


def _known(value: Any) -> float | None:
    """Return a stored number as a float, or None where it is unknown (None or NaN)."""
    return None if value is None or not np.isfinite(value) else float(value)


# --------------------------------------------------------------------------- arpls


def arpls_step(experiment: Experiment, session: io.Session, /, *, arpls: Mapping[str, Any],
               normalize: str, trim_start: int, figures: Mapping[str, Any]) -> dict[str, Any]:
    """Drift correction and normalization of the session's traces.

    Writes ``<session>_result.zarr`` and, with ``figures.per_roi``, the lab's three
    PNGs per ROI (``<session>_mask<n>.png``, ``..._mask_arpls_clean_<n>.png``,
    ``..._mask_arpls_NORM_<n>.png``; ``n`` zero-padded so that files sort in ROI order);
    with ``figures.per_roi_pdf`` the same figures as the pages of ``<session>_rois.pdf``.
    """
    _require(experiment, session, "traces", "rois")
    tr = experiment.open_store(session, "traces").load()
    ds = correction.correct_traces(tr, **arpls, normalize=normalize, trim_start=trim_start)
    io.write_store(ds, experiment.path(session, "result"))
    if figures["per_roi"]:
        roi_figures(experiment, session, ds, dpi=int(figures["dpi"]))
    if figures["per_roi_pdf"]:
        roi_figures_pdf(experiment, session, ds)
    signal, raw = correction.fit_status(ds), correction.fit_status(ds, raw=True)
    return {"n_rois": ds.sizes["roi"], "lam": round(ds.attrs["lam"], 6),
            "cutoff_s": ds.attrs["cutoff_s"],
            "fits_failed": int((signal == "failed").sum()),
            "fits_stable": int((signal == "stable").sum()),
            "fits_failed_raw": int((raw == "failed").sum()),
            "fits_stable_raw": int((raw == "stable").sum())}


def roi_file_names(session_name: str, rois: list[int], /) -> dict[int, tuple[str, str, str]]:
    """Return the three per-ROI PNG names of each ROI number, zero-padded to sort in ROI order.

    Examples
    --------
    >>> roi_file_names("230404_5", [1, 10])[1]
    ('230404_5_mask01.png', '230404_5_mask_arpls_clean_01.png', '230404_5_mask_arpls_NORM_01.png')
    """
    width = len(str(max(rois))) if rois else 1
    return {n: (f"{session_name}_mask{n:0{width}d}.png",
                f"{session_name}_mask_arpls_clean_{n:0{width}d}.png",
                f"{session_name}_mask_arpls_NORM_{n:0{width}d}.png") for n in rois}


def roi_figures(experiment: Experiment, session: io.Session, ds: xr.Dataset, /, *,
                dpi: int) -> None:
    """Save the lab's three PNGs per ROI (raw, clean, normalized).

    One figure per kind is built once and only what each ROI changes is drawn again
    (:func:`calim_helpers.plots.traces.roi_figure_images`); the PNGs are those of
    :func:`~calim_helpers.plots.roi_raw_figure` and its siblings, pixel for pixel.
    """
    folder = experiment.session_dir(session)
    names = roi_file_names(session.name, ds["roi"].values.tolist())
    unit = time_unit(ds)
    for k, kind in enumerate(plots.ROI_FIGURE_KINDS):  # raw, clean, norm
        for n, image in plots.roi_figure_images(ds, kind, rois=list(names), time_unit=unit,
                                                dpi=dpi):
            io.save_png(image, folder / names[n][k], dpi=dpi)


def roi_figures_pdf(experiment: Experiment, session: io.Session, ds: xr.Dataset, /) -> Path:
    """Save the three figures of every ROI as the pages of ``<session>_rois.pdf``.

    ROI after ROI (raw, clean, normalized), drawn as :func:`roi_figures` draws them.
    """
    unit = time_unit(ds)
    rois = ds["roi"].values.tolist()
    pages = ((n, kind) for n in rois for kind in plots.ROI_FIGURE_KINDS)
    drawers = {kind: plots.roi_figure_pages(ds, kind, rois=rois, time_unit=unit)
               for kind in plots.ROI_FIGURE_KINDS}
    return io.save_pdf_pages((next(drawers[kind])[1] for _, kind in pages),
                             experiment.file(session, "rois.pdf"))


# --------------------------------------------------------------------------- analysis


def analysis_step(experiment: Experiment, session: io.Session, /, *,
                  events: Mapping[str, Any], synchrony: Mapping[str, Any],
                  qc: Mapping[str, Any], heatmap: Mapping[str, float],
                  figures: Mapping[str, Any], outputs: Mapping[str, Any],
                  nwb: Mapping[str, Any]) -> dict[str, Any]:
    """Events, synchrony, clusters, features and the QC page of one session.

    Writes ``<session>_{events,features,network_events,spectra}.csv``,
    ``<session>_{raster,correlation,clusters,summary,qc}.png`` and with ``outputs.nwb``
    ``<session>.nwb`` (:func:`nwb_output`), which with ``outputs.nwb_movie`` links the
    corrected movie the load step wrote.
    """
    _require(experiment, session, "result", "arpls")
    ds = experiment.open_store(session, "result").load()
    res = analysis.analyze_session(ds, events=events, synchrony=synchrony)
    unit = time_unit(ds)
    write_table(experiment.file(session, "events.csv"), res.events, unit=unit)
    write_table(experiment.file(session, "features.csv"), res.features, unit=unit)
    write_table(experiment.file(session, "network_events.csv"), res.network_table, unit=unit)
    if res.spectra is not None:
        spectra = res.spectra.to_pandas().T
        spectra.index.name = "frequency_hz"
        write_table(experiment.file(session, "spectra.csv"), spectra, unit=unit, index=True)
    dpi = int(figures["dpi"])
    for suffix, fig in session_analysis_figures(experiment, session, ds, res, qc=qc,
                                                heatmap=heatmap).items():
        io.save_figure(fig, experiment.file(session, f"{suffix}.png"), dpi=dpi)
    movie = experiment.file(session, "corrected.ome.tif")
    if outputs["nwb"] and unit == "frame":
        warnings.warn(f"{session.id}: frame interval unknown, no NWB file written (NWB "
                      "needs the imaging rate)", CalimWarning, stacklevel=2)
    elif outputs["nwb"]:
        nwb_output(experiment, session, ds, res.events, nwb=nwb,
                   sections={"events": events, "synchrony": synchrony, "qc": qc},
                   movie=_linked_movie(movie, outputs))
    snr = res.features["snr"].to_numpy(float)
    return {"n_events": len(res.events), "n_network_events": len(res.network_table),
            "network_threshold": round(float(res.network.threshold), 3),
            "n_clusters": int(np.unique(res.clusters).size),
            "low_snr_rois": int(np.sum(~(snr >= float(qc["snr_threshold"]))))}


def downsampled_movie(experiment: Experiment, session: io.Session, /) -> Path:
    """Write the stored downsampled movie as ``<session>_corrected.ome.tif``.

    It is the movie the traces were extracted from (motion-corrected, denoised if asked,
    block-mean downsampled), float32, with its pixel size and frame interval, for Fiji.
    """
    load = experiment.open_store(session, "load")
    return io.write_movie(
        load["movie"], experiment.file(session, "corrected.ome.tif"),
        pixel_size_um=_scaled(load.attrs.get("pixel_size_um"), factors_used(load.attrs)),
        frame_interval_s=load.attrs.get("frame_interval_s_downsampled"))


def _linked_movie(movie: Path, outputs: Mapping[str, Any]) -> Path | None:
    """Return the corrected movie to link from the NWB file (``outputs.nwb_movie``), if any."""
    if not outputs["nwb_movie"]:
        return None
    if not movie.exists():
        warnings.warn(f"{movie}: not found, the NWB file does not link the corrected movie "
                      "(it is written by the load step; run it again)", CalimWarning,
                      stacklevel=3)
        return None
    return movie


def native_movie(experiment: Experiment, session: io.Session, /, *,
                 shape: tuple[int, int, int], dtype: Any, pixel_size_um: float | None,
                 frame_interval_s: float | None) -> io.MovieFile:
    """Open the native corrected movie ``<session>_corrected.ome.tif`` for writing.

    The movie the traces come from before downsampling (motion-corrected, denoised if
    asked) at the recording's resolution and in its pixel type (for an integer recording,
    resampled values rounded to whole counts; :func:`calim_helpers.io.as_pixel_type`),
    calibrated for Fiji.

    Parameters
    ----------
    experiment, session
        Where it goes: ``<session folder>/<session>_corrected.ome.tif``.
    shape : (int, int, int)
        (time, y, x) of the native movie.
    dtype : numpy dtype
        The recording's pixel type.
    pixel_size_um : float or None
        Native pixel size, µm; None when unknown.
    frame_interval_s : float or None
        Native frame interval, s; None when unknown.

    Returns
    -------
    calim_helpers.io.MovieFile
        Written block by block (:meth:`~calim_helpers.io.MovieFile.write_block`), then
        committed.
    """
    return io.MovieFile(experiment.file(session, "corrected.ome.tif"), shape, dtype,
                        pixel_size_um=_scaled(pixel_size_um, {"y": 1, "x": 1}),
                        frame_interval_s=frame_interval_s)


def _scaled(pixel_size_um: Any, factors: Mapping[str, int]) -> tuple[float, float] | None:
    """(height, width) of a pixel binned by ``factors``, µm; None when unknown."""
    if pixel_size_um is None or not np.isfinite(float(pixel_size_um)):
        return None
    return float(pixel_size_um) * factors["y"], float(pixel_size_um) * factors["x"]


def nwb_output(experiment: Experiment, session: io.Session, result: xr.Dataset,
               events: pd.DataFrame, /, *, nwb: Mapping[str, Any],
               sections: Mapping[str, Any], movie: Path | None = None) -> Path:
    """Write ``<session>.nwb`` (:func:`calim_helpers.nwb.session_nwbfile`).

    The ROI masks are rasterized again from the ROI set the traces used (the label image
    cannot hold overlapping ROIs). The parameters recorded in the file are the run's
    (``run_record.json``) when there is one, else the sections this step received.
    """
    from calim_helpers import __version__
    from calim_helpers import nwb as nwb_io

    load = experiment.open_store(session, "load")
    tr = experiment.open_store(session, "traces").load()
    shape = tuple(load.attrs["native_shape"][1:])
    roi_list = session_rois(tr.attrs["roi_file"], shape)  # the ROIs the traces used
    masks = np.stack([roi_io.rasterize(r, shape) for r in roi_list])
    record = experiment.root / "run_record.json"
    params = (json.loads(record.read_text())["params"] if record.exists()
              else {"nwb": dict(nwb)} | dict(sections))
    nwbfile = nwb_io.session_nwbfile(load, tr, result, events=events, masks=masks, nwb=nwb,
                                     params=params, version=__version__,
                                     movie_file=None if movie is None else movie.name)
    return nwb_io.write_nwb(nwbfile, experiment.session_dir(session) / f"{session.name}.nwb")


def session_analysis_figures(experiment: Experiment, session: io.Session, ds: xr.Dataset,
                             res: analysis.SessionAnalysis, /, *, qc: Mapping[str, Any],
                             heatmap: Mapping[str, float]) -> dict[str, Any]:
    """Return the analysis figures of one session: raster, correlation, clusters, summary, QC."""
    title = session_title(session)
    amplitude = analysis.AMPLITUDE_UNITS.get(ds.attrs.get("normalize"), "normalized")
    unit = time_unit(ds)
    labels = [f"{n} {nm}" for n, nm in zip(ds["roi"].values.tolist(),
                                             ds["roi_name"].values.tolist(), strict=True)]
    order = np.asarray(res.order)
    load = experiment.open_store(session, "load")
    tr = experiment.open_store(session, "traces")
    shifts = load["shifts"].rename(native_time="time").load() if "shifts" in load else None
    bad = load["bad_frame"].values if "bad_frame" in load else None
    return {
        "raster": plots.raster_figure(res.events, ds.sizes["roi"], ds["time"].values,
                                      network=res.network_table, order=order,
                                      roi_labels=labels, title=title, time_unit=unit),
        "correlation": plots.correlation_figure(res.corr, order=order, clusters=res.clusters,
                                                labels=labels, title=title),
        "clusters": plots.cluster_heatmap_figure(
            ds["norm"].transpose("roi", "time").values, ds["time"].values, order=order,
            clusters=res.clusters, vmin=float(heatmap["vmin"]), vmax=float(heatmap["vmax"]),
            label=plots.NORM_LABELS.get(ds.attrs.get("normalize"), "normalized"), title=title,
            time_unit=unit),
        "summary": plots.session_summary_figure(res.features, amplitude_label=amplitude,
                                                title=title, time_unit=unit),
        "qc": plots.qc_figure(load["mip"].values, tr["labels"].values, shifts,
                              ds["background"], correction.fit_status(ds),
                              res.features["snr"].to_numpy(float),
                              fit_status_raw=correction.fit_status(ds, raw=True),
                              snr_threshold=float(qc["snr_threshold"]), bad_frames=bad,
                              title=title, time_unit=unit),
    }


#: Step name -> step body.
STEPS = {"load": load_step, "rois": rois_step, "arpls": arpls_step, "analysis": analysis_step}


# --------------------------------------------------------------------------- experiment


def session_results(experiment: Experiment, /) -> tuple[list[xr.Dataset], list[str]]:
    """Return the loaded result stores of the selected sessions, and the ids of those without."""
    results, missing = [], []
    for s in experiment.sessions:
        if experiment.has(s, "result"):
            results.append(experiment.open_store(s, "result").load())
        else:
            missing.append(s.id)
    return results, missing


@contextlib.contextmanager
def recording_warnings(experiment: Experiment, step: str, /) -> Any:
    """Record the warnings raised inside as ``step``'s rows of ``status/experiment.csv``.

    They are raised again on leaving, so the notebook shows them as before; the rows of
    ``step`` from an earlier run are replaced.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            path = experiment.root / EXPERIMENT_WARNINGS
            rows = pd.read_csv(path, dtype=str).fillna("") if path.exists() else None
            kept = [] if rows is None else rows[rows["step"] != step].to_dict("records")
            kept += [{"step": step, "warning": m} for m in dict.fromkeys(
                f"{w.category.__name__}: {w.message}" for w in caught)]
            io.write_text(path, pd.DataFrame(kept, columns=["step", "warning"])
                          .to_csv(index=False))
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def aggregate_step(experiment: Experiment, /, *, heatmap: Mapping[str, float]) -> xr.Dataset:
    """Write the experiment's tables and figures from its sessions' results (SPEC §3).

    Writes under ``OUT/<experiment>/``: ``results_raw.csv`` (corrected signal) and
    ``results_norm.csv`` (normalized signal; one column per ROI, one row per
    downsampled frame), ``results_long.csv`` (tidy), ``heatmap.pdf``, ``hist_cum.pdf``
    with ``hist_cum.csv`` (the average trace: mean, SEM and count over cells per frame)
    and ``experiment.zarr``; its warnings also go to ``status/experiment.csv``.

    Returns
    -------
    xarray.Dataset
        The experiment Dataset (:func:`calim_helpers.aggregate.experiment_dataset`).
    """
    results, missing = session_results(experiment)
    if missing:
        log.warning("%s aggregate: left out (no result): %s", experiment.name,
                    ", ".join(missing))
    root = experiment.root
    with recording_warnings(experiment, "aggregate"):
        exp = aggregate.experiment_dataset(results)
        unit = time_unit(exp)
        write_table(root / "results_raw.csv", aggregate.wide_table(exp, "corrected"),
                    unit=unit)
        write_table(root / "results_norm.csv", aggregate.wide_table(exp, "norm"), unit=unit)
        write_table(root / "results_long.csv", aggregate.tidy_table(exp), unit=unit)
        write_table(root / "hist_cum.csv", aggregate.average_trace(exp), unit=unit)
        for name, fig in experiment_figures(exp, heatmap=heatmap).items():
            io.save_figure(fig, root / f"{name}.pdf")
        io.write_store(exp, root / "experiment.zarr")
    log.info("%s aggregate: %d ROIs from %d session(s)", experiment.name, exp.sizes["cell"],
             len(results))
    return exp


def experiment_figures(exp: xr.Dataset, /, *, heatmap: Mapping[str, float]) -> dict[str, Any]:
    """``heatmap`` and ``hist_cum`` figures of an experiment Dataset."""
    unit = time_unit(exp)
    return {"heatmap": plots.heatmap_figure(exp, vmin=float(heatmap["vmin"]),
                                            vmax=float(heatmap["vmax"]), time_unit=unit),
            "hist_cum": plots.hist_cum_figure(exp, time_unit=unit)}


def collect_analysis_step(experiment: Experiment, /) -> dict[str, pd.DataFrame]:
    """Gather the sessions' analysis tables into the experiment's CSVs.

    Writes ``events.csv``, ``features.csv`` (one row per ROI, ready for machine
    learning), ``network_events.csv`` and, when there are several sessions,
    ``sessions_summary.pdf`` with ``sessions_tests.csv`` (sessions side by side, a
    rank test per metric with each ROI a sample: the only unit within one condition)
    under ``OUT/<experiment>/``. Tables without rows keep their header. Times are in
    seconds when every session has the same known frame interval, else in recorded
    frames (:func:`calim_helpers.aggregate.time_base`), each session's converted. Its
    warnings also go to ``status/experiment.csv``.
    """
    with recording_warnings(experiment, "analysis tables"):
        return _collect_analysis(experiment)


def _collect_analysis(experiment: Experiment, /) -> dict[str, pd.DataFrame]:
    done = [s for s in experiment.sessions if experiment.has(s, "result")]
    unit, intervals = aggregate.time_base([experiment.open_store(s, "result") for s in done])
    interval_of = dict(zip((s.id for s in done), intervals, strict=True))
    tables: dict[str, list[pd.DataFrame]] = {k: [] for k in ANALYSIS_TABLES[:3]}
    for s in done:
        for kind, parts in tables.items():
            path = experiment.file(s, f"{kind}.csv")
            if path.exists():
                part, part_unit = read_table(path)
                if unit == "frame" and part_unit == "s":  # one unit per experiment table
                    part = aggregate.seconds_to_frames(part, interval_of[s.id])
                if kind == "network_events":
                    part.insert(0, "session", s.name)
                    part.insert(0, "date", s.date)
                parts.append(part)
    out = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=_EMPTY[k])
           for k, v in tables.items()}
    for kind, table in out.items():
        write_table(experiment.root / f"{kind}.csv", table, unit=unit)
    feats = out["features"]
    if len(feats) and feats[["date", "session"]].drop_duplicates().shape[0] > 1:
        by_session = {f"{d}_{s}": g for (d, s), g in feats.groupby(["date", "session"],
                                                                     sort=False)}
        tests = stats.condition_tests(by_session, unit="cell")
        write_table(experiment.root / "sessions_tests.csv", _tests_in_unit(tests, unit),
                    unit=unit)
        io.save_figure(sessions_summary_figure(by_session, tests, time_unit=unit),
                       experiment.root / "sessions_summary.pdf")
    else:  # not two sessions to compare: nothing of an earlier run may stay
        for name in ("sessions_tests.csv", "sessions_summary.pdf"):
            (experiment.root / name).unlink(missing_ok=True)
    return out


# the header of each experiment table when no session has a row
_RECORDED = ["normalize", "trim_start"]
_EMPTY = {"events": [*evt.DATASET_COLUMNS, *_RECORDED],
          "features": [*syn.FEATURE_COLUMNS, "fit_status", *_RECORDED],
          "network_events": ["date", "session", *syn.NETWORK_COLUMNS, "start_s", "end_s"]}


def sessions_summary_figure(by_session: Mapping[str, pd.DataFrame], tests: pd.DataFrame,
                            /, *, time_unit: str = "s") -> Any:
    """Sessions of one experiment side by side (per-ROI features, each ROI a sample)."""
    first = next(iter(by_session.values()))
    unit = analysis.AMPLITUDE_UNITS.get(str(first["normalize"].iloc[0]), "normalized")
    return plots.condition_summary_figure(by_session, amplitude_label=unit,
                                          group_label="session", tests=tests,
                                          time_unit=time_unit)


def compare_step(out_dir: Path, names: Sequence[str], /, *,
                 statistics: Mapping[str, Any]) -> pd.DataFrame:
    """Put experiments (conditions) side by side under ``OUT/comparison/``.

    Writes ``comparison.pdf`` (average traces, per-cell summaries),
    ``comparison_cells.csv`` and, when the experiments have ``features.csv``,
    ``condition_summary.pdf`` with ``condition_tests.csv``: event rate, amplitude and
    participation per condition, Mann-Whitney for two experiments, Kruskal-Wallis for
    more, with the statistical unit ``statistics.unit`` (``session``: each session's
    median over its ROIs is one sample; ``cell``: each ROI is one).

    Returns
    -------
    pandas.DataFrame
        :func:`calim_helpers.aggregate.cell_summaries` of the experiments.
    """
    out_dir = Path(out_dir)
    exps = {n: io.open_store(out_dir / n / "experiment.zarr").load() for n in names}
    table = aggregate.cell_summaries(exps)
    io.write_text(out_dir / "comparison" / COMPARISON_CELLS, table.to_csv(index=False))
    io.save_figure(plots.comparison_figure(exps, time_unit=time_unit(*exps.values())),
                   out_dir / "comparison" / COMPARISON_PDF)
    features, time_units = {}, set()
    for n in names:
        path = out_dir / n / "features.csv"
        if path.exists():
            f, f_unit = read_table(path)
            if len(f):
                features[n] = f
                time_units.add(f_unit)
    if len(features) > 1:
        unit = "frame" if "frame" in time_units else "s"
        tests = stats.condition_tests(features, unit=statistics["unit"])
        write_table(out_dir / "comparison" / CONDITION_TESTS,
                    _tests_in_unit(tests, unit), unit=unit)
        units = {analysis.AMPLITUDE_UNITS.get(str(f["normalize"].iloc[0]), "normalized")
                 for f in features.values()}
        io.save_figure(plots.condition_summary_figure(
            features, amplitude_label=units.pop() if len(units) == 1 else "normalized",
            group_label="experiment", tests=tests, time_unit=unit),
            out_dir / "comparison" / CONDITION_SUMMARY)
    else:
        for name in (CONDITION_TESTS, CONDITION_SUMMARY):
            (out_dir / "comparison" / name).unlink(missing_ok=True)
    return table
