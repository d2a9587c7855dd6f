"""The CALIM pipeline steps, one function per notebook, each over all sessions of an experiment.

The notebooks (``notebooks/01_load.py`` ... ``04_aggregate.py``) stay thin: they call
these functions and show what comes back. Every step processes each session on its own:
a session that fails is reported (session, step, reason) in the returned status table and
in ``OUT/<experiment>/status/<step>.csv``, and the other sessions still complete. A step
whose input (the previous step's result) is missing reports the session as ``skipped``.

Files per session, under ``OUT/<experiment>/<date>/<session>/``:

- ``<session>_load.zarr`` -- the downsampled movie (float32) and the native MIP (step 1);
- ``<session>_traces.zarr`` -- ROI traces, background, ROI label image (step 2);
- ``<session>_result.zarr`` -- the per-session result Dataset (step 3; see
  :func:`correct_session` for its variables), read by step 4.

Every file appears atomically (written under a temporary name, then renamed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from calim_helpers import analysis_figures as afigs
from calim_helpers import baseline as bl
from calim_helpers import denoise as dn
from calim_helpers import detection as det
from calim_helpers import events as evt
from calim_helpers import figures as figs
from calim_helpers import io, traces
from calim_helpers import normalize as nm
from calim_helpers import registration as reg
from calim_helpers import rois as roi_io
from calim_helpers import synchrony as syn
from calim_helpers.downsample import downsample as block_mean
from calim_helpers.errors import CalimInputError, CalimWarning

__all__ = [
    "Experiment",
    "aggregate_experiment",
    "compare_experiments",
    "correct_session",
    "experiment_dataset",
    "run_step",
]

# unit of event amplitudes for each normalization, for figure labels
AMPLITUDE_UNIT = {"dff": "ΔF/F", "session": "corrected / S", "zscore": "noise σ"}
PACKAGES = ("calim", "numpy", "scipy", "tifffile", "imagecodecs", "roifile", "xarray", "dask",
            "zarr", "matplotlib", "pandas", "scikit-image", "threadpoolctl", "papermill",
            "jupytext", "nbconvert")


# --------------------------------------------------------------------------- experiment


@dataclass(frozen=True)
class Experiment:
    """An experiment folder, its selected sessions and where its outputs go.

    Parameters
    ----------
    experiment_dir : path-like
        The experiment folder (date/session tree), read only.
    out_dir : path-like
        Output root; this experiment's files go to ``out_dir/<experiment name>/``.
    sessions : sequence of str, optional
        Session ids (``"<date>_<session>"``) or names (``"<session>"``) to keep.
        Default is all.
    """

    experiment_dir: Path
    out_dir: Path
    sessions: tuple[io.Session, ...]

    @classmethod
    def open(cls, experiment_dir: str | Path, out_dir: str | Path,
             sessions: Sequence[str] = ()) -> Experiment:
        """Find the sessions of ``experiment_dir`` and keep those named in ``sessions``."""
        found = io.find_sessions(experiment_dir)
        if sessions:
            wanted = set(sessions)
            known = {s.id for s in found} | {s.name for s in found}
            unknown = sorted(wanted - known)
            if unknown:
                raise CalimInputError(
                    f"{experiment_dir}: no session {', '.join(unknown)} "
                    f"(known: {', '.join(s.id for s in found)})")
            found = [s for s in found if s.id in wanted or s.name in wanted]
        return cls(Path(experiment_dir), Path(out_dir), tuple(found))

    @property
    def name(self) -> str:
        """Experiment (condition) name: the folder's name."""
        return self.experiment_dir.name

    @property
    def root(self) -> Path:
        """Output folder of the experiment."""
        return self.out_dir / self.name

    def session_dir(self, session: io.Session) -> Path:
        """Output folder of one session (mirrors the input tree)."""
        return self.root / session.date / session.name

    def path(self, session: io.Session, kind: str) -> Path:
        """Path of a session's ``load``, ``traces`` or ``result`` store."""
        return self.session_dir(session) / f"{session.name}_{kind}.zarr"

    def table(self) -> pd.DataFrame:
        """One row per selected session: id, stack files, ROI set."""
        return pd.DataFrame([{
            "session": s.id, "stack_files": len(s.stack_files),
            "roi_file": str(s.roi_file.relative_to(s.path)) if s.roi_file else "none",
        } for s in self.sessions])


# --------------------------------------------------------------------------- storage


def _write_zarr(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to a Zarr store atomically (temporary folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = io.atomic_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)  # left by an interrupted earlier run
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
    return path


def open_store(path: str | Path, /) -> xr.Dataset:
    """Open a step's Zarr store lazily."""
    path = Path(path)
    if not path.exists():
        raise CalimInputError(f"{path}: not found (did the previous step fail?)")
    return xr.open_zarr(path, consolidated=True)


def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes a Zarr store can hold: NaN becomes None, tuples become lists."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, float) and not np.isfinite(v):
            v = None
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


# --------------------------------------------------------------------------- step runner


def run_step(
    step: str,
    experiment: Experiment,
    /,
    *,
    echo: Callable[[str], None] = print,
    **params: Any,
) -> pd.DataFrame:
    """Run one pipeline step on every selected session, isolating failures.

    Parameters
    ----------
    step : {"load", "rois", "arpls", "analysis"}
        Which step.
    experiment : Experiment
        The sessions and the output root.
    echo : callable, optional
        Receives one progress line per session. Default is :func:`print`.
    **params
        The step's parameters (the top-level sections of ``params/default.yaml`` it uses),
        and ``compute``: ``scheduler`` (``"threads"``, ``"synchronous"`` or a running dask
        cluster's address, to which each session is submitted whole; its workers must see
        the same files and have calim installed) and ``parallel_sessions`` (sessions run
        at once on this machine). Default is one session at a time, threads.

    Returns
    -------
    pandas.DataFrame
        One row per session: ``session``, ``status`` (ok / skipped / failed),
        ``seconds``, ``reason``, and the step's summary columns. Also written to
        ``OUT/<experiment>/status/<step>.csv``.
    """
    if step not in _STEP_FUNCS:
        raise ValueError(f"step must be one of {tuple(_STEP_FUNCS)}, got {step!r}")
    compute = dict(params.pop("compute", None) or {})
    scheduler = str(compute.get("scheduler", "threads"))
    n_parallel = int(compute.get("parallel_sessions", 1))
    if n_parallel < 1:
        raise CalimInputError(f"compute.parallel_sessions must be >= 1, got {n_parallel}")
    sessions = experiment.sessions
    n = len(sessions)
    rows: list[dict[str, Any]] = [{} for _ in sessions]

    def report(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        msg = f"[{experiment.name} {step} {i + 1}/{n}] {row['session']}: {row['status']}"
        msg += f" in {row['seconds']} s" + (f" - {row['reason']}" if row["reason"] else "")
        echo(msg)

    if "://" in scheduler:
        with _cluster_client(scheduler) as client:
            futures = {client.submit(_run_session, step, experiment, s, params, pure=False): i
                       for i, s in enumerate(sessions)}
            for future, i in futures.items():  # in session order; they run concurrently
                report(i, future.result())
    else:
        if scheduler not in ("threads", "synchronous"):
            raise CalimInputError(
                f"compute.scheduler must be 'threads', 'synchronous' or a dask cluster "
                f"address such as 'tcp://host:8786', got {scheduler!r}")
        with ThreadPoolExecutor(max_workers=n_parallel) as pool:
            futures = {pool.submit(_run_session, step, experiment, s, params, scheduler): i
                       for i, s in enumerate(sessions)}
            for future in as_completed(futures):
                report(futures[future], future.result())
    table = pd.DataFrame(rows)
    first = ["session", "status", "seconds", "reason"]
    table = table[first + [c for c in table.columns if c not in first]]
    io.write_text(experiment.root / "status" / f"{step}.csv", table.to_csv(index=False))
    return table


def _run_session(step: str, experiment: Experiment, session: io.Session,
                 params: Mapping[str, Any], scheduler: str = "threads") -> dict[str, Any]:
    """One session through one step: a status row; never raises (runs on cluster workers)."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {"session": session.id}
    _clear_from(experiment, session, step)
    try:
        with dask.config.set(scheduler=scheduler):  # chunk work stays on this process
            row |= {"status": "ok", "reason": ""} | _STEP_FUNCS[step](experiment, session,
                                                                       **params)
    except _Skip as exc:
        row |= {"status": "skipped", "reason": str(exc)}
    except CalimInputError as exc:
        row |= {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one session's failure must not stop others
        tb = traceback.format_exc(limit=-2).strip().splitlines()
        row |= {"status": "failed", "reason": f"{type(exc).__name__}: {exc} ({tb[-3:]})"}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


@contextlib.contextmanager
def _cluster_client(address: str):
    """Yield a dask.distributed client of the running cluster at ``address``."""
    try:
        from distributed import Client
    except ImportError:
        raise CalimInputError(
            f"compute.scheduler {address!r} is a dask cluster address, which needs "
            "dask.distributed: pip install 'calim[cluster]'") from None
    try:
        client = Client(address, set_as_default=False, timeout="20s")
    except OSError as exc:
        raise CalimInputError(f"compute.scheduler: no dask cluster at {address} ({exc})"
                              ) from None
    try:
        yield client
    finally:
        client.close()


_STORES_FROM = {"load": ("load", "traces", "result"), "rois": ("traces", "result"),
                "arpls": ("result",), "analysis": ()}
_TABLES = ("events", "features", "network_events", "spectra")


def _clear_from(experiment: Experiment, session: io.Session, step: str) -> None:
    """Remove what this step and the later ones wrote for ``session`` in an earlier run.

    A session that fails or is skipped now must not pass stale results of a previous run
    (possibly with other parameters) on to the next steps and the experiment tables.
    """
    for kind in _STORES_FROM[step]:
        shutil.rmtree(experiment.path(session, kind), ignore_errors=True)
    for kind in _TABLES:
        (experiment.session_dir(session) / f"{session.name}_{kind}.csv").unlink(missing_ok=True)


class _Skip(Exception):
    """A session that cannot go through this step for a reported, expected reason."""


def _require(path: Path, step: str) -> None:
    if not path.exists():
        raise _Skip(f"no result of step '{step}' ({path.name}); see status/{step}.csv")


# --------------------------------------------------------------------------- step 1: load


def register_movie(movie: xr.DataArray, /, *, registration: Mapping[str, Any]
                   ) -> tuple[xr.DataArray, xr.DataArray | None]:
    """Motion-correct a native movie lazily, per the ``registration`` parameters.

    Returns
    -------
    corrected : xarray.DataArray
        float32, lazy (the movie itself when registration is disabled).
    shifts : xarray.DataArray or None
        (time, axis ``["dy", "dx"]``) correction applied, native px (for ``piecewise``,
        the mean over patches), with a boolean ``bad`` coordinate: frames whose shift
        reached ``max_shift_px`` or whose peak correlation with the template is below
        half the session's median.
    """
    if not registration.get("enabled", True):
        return movie, None
    max_shift = registration.get("max_shift_px")
    up = int(registration["upsample_factor"])
    template = reg.make_template(movie, n_frames=int(registration["template_frames"]),
                                 upsample_factor=up)
    if registration.get("method", "rigid") == "piecewise":
        field = reg.piecewise_shifts(movie, template, grid=tuple(registration["grid"]),
                                     upsample_factor=up, max_shift_px=max_shift)
        corrected = reg.apply_piecewise(movie, field)
        shifts = field.reset_coords(drop=True).mean(("patch_y", "patch_x"))
        clipped = np.asarray(field.coords["clipped"].any(("patch_y", "patch_x")).values, bool)
        corr = np.asarray(field.coords["peak_corr"].median(("patch_y", "patch_x")).values,
                          float)
    else:
        shifts = reg.estimate_shifts(movie, template, upsample_factor=up,
                                     max_shift_px=max_shift)
        corrected = reg.apply_shifts(movie, shifts)
        clipped = np.asarray(shifts.coords["clipped"].values, bool)
        corr = np.asarray(shifts.coords["peak_corr"].values, float)
    # a frame is bad when its shift hit the limit or it hardly resembles the template
    # (peak correlation below half the session's median; bursts of activity lower it a
    # little, a frame out of focus or a shutter artefact a lot)
    med = np.nanmedian(corr) if np.isfinite(corr).any() else np.nan
    low = corr < 0.5 * med if np.isfinite(med) else np.zeros_like(clipped)
    shifts = shifts.reset_coords(drop=True).assign_coords(bad=("time", clipped | low))
    return corrected, shifts


def _load_session(experiment: Experiment, session: io.Session, *,
                  load: Mapping[str, int], downsample: Mapping[str, int],
                  registration: Mapping[str, Any] | None = None,
                  denoise: Mapping[str, Any] | None = None,
                  figures: Mapping[str, Any] | None = None) -> dict[str, Any]:
    movie = io.open_movie(session, chunks={"time": int(load["chunk_time"])})
    corrected, shifts = register_movie(movie, registration=registration or {"enabled": False})
    d = dict(denoise or {"method": "none"})
    cleaned = dn.denoise(corrected, method=d.pop("method", "none"), **d)
    small = block_mean(cleaned, dict(downsample))
    mip = cleaned.max("time").rename(y="row", x="col")
    ds = xr.Dataset({"movie": small, "mip": mip})
    summary: dict[str, Any] = {}
    if shifts is not None:
        ds["mean_before"] = movie.mean("time").astype(np.float32).rename(y="row", x="col")
        ds["mean_after"] = cleaned.mean("time").astype(np.float32).rename(y="row", x="col")
        ds["shifts"] = shifts.rename(time="native_time").reset_coords("bad", drop=True)
        ds["bad_frame"] = ("native_time", shifts["bad"].values)
        centred = shifts.values - np.median(shifts.values, axis=0)
        rms = float(np.sqrt(np.mean(np.sum(centred**2, axis=1))))
        summary = {"shift_rms_px": round(rms, 3),
                   "max_shift_px": round(float(np.abs(shifts.values).max()), 3),
                   "bad_frames": int(shifts["bad"].values.sum())}
    ds["movie"].attrs = {}
    for v in ("mip", "mean_before", "mean_after"):
        if v in ds:
            ds[v].attrs = {}
    ds.attrs = _json_safe(small.attrs) | {
        "experiment": session.experiment, "date": session.date, "session": session.name,
        "native_shape": list(movie.shape), "dtype": str(movie.dtype),
        "frame_interval_s_downsampled": _ds_interval(movie.attrs["frame_interval_s"],
                                                     downsample.get("time", 1)),
        "registration": json.dumps(dict(registration or {"enabled": False})),
        "denoise": json.dumps(dict(denoise or {"method": "none"})),
    } | ({"shift_rms_px": summary["shift_rms_px"]} if summary else {})
    t_chunk = max(1, int(load["chunk_time"]) // int(downsample.get("time", 1)))
    ds["movie"] = ds["movie"].chunk({"time": t_chunk, "y": -1, "x": -1})
    try:
        with dask.config.set(scheduler="threads"):
            _write_zarr(ds, experiment.path(session, "load"))
    finally:
        movie.close()
    if shifts is not None:
        _registration_outputs(experiment, session, shifts, ds, dpi=int((figures or {}).get(
            "dpi", 100)))
    return {"frames": movie.sizes["time"], "native": "x".join(map(str, movie.shape)),
            "downsampled": "x".join(map(str, small.shape)),
            "frame_interval_s": movie.attrs["frame_interval_s"],
            "pixel_size_um": movie.attrs["pixel_size_um"]} | summary


def _registration_outputs(experiment: Experiment, session: io.Session, shifts: xr.DataArray,
                          ds: xr.Dataset, *, dpi: int) -> None:
    folder, name = experiment.session_dir(session), session.name
    table = pd.DataFrame({"frame": np.arange(shifts.sizes["time"]),
                          "time_s": shifts["time"].values,
                          "dy": shifts.sel(axis="dy").values, "dx": shifts.sel(axis="dx").values,
                          "bad": shifts["bad"].values})
    io.write_text(folder / "shifts.csv", table.to_csv(index=False))
    title = f"{session.experiment} {session.id}"
    io.save_figure(afigs.shifts_figure(shifts.reset_coords("bad", drop=True),
                                       bad=shifts["bad"].values, title=title),
                   folder / f"{name}_shifts.png", dpi=dpi)
    stored = open_store(experiment.path(session, "load"))
    io.save_figure(afigs.registration_figure(stored["mean_before"].values,
                                             stored["mean_after"].values, title=title),
                   folder / f"{name}_registration.png", dpi=dpi)


def _ds_interval(interval_s: float, factor: int) -> float | None:
    return None if interval_s is None or not np.isfinite(interval_s) else interval_s * factor


# --------------------------------------------------------------------------- step 2: rois


def _factors_used(attrs: Mapping[str, Any]) -> dict[str, int]:
    """Return the block-mean factors step 1 applied (its store's ``downsample_factors``)."""
    return {k: int(v) for k, v in (item.split("=") for item in attrs["downsample_factors"])}


def _rois_session(experiment: Experiment, session: io.Session, *,
                  background: Mapping[str, Any], figures: Mapping[str, Any],
                  rois: Mapping[str, Any] | None = None,
                  detection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    load_path = experiment.path(session, "load")
    _require(load_path, "load")
    source = (rois or {}).get("source", "expert")
    if source == "expert" and session.roi_file is None:
        raise _Skip("no ROI set (ROIs/ROIs.zip, Rois/Rois.zip or RoiSet.zip) and rois.source "
                    "is 'expert'")
    loaded = open_store(load_path)
    # the downsampled movie is small (float32, 1/40 of the native pixels): read it once
    # for the detection images and the traces instead of once per pass
    loaded["movie"] = loaded["movie"].load()
    native = tuple(loaded.attrs["native_shape"][1:])
    downsample = _factors_used(loaded.attrs)
    expert = roi_io.read_rois(session.roi_file) if session.roi_file is not None else None
    summary: dict[str, Any] = {"roi_source": "expert", "n_expert": len(expert or [])}
    if source != "expert":
        auto, match = _detect(experiment, session, loaded, native, expert,
                              downsample=downsample, detection=detection or {})
        summary |= {"n_auto": len(auto)} | match
        if expert is None or source == "auto":
            summary["roi_source"] = "auto"
    roi_list = auto if summary["roi_source"] == "auto" else expert
    if not roi_list:
        raise _Skip("automatic detection found no neuron and there is no expert ROI set")
    tr = traces.extract_traces_downsampled(
        loaded["movie"], roi_list, native_shape=native, factors=dict(downsample),
        background_fraction=float(background["fraction"]), seed=int(background["seed"]))
    tr = tr.compute()  # small: (roi, time) traces; one pass over the downsampled movie
    labels = roi_io.label_image(roi_list, native)
    tr["labels"] = (("row", "col"), labels)
    tr.attrs |= {k: loaded.attrs[k] for k in ("experiment", "date", "session", "native_shape",
                                               "frame_interval_s_downsampled", "pixel_size_um",
                                               "source_files", "metadata_file", "shift_rms_px")
                 if k in loaded.attrs}
    tr.attrs["roi_source"] = summary["roi_source"]
    tr.attrs["roi_file"] = (str(session.roi_file) if summary["roi_source"] == "expert"
                            else str(experiment.session_dir(session) / "ROIs_auto.zip"))
    _write_zarr(tr, experiment.path(session, "traces"))
    fig = figs.roi_overlay(loaded["mip"].values, labels, names=[r.name for r in roi_list],
                           title=f"{session.experiment} {session.id}: {len(roi_list)} "
                                 f"{summary['roi_source']} ROIs over the MIP")
    io.save_figure(fig, experiment.session_dir(session) / f"{session.name}_rois.png",
                   dpi=int(figures.get("dpi", 100)))
    return {"n_rois": len(roi_list), "n_background_pixels": int(tr.attrs["n_background_pixels"])
            } | summary


def _detect(experiment: Experiment, session: io.Session, loaded: xr.Dataset,
            native: tuple[int, int], expert: list | None, *, downsample: Mapping[str, int],
            detection: Mapping[str, Any]) -> tuple[list, dict[str, Any]]:
    """Detect somata on the downsampled movie, write ROIs_auto.zip, compare with expert ROIs."""
    fy, fx = int(downsample.get("y", 1)), int(downsample.get("x", 1))
    images = det.summary_images(loaded["movie"])
    pixel_um = loaded.attrs.get("pixel_size_um")
    diameter_um = float(detection.get("diameter_um", 12.0))
    diameter_px = diameter_um / (pixel_um * fy) if pixel_um else 9.0
    labels = det.detect_neurons(images, diameter_px=diameter_px)
    auto = det.labels_to_rois(np.asarray(labels), scale=(fy, fx)) if int(labels.max()) else []
    path = experiment.session_dir(session) / "ROIs_auto.zip"
    if auto:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = io.atomic_path(path).with_suffix(".zip")
        roi_io.write_rois(tmp, auto)
        io.commit(tmp, path)
    match: dict[str, Any] = {}
    if expert and auto:
        m = det.match_rois(roi_io.label_image(auto, native), roi_io.label_image(expert, native),
                           iou_threshold=float(detection.get("iou_threshold", 0.5)))
        match = {f"auto_vs_expert_{k}": round(float(m[k]), 3)
                 for k in ("precision", "recall", "f1")}
    return auto, match


# --------------------------------------------------------------------------- step 3: arPLS


def resolve_lam(arpls: Mapping[str, Any], frame_interval_s: float | None) -> tuple[float, float]:
    """Return ``(lam, cutoff_s)`` from the ``arpls`` parameters and the time base.

    ``cutoff_s`` set: λ follows from it; else λ is used and its cut-off is reported
    (NaN when the frame interval is unknown).
    """
    if arpls.get("cutoff_s") is not None:
        if not frame_interval_s:
            raise CalimInputError("arpls.cutoff_s needs a known frame interval; set arpls.lam")
        lam = bl.lam_from_cutoff(float(arpls["cutoff_s"]), frame_interval_s)
        return lam, float(arpls["cutoff_s"])
    lam = float(arpls["lam"])
    cut = bl.cutoff_from_lam(lam, frame_interval_s) if frame_interval_s else float("nan")
    return lam, cut


def correct_session(
    tr: xr.Dataset,
    /,
    *,
    lam: float = 10.0,
    tol: float = 1e-5,
    max_iter: int = 100,
    normalize: str = "dff",
    trim_start: int = 0,
) -> xr.Dataset:
    """Drift-correct and normalize one session's traces (SPEC §2 steps 5-7).

    Parameters
    ----------
    tr : xarray.Dataset
        ``raw`` (roi, time) and ``background`` (time), as step 2 writes them.
    lam, tol, max_iter : float, float, int, optional
        arPLS smoothness, weight tolerance and iteration cap. Defaults are 10, 1e-5, 100.
    normalize : {"dff", "session", "zscore"}, optional
        Normalization of the corrected signal. Default is ``"dff"``.
    trim_start : int, optional
        Leading downsampled frames set to NaN in ``norm``. Default is 0.

    Returns
    -------
    xarray.Dataset
        ``raw``, ``background``, ``signal = raw - background``, ``baseline`` (arPLS of
        ``signal``), ``corrected = signal - baseline``, ``baseline_raw`` (arPLS of
        ``raw``), ``dff = corrected / baseline_raw``, ``dff_raw = (raw - baseline_raw) /
        baseline_raw``, ``norm`` (the chosen normalization), per ROI ``converged``,
        ``n_iter``, ``converged_raw``, ``n_iter_raw``; attrs record every parameter.
        The ratios (``dff``, ``dff_raw``, ``norm``) are NaN in the first ``trim_start``
        frames and where the baseline is not positive (with a CalimWarning); ``raw``,
        ``corrected`` and the baselines are kept whole.
    """
    raw = tr["raw"].transpose("roi", "time").values.astype(np.float64)
    bg = tr["background"].values.astype(np.float64)
    signal = raw - bg[np.newaxis, :]
    base, info = bl.arpls(signal, lam=lam, tol=tol, max_iter=max_iter)
    base_raw, info_raw = bl.arpls(raw, lam=lam, tol=tol, max_iter=max_iter)
    corrected = signal - base
    norm, ninfo = nm.normalize(corrected, base_raw, method=normalize, trim_start=trim_start)
    dff = norm if normalize == "dff" else nm.normalize(corrected, base_raw, method="dff",
                                                       trim_start=trim_start)[0]
    f32 = np.float32
    coords = {k: tr.coords[k] for k in ("roi", "roi_name", "time") if k in tr.coords}
    coords["frame"] = ("time", np.arange(raw.shape[1]))
    two = ("roi", "time")
    out = xr.Dataset({
        "raw": (two, raw.astype(f32)), "background": ("time", bg.astype(f32)),
        "signal": (two, signal.astype(f32)), "baseline": (two, base.astype(f32)),
        "corrected": (two, corrected.astype(f32)), "baseline_raw": (two, base_raw.astype(f32)),
        "dff": (two, np.asarray(dff, dtype=f32)),
        "dff_raw": (two, np.asarray(nm.dff_raw(raw, base_raw, trim_start=trim_start),
                                    dtype=f32)),
        "norm": (two, np.asarray(norm, dtype=f32)),
        "converged": ("roi", np.atleast_1d(info["converged"])),
        "n_iter": ("roi", np.atleast_1d(info["n_iter"]).astype(np.int32)),
        "converged_raw": ("roi", np.atleast_1d(info_raw["converged"])),
        "n_iter_raw": ("roi", np.atleast_1d(info_raw["n_iter"]).astype(np.int32)),
    }, coords=coords)
    scale = ninfo.get("session_scale")
    out.attrs = _json_safe({k: v for k, v in tr.attrs.items()
                            if k in ("experiment", "date", "session", "pixel_size_um",
                                     "frame_interval_s_downsampled", "native_shape",
                                     "background_fraction", "seed", "n_background_pixels",
                                     "roi_file", "source_files", "roi_source",
                                     "shift_rms_px")}) | {
        "lam": float(lam), "tol": float(tol), "max_iter": int(max_iter),
        "normalize": normalize, "trim_start": int(trim_start),
        "session_scale": None if scale is None else float(scale),
    }
    return out


def _arpls_session(experiment: Experiment, session: io.Session, *, arpls: Mapping[str, Any],
                   normalize: str, trim_start: int, figures: Mapping[str, Any]
                   ) -> dict[str, Any]:
    path = experiment.path(session, "traces")
    _require(path, "rois")
    tr = open_store(path).load()
    lam, cutoff = resolve_lam(arpls, tr.attrs.get("frame_interval_s_downsampled"))
    ds = correct_session(tr, lam=lam, tol=float(arpls["tol"]), max_iter=int(arpls["max_iter"]),
                         normalize=normalize, trim_start=int(trim_start))
    ds.attrs["cutoff_s"] = cutoff if np.isfinite(cutoff) else None
    _write_zarr(ds, experiment.path(session, "result"))
    if figures.get("per_roi", True):
        _roi_figures(experiment, session, ds, dpi=int(figures.get("dpi", 100)))
    return {"n_rois": ds.sizes["roi"], "lam": round(lam, 6), "cutoff_s": ds.attrs["cutoff_s"],
            "not_converged": int((~ds["converged"].values).sum()),
            "not_converged_raw": int((~ds["converged_raw"].values).sum())}


def _roi_figures(experiment: Experiment, session: io.Session, ds: xr.Dataset, *,
                 dpi: int) -> None:
    folder = experiment.session_dir(session)
    name = session.name
    for n in ds["roi"].values.tolist():
        for fig_fn, fname in ((figs.roi_raw_figure, f"{name}_mask{n}.png"),
                              (figs.roi_clean_figure, f"{name}_mask_arpls_clean_{n}.png"),
                              (figs.roi_norm_figure, f"{name}_mask_arpls_NORM_{n}.png")):
            io.save_figure(fig_fn(ds, n), folder / fname, dpi=dpi)


# --------------------------------------------------------------------------- step 5: analysis


def analyze_session(ds: xr.Dataset, /, *, events: Mapping[str, Any],
                    synchrony: Mapping[str, Any]) -> dict[str, Any]:
    """Events, rates, spectra, network events, correlations, clusters and features.

    Parameters
    ----------
    ds : xarray.Dataset
        A session result (step 3), loaded.
    events, synchrony : mapping
        The ``events`` and ``synchrony`` parameter sections.

    Returns
    -------
    dict
        ``events`` (DataFrame, one row per event), ``network``
        (:class:`calim_helpers.synchrony.NetworkEvents`), ``network_table`` (its events
        with times in s), ``corr`` (roi, roi), ``clusters`` and ``order`` (by cluster),
        ``spectra`` (roi, frequency) and ``features`` (one row per ROI).
    """
    ev = evt.detect_events_dataset(ds, threshold=float(events["threshold"]),
                                   prominence=float(events["prominence"]),
                                   min_duration_s=float(events["min_duration_s"]),
                                   merge_gap_s=float(events["merge_gap_s"]),
                                   min_amplitude=float(events["min_amplitude"]))
    n_roi, n_time = ds.sizes["roi"], ds.sizes["time"]
    norm = ds["norm"].transpose("roi", "time")
    activity = syn.activity_matrix(ev, n_roi, n_time, rois=ds["roi"].values)
    valid = np.isfinite(norm.values).any(axis=0)
    network = syn.network_events(activity, bin_frames=int(synchrony["bin_frames"]),
                                 n_shuffles=int(synchrony["n_shuffles"]),
                                 alpha=float(synchrony["alpha"]), valid=valid,
                                 seed=int(ds.attrs.get("seed", 0) or 0))
    time = ds["time"].values
    dt = float(np.median(np.diff(time))) if n_time > 1 else 1.0
    table = network.events.copy()
    table["start_s"] = time[table["start_frame"].to_numpy(int)] if len(table) else []
    table["end_s"] = (time[table["stop_frame"].to_numpy(int) - 1] + dt) if len(table) else []
    corr = syn.correlation_matrix(norm.values)
    clusters, order = syn.cluster_rois(corr, threshold=float(synchrony["cluster_threshold"]))
    features = syn.session_features(ds, ev, network, corr=corr, clusters=clusters)
    spectra = syn.power_spectra(norm) if n_time >= 8 else None
    return {"events": ev, "network": network, "network_table": table,
            "corr": corr, "clusters": clusters, "order": order, "spectra": spectra,
            "features": features}


def _analysis_session(experiment: Experiment, session: io.Session, *,
                      events: Mapping[str, Any], synchrony: Mapping[str, Any],
                      qc: Mapping[str, Any], heatmap: Mapping[str, float],
                      figures: Mapping[str, Any]) -> dict[str, Any]:
    path = experiment.path(session, "result")
    _require(path, "arpls")
    ds = open_store(path).load()
    res = analyze_session(ds, events=events, synchrony=synchrony)
    for table in (res["events"], res["features"]):
        table["normalize"] = ds.attrs.get("normalize")  # the unit of peak_dff and amplitudes
        table["trim_start"] = ds.attrs.get("trim_start")
    unit = AMPLITUDE_UNIT.get(ds.attrs.get("normalize"), "normalized")
    folder, name = experiment.session_dir(session), session.name
    dpi = int(figures.get("dpi", 100))
    io.write_text(folder / f"{name}_events.csv", res["events"].to_csv(index=False))
    io.write_text(folder / f"{name}_features.csv", res["features"].to_csv(index=False))
    io.write_text(folder / f"{name}_network_events.csv",
                  res["network_table"].to_csv(index=False))
    if res["spectra"] is not None:
        io.write_text(folder / f"{name}_spectra.csv",
                      res["spectra"].to_pandas().T.to_csv(index_label="frequency_hz"))
    title = f"{session.experiment} {session.id}"
    labels = [f"{n} {nm}" for n, nm in zip(ds["roi"].values.tolist(),
                                             ds["roi_name"].values.tolist(), strict=True)]
    order = np.asarray(res["order"])
    io.save_figure(afigs.raster_figure(res["events"], ds.sizes["roi"], ds["time"].values,
                                       network=res["network_table"], order=order,
                                       roi_labels=labels, title=title),
                   folder / f"{name}_raster.png", dpi=dpi)
    io.save_figure(afigs.correlation_figure(res["corr"], order=order, clusters=res["clusters"],
                                            labels=labels, title=title),
                   folder / f"{name}_correlation.png", dpi=dpi)
    io.save_figure(afigs.cluster_heatmap_figure(
        ds["norm"].transpose("roi", "time").values, ds["time"].values, order=order,
        clusters=res["clusters"], vmin=float(heatmap["vmin"]), vmax=float(heatmap["vmax"]),
        label=figs.NORM_LABELS.get(ds.attrs.get("normalize"), "normalized"), title=title),
        folder / f"{name}_clusters.png", dpi=dpi)
    io.save_figure(afigs.session_summary_figure(res["features"], amplitude_label=unit,
                                                title=title),
                   folder / f"{name}_summary.png", dpi=dpi)
    io.save_figure(_qc(experiment, session, ds, res, qc=qc, title=title),
                   folder / f"{name}_qc.png", dpi=dpi)
    snr = res["features"]["snr"].to_numpy(float)
    return {"n_events": len(res["events"]), "n_network_events": len(res["network_table"]),
            "network_threshold": round(float(res["network"].threshold), 3),
            "n_clusters": int(np.unique(res["clusters"]).size),
            "low_snr_rois": int(np.sum(~(snr >= float(qc["snr_threshold"]))))}


def _qc(experiment: Experiment, session: io.Session, ds: xr.Dataset, res: Mapping[str, Any],
        *, qc: Mapping[str, Any], title: str) -> Any:
    load = open_store(experiment.path(session, "load"))
    tr = open_store(experiment.path(session, "traces"))
    shifts = (load["shifts"].rename(native_time="time").load() if "shifts" in load else None)
    bad = load["bad_frame"].values if "bad_frame" in load else None
    return afigs.qc_figure(load["mip"].values, tr["labels"].values, shifts,
                           ds["background"].values, ds["converged"].values,
                           res["features"]["snr"].to_numpy(float),
                           snr_threshold=float(qc["snr_threshold"]), bad_frames=bad,
                           title=title)


def collect_analysis(experiment: Experiment, /) -> dict[str, pd.DataFrame]:
    """Gather the sessions' analysis tables into the experiment's CSVs.

    Writes ``events.csv`` (``experiment, date, session, roi, frame, time_s, peak_dff,
    amplitude, duration_s``, ...), ``features.csv`` (one row per ROI, ready for machine
    learning), ``network_events.csv`` and, when there are several sessions,
    ``sessions_summary.pdf`` with ``sessions_tests.csv`` (sessions side by side, with a
    Kruskal-Wallis or Mann-Whitney test per metric) under ``OUT/<experiment>/``.
    """
    tables: dict[str, list[pd.DataFrame]] = {"events": [], "features": [], "network_events": []}
    for s in experiment.sessions:
        for kind, parts in tables.items():
            path = experiment.session_dir(s) / f"{s.name}_{kind}.csv"
            if path.exists():
                part = pd.read_csv(path)
                if kind == "network_events":
                    part.insert(0, "session", s.name)
                    part.insert(0, "date", s.date)
                parts.append(part)
    out = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in tables.items()}
    for kind, table in out.items():
        io.write_text(experiment.root / f"{kind}.csv", table.to_csv(index=False))
    feats = out["features"]
    if len(feats) and feats["session"].nunique() > 1:
        by_session = {f"{d}_{s}": g for (d, s), g in feats.groupby(["date", "session"],
                                                                     sort=False)}
        tests = afigs.condition_tests(by_session)
        io.write_text(experiment.root / "sessions_tests.csv", tests.to_csv(index=False))
        unit = AMPLITUDE_UNIT.get(str(feats["normalize"].iloc[0]), "normalized")
        io.save_figure(afigs.condition_summary_figure(by_session, amplitude_label=unit),
                       experiment.root / "sessions_summary.pdf")
    return out


def show_analysis(experiment: Experiment, /) -> Any:
    """Return the raster and QC figures of the first analysed session."""
    for s in experiment.sessions:
        qc_png = experiment.session_dir(s) / f"{s.name}_qc.png"
        if qc_png.exists():
            ds = open_store(experiment.path(s, "result")).load()
            ev = pd.read_csv(experiment.session_dir(s) / f"{s.name}_events.csv")
            net = pd.read_csv(experiment.session_dir(s) / f"{s.name}_network_events.csv")
            return afigs.raster_figure(ev, ds.sizes["roi"], ds["time"].values, network=net,
                                       title=f"{s.experiment} {s.id}")
    return "no session was analysed"


def summary_analysis(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of the analysis step (for nbval)."""
    lines = _status_lines(status)
    for r in status.itertuples():
        if r.status == "ok":
            lines.append(f"{r.session}: {int(r.n_events)} events, {int(r.n_network_events)} "
                         f"network events, {int(r.n_clusters)} clusters, "
                         f"{int(r.low_snr_rois)} low-SNR ROIs")
    return "\n".join(lines)


# --------------------------------------------------------------------------- step 4


def experiment_dataset(results: Sequence[xr.Dataset], /) -> xr.Dataset:
    """Concatenate session results along ``cell`` (``cell_id = <date>_<session>_ROI<n>``).

    Sessions with fewer downsampled frames are padded with NaN to the longest; the
    ``time`` coordinate is that of the longest session.
    """
    if not results:
        raise CalimInputError("no session result to aggregate")
    n_time = max(r.sizes["time"] for r in results)
    longest = next(r for r in results if r.sizes["time"] == n_time)
    steps = {f"{r.attrs['date']}_{r.attrs['session']}": float(np.median(np.diff(r["time"])))
             for r in results if r.sizes["time"] > 1}
    if steps and max(steps.values()) > 1.01 * min(steps.values()):
        warnings.warn(
            "sessions have different frame intervals ("
            + ", ".join(f"{k}: {v:g} s" for k, v in steps.items())
            + "); the experiment's time axis is the longest session's: compare by frame",
            CalimWarning, stacklevel=2)
    parts = []
    for r in results:
        n = r.sizes["time"]
        r = r.drop_vars(["time", "frame"], errors="ignore")
        if n < n_time:
            r = r.pad(time=(0, n_time - n))  # NaN for the float traces
        date, sess = r.attrs["date"], r.attrs["session"]
        ids = [f"{date}_{sess}_ROI{n}" for n in r["roi"].values.tolist()]
        r = r.rename_dims(roi="cell").drop_indexes("roi").assign_coords(
            cell_id=("cell", ids), date=("cell", [date] * len(ids)),
            session=("cell", [sess] * len(ids)))
        parts.append(r)
    exp = xr.concat(parts, dim="cell", combine_attrs="drop_conflicts", data_vars="all",
                    coords="all", compat="equals", join="exact")
    exp = exp.assign_coords(time=("time", longest["time"].values),
                            frame=("time", np.arange(n_time)))
    keep = ("experiment", "normalize", "trim_start", "lam", "cutoff_s", "tol", "max_iter",
            "seed", "background_fraction")
    exp.attrs = {k: results[0].attrs.get(k) for k in keep}
    exp.attrs["sessions"] = [f"{r.attrs['date']}_{r.attrs['session']}" for r in results]
    return exp


def tidy_table(exp: xr.Dataset, /) -> pd.DataFrame:
    """Long table: one row per cell and frame with every trace variable (SPEC §3)."""
    cols = ["raw", "background", "signal", "baseline", "corrected", "baseline_raw", "dff",
            "dff_raw", "norm"]
    n_cell, n_time = exp.sizes["cell"], exp.sizes["time"]
    frame = exp["frame"].values
    out = pd.DataFrame({
        "experiment": exp.attrs.get("experiment"),
        "date": np.repeat(exp["date"].values, n_time),
        "session": np.repeat(exp["session"].values, n_time),
        "roi": np.repeat(exp["roi"].values, n_time),
        "roi_name": np.repeat(exp["roi_name"].values, n_time),
        "frame": np.tile(frame, n_cell),
        "time_s": np.tile(exp["time"].values, n_cell),
    })
    for c in cols:
        values = exp[c]
        if "cell" not in values.dims:
            values = values.expand_dims(cell=n_cell)
        out[c] = values.transpose("cell", "time").values.reshape(-1)
    out["converged"] = np.repeat(exp["converged"].values, n_time)
    out["normalize"] = exp.attrs.get("normalize")
    return out


def average_trace(exp: xr.Dataset, /) -> pd.DataFrame:
    """Return the "average histogram": mean, SEM and count of ``norm`` over cells per frame."""
    norm = exp["norm"].transpose("cell", "time").values.astype(np.float64)
    n = np.isfinite(norm).sum(axis=0)
    with np.errstate(all="ignore"):
        mean = np.nanmean(norm, axis=0)
        sem = np.nanstd(norm, axis=0, ddof=1) / np.sqrt(n)
    return pd.DataFrame({"frame": exp["frame"].values, "time_s": exp["time"].values,
                         "mean": mean, "sem": sem, "n_cells": n,
                         "normalize": exp.attrs.get("normalize"),
                         "trim_start": exp.attrs.get("trim_start")})


def _wide(exp: xr.Dataset, var: str) -> pd.DataFrame:
    table = pd.DataFrame(exp[var].transpose("time", "cell").values,
                         columns=exp["cell_id"].values)
    table.insert(0, "time_s", exp["time"].values)
    table.insert(0, "frame", exp["frame"].values)
    return table


def aggregate_experiment(
    experiment: Experiment,
    /,
    *,
    heatmap: Mapping[str, float],
    echo: Callable[[str], None] = print,
) -> xr.Dataset:
    """Write the experiment's tables and figures from its sessions' results (SPEC §3).

    Writes ``results_raw.csv`` (corrected signal), ``results_norm.csv`` (normalized
    signal; one column per ROI, one row per downsampled frame), ``results_long.csv``
    (tidy), ``heatmap.pdf``, ``hist_cum.pdf`` with ``hist_cum.csv`` (the average trace:
    mean, SEM and count over cells per frame) and ``experiment.zarr`` under
    ``OUT/<experiment>/``; returns the experiment Dataset.
    """
    results, missing = [], []
    for s in experiment.sessions:
        path = experiment.path(s, "result")
        if path.exists():
            results.append(open_store(path).load())
        else:
            missing.append(s.id)
    if missing:
        echo(f"[{experiment.name} aggregate] left out (no result): {', '.join(missing)}")
    exp = experiment_dataset(results)
    root = experiment.root
    io.write_text(root / "results_raw.csv", _wide(exp, "corrected").to_csv(index=False))
    io.write_text(root / "results_norm.csv", _wide(exp, "norm").to_csv(index=False))
    io.write_text(root / "results_long.csv", tidy_table(exp).to_csv(index=False))
    io.save_figure(figs.heatmap_figure(exp, vmin=float(heatmap["vmin"]),
                                          vmax=float(heatmap["vmax"])), root / "heatmap.pdf")
    io.save_figure(figs.hist_cum_figure(exp), root / "hist_cum.pdf")
    io.write_text(root / "hist_cum.csv", average_trace(exp).to_csv(index=False))
    _write_zarr(exp, root / "experiment.zarr")
    echo(f"[{experiment.name} aggregate] {exp.sizes['cell']} ROIs from {len(results)} "
         f"session(s) -> {root}")
    return exp


def compare_experiments(out_dir: str | Path, names: Sequence[str], /) -> pd.DataFrame:
    """Put experiments side by side under ``OUT/comparison/``.

    Writes ``comparison.pdf`` (average traces, per-cell summaries), ``comparison_cells.csv``
    and, when the experiments have ``features.csv`` (notebook 05), ``condition_summary.pdf``
    with ``condition_tests.csv`` (event rate, amplitude and participation per condition,
    Mann-Whitney for two experiments, Kruskal-Wallis for more).

    Returns
    -------
    pandas.DataFrame
        One row per cell: experiment, cell id, mean and 95th percentile of ``norm``.
    """
    out_dir = Path(out_dir)
    exps = {n: open_store(out_dir / n / "experiment.zarr").load() for n in names}
    rows = []
    for name, exp in exps.items():
        norm = exp["norm"].transpose("cell", "time").values
        with np.errstate(all="ignore"):
            mean = np.nanmean(norm, axis=1)
            p95 = np.nanpercentile(norm, 95, axis=1)
        rows += [{"experiment": name, "cell_id": c, "mean_norm": m, "p95_norm": p}
                 for c, m, p in zip(exp["cell_id"].values, mean, p95, strict=True)]
    table = pd.DataFrame(rows)
    io.write_text(out_dir / "comparison" / "comparison_cells.csv", table.to_csv(index=False))
    io.save_figure(figs.comparison_figure(exps), out_dir / "comparison" / "comparison.pdf")
    features = {n: pd.read_csv(out_dir / n / "features.csv") for n in names
                if (out_dir / n / "features.csv").exists()
                and (out_dir / n / "features.csv").stat().st_size > 1}
    if len(features) > 1:
        tests = afigs.condition_tests(features)
        io.write_text(out_dir / "comparison" / "condition_tests.csv", tests.to_csv(index=False))
        units = {AMPLITUDE_UNIT.get(str(f["normalize"].iloc[0]), "normalized")
                 for f in features.values() if len(f)}
        io.save_figure(afigs.condition_summary_figure(
            features, amplitude_label=units.pop() if len(units) == 1 else "normalized"),
            out_dir / "comparison" / "condition_summary.pdf")
    return table


# --------------------------------------------------------------------------- run record


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def run_record(experiment: Experiment, params: Mapping[str, Any], /) -> dict[str, Any]:
    """Return and write ``run_record.json``: parameters, package versions, input SHA-256."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    inputs = {}
    for s in experiment.sessions:
        for f in (*s.stack_files, s.metadata_file, s.roi_file):
            if f is not None:
                key = str(Path(f).relative_to(experiment.experiment_dir))
                try:
                    inputs[key] = _sha256(Path(f))
                except OSError as exc:
                    inputs[key] = f"unreadable: {exc}"
    record = {"experiment": experiment.name, "experiment_dir": str(experiment.experiment_dir),
              "params": dict(params), "versions": versions, "inputs_sha256": inputs}
    io.write_text(experiment.root / "run_record.json", json.dumps(record, indent=1))
    return record


# --------------------------------------------------------------------------- notebook views


def _first_ok(experiment: Experiment, kind: str) -> tuple[io.Session, xr.Dataset] | None:
    for s in experiment.sessions:
        path = experiment.path(s, kind)
        if path.exists():
            return s, open_store(path)
    return None


def show_load(experiment: Experiment, /) -> Any:
    """Native MIP and mean downsampled frame of the first loaded session (a Figure)."""
    found = _first_ok(experiment, "load")
    if found is None:
        return "no session was loaded"
    s, ds = found
    return figs.load_figure(ds["mip"].values, ds["movie"].mean("time").values,
                            title=f"{s.experiment} {s.id}")


def show_registration(experiment: Experiment, /) -> Any:
    """Return the shifts of the motion-corrected session that moved most (a Figure)."""
    best = None
    for s in experiment.sessions:
        path = experiment.path(s, "load")
        if path.exists():
            ds = open_store(path)
            if "shifts" in ds and (best is None or ds.attrs["shift_rms_px"] > best[2]):
                best = (s, ds, ds.attrs["shift_rms_px"])
    if best is None:
        return "no session was motion-corrected"
    s, ds, _ = best
    shifts = ds["shifts"].rename(native_time="time").load()
    return afigs.shifts_figure(shifts, bad=ds["bad_frame"].values,
                               title=f"{s.experiment} {s.id}")


def show_rois(experiment: Experiment, /) -> Any:
    """ROI traces and background of the first session with traces (a Figure)."""
    found = _first_ok(experiment, "traces")
    if found is None:
        return "no session has traces"
    s, ds = found
    return figs.traces_figure(ds.load(), title=f"{s.experiment} {s.id}")


def show_arpls(experiment: Experiment, /) -> Any:
    """Return the lab's per-ROI figures for the first ROI of the first corrected session."""
    found = _first_ok(experiment, "result")
    if found is None:
        return "no session was corrected"
    _, ds = found
    ds = ds.load()
    roi = int(ds["roi"].values[0])
    return [figs.roi_raw_figure(ds, roi), figs.roi_norm_figure(ds, roi)]


def show_aggregate(exp: xr.Dataset, /, *, heatmap: Mapping[str, float]) -> Any:
    """Heatmap and average-trace figures of an experiment Dataset."""
    return [figs.heatmap_figure(exp, vmin=float(heatmap["vmin"]), vmax=float(heatmap["vmax"])),
            figs.hist_cum_figure(exp)]


def convergence_table(experiment: Experiment, /) -> pd.DataFrame:
    """ROIs whose arPLS fit (of ``signal`` or of ``raw``) did not converge."""
    rows = []
    for s in experiment.sessions:
        path = experiment.path(s, "result")
        if not path.exists():
            continue
        ds = open_store(path)
        for i, roi in enumerate(ds["roi"].values.tolist()):
            conv, conv_raw = bool(ds["converged"][i]), bool(ds["converged_raw"][i])
            if not (conv and conv_raw):
                rows.append({"session": s.id, "roi": roi,
                             "roi_name": str(ds["roi_name"].values[i]),
                             "signal_fit": "ok" if conv else f"{int(ds['n_iter'][i])} it.",
                             "raw_fit": "ok" if conv_raw else f"{int(ds['n_iter_raw'][i])} it."})
    return pd.DataFrame(rows, columns=["session", "roi", "roi_name", "signal_fit", "raw_fit"])


def _status_lines(status: pd.DataFrame) -> list[str]:
    return [f"{r.session}: {r.status}" + (f" ({_short(r.reason)})" if r.reason else "")
            for r in status.itertuples()]


def _short(reason: str) -> str:
    """Reason without machine-specific paths, for order-stable summaries."""
    return " ".join(Path(w).name if "/" in w else w for w in str(reason).split())[:120]


def summary_load(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of step 1 (for nbval)."""
    lines = [f"experiment {experiment.name}: {len(experiment.sessions)} session(s)"]
    lines += _status_lines(status)
    for s in experiment.sessions:
        path = experiment.path(s, "load")
        if path.exists():
            ds = open_store(path)
            moved = (f", motion {ds.attrs['shift_rms_px']:.1f} px rms"
                     if "shift_rms_px" in ds.attrs else "")
            lines.append(f"{s.id}: native {'x'.join(map(str, ds.attrs['native_shape']))} -> "
                         f"{'x'.join(map(str, ds['movie'].shape))}, "
                         f"mean {float(ds['movie'].mean()):.1f}{moved}")
    return "\n".join(lines)


def summary_rois(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of step 2 (for nbval)."""
    lines = _status_lines(status)
    for s in experiment.sessions:
        path = experiment.path(s, "traces")
        if path.exists():
            ds = open_store(path).load()
            lines.append(f"{s.id}: {ds.sizes['roi']} ROIs, {ds.attrs['n_background_pixels']} "
                         f"background pixels, median raw {float(ds['raw'].median()):.0f}, "
                         f"median background {float(ds['background'].median()):.0f}")
    return "\n".join(lines)


def summary_arpls(experiment: Experiment, status: pd.DataFrame, /) -> str:
    """Return a rounded, order-stable text summary of step 3 (for nbval)."""
    lines = _status_lines(status)
    for s in experiment.sessions:
        path = experiment.path(s, "result")
        if path.exists():
            ds = open_store(path).load()
            conv = int(ds["converged"].sum())
            lines.append(f"{s.id}: {ds.sizes['roi']} ROIs x {ds.sizes['time']} frames, "
                         f"lam {ds.attrs['lam']:g}, {conv}/{ds.sizes['roi']} fits converged, "
                         f"median {ds.attrs['normalize']} {float(ds['norm'].median()):.3f}")
    return "\n".join(lines)


def summary_aggregate(exp: xr.Dataset, /) -> str:
    """Return a rounded, order-stable text summary of step 4 (for nbval)."""
    norm = exp["norm"].values
    with np.errstate(all="ignore"):
        avg = np.nanmean(norm, axis=0)
    return "\n".join([
        f"{exp.attrs['experiment']}: {exp.sizes['cell']} ROIs from "
        f"{len(exp.attrs['sessions'])} session(s), {exp.sizes['time']} frames",
        f"normalize {exp.attrs['normalize']}, trim_start {exp.attrs['trim_start']}",
        f"median {float(np.nanmedian(norm)):.3f}, peak of the average trace "
        f"{float(np.nanmax(avg)):.3f} at frame {int(np.nanargmax(avg))}",
    ])


_STEP_FUNCS: dict[str, Callable[..., dict[str, Any]]] = {
    "load": _load_session, "rois": _rois_session, "arpls": _arpls_session,
    "analysis": _analysis_session}
