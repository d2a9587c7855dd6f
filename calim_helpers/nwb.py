"""One NWB file per session: the CALIM results in Neurodata Without Borders (for DANDI).

:func:`session_nwbfile` turns a session's three stores (``load``, ``traces``,
``result``), its events table and its native ROI masks into an in-memory
:class:`pynwb.NWBFile`; :func:`write_nwb` writes it atomically. The builder reads no file:
the caller opens the stores and rasterizes the ROIs (:func:`calim_helpers.rois.rasterize`,
one mask per ROI, since the label image loses overlaps).

What goes where
---------------
- ``/general``: ``session_start_time`` from the Micro-Manager summary
  (:func:`parse_start_time`); ``identifier`` = experiment, date, session and a hash of
  the parameters (:func:`session_identifier`), so a re-run gives the same one;
  ``session_description`` (condition, date, session, how the start time was found);
  ``notes`` = JSON with the CALIM version, the parameters and the processing attributes;
  ``data_collection`` = the Micro-Manager summary metadata (JSON text);
  ``was_generated_by`` = ``[["CALIM", version]]``; subject, lab, institution and
  experimenter from the ``nwb`` mapping (:data:`NWB_KEYS`).
- Device (the camera named in the metadata when it names one), ``OpticalChannel`` and
  ``ImagingPlane`` (imaging rate = native frame rate, ``grid_spacing`` = pixel size in
  metres).
- Processing module ``ophys``:

  - ``ImageSegmentation/PlaneSegmentation``: one row per ROI, ``id`` = the ROI number
    (1..n, order of the ROI zip), ``image_mask`` on the native frame, columns
    ``roi_name`` (Fiji name) and ``roi_source`` (``expert`` or ``auto``);
  - ``Fluorescence``: ``RoiResponseSeries`` ``raw`` and ``corrected`` (time, roi);
  - ``DfOverF``: ``RoiResponseSeries`` ``norm``, the normalized trace, its description
    naming the normalization (``dff``, ``session`` or ``zscore``);
  - ``background``: a ``TimeSeries`` (one trace per session, not per ROI);
  - ``events``: a ``DynamicTable``, one row per event (ROI, onset, peak, end, amplitude,
    duration, SNR; ``roi_row`` links each event to its ``PlaneSegmentation`` row); left
    out when the session has no event (``notes`` holds ``n_events``);
  - ``motion_correction_shifts`` (and ``motion_correction_bad_frame``): plain
    ``TimeSeries`` at the native rate; NWB's ``MotionCorrection`` container needs the
    corrected movie as an ``ImageSeries``, which CALIM does not keep;
  - ``summary_images``: the native maximum-intensity projection ``mip``.

  All traces are at the downsampled rate: ``starting_time`` = time of the first
  downsampled frame (the centre of its block of native frames) and ``rate`` =
  ``1 / frame_interval_s_downsampled``; irregular times would be written as timestamps.

Coordinate convention
---------------------
NWB orders image axes ``(x, y)`` (``image_mask``: ``num_roi, num_x, num_y``;
``GrayscaleImage``: ``x, y``) while CALIM's arrays are ``(row, col)`` = ``(y, x)``.
The masks and the MIP are written transposed: ``image_mask[i] == masks[i].T`` and
``mip == load["mip"].T``. Reading back, transpose again.

Examples
--------
>>> dt, how = parse_start_time('{"StartTime": "2023-04-04 10:12:31.123 +0200"}')
>>> dt.isoformat(), how
('2023-04-04T10:12:31.123000+02:00', 'Micro-Manager StartTime')
>>> session_identifier("GLUT_DNQX", "04-04-23", "230404_5", {"arpls": {"lam": 10.0}})
'GLUT_DNQX_04-04-23_230404_5_calim-2d08b90881a0'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from hdmf.backends.hdf5 import H5DataIO
from hdmf.common import DynamicTable, VectorData
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.base import Images
from pynwb.device import Device, DeviceModel
from pynwb.file import Subject
from pynwb.image import GrayscaleImage, ImageSeries
from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel

from calim_helpers import io
from calim_helpers.errors import CalimWarning

__all__ = [
    "EVENT_COLUMNS",
    "NWB_KEYS",
    "NWB_OPTIONAL_KEYS",
    "parse_start_time",
    "session_identifier",
    "session_nwbfile",
    "write_nwb",
]

#: Keys of the ``nwb`` mapping that DANDI needs or NWB asks for: ``key -> placeholder``
#: used (with one :class:`CalimWarning` naming every missing key) when absent.
#: ``None`` means "left empty". ``subject_id`` may name the session with ``{experiment}``,
#: ``{date}`` and ``{session}`` (``"{session}"`` when each session is its own culture).
NWB_KEYS: Mapping[str, Any] = MappingProxyType({
    "subject_id": "unknown",  # Subject.subject_id
    "species": "unknown",  # Subject.species: Latin binomial ("Mus musculus") or NCBI IRI
    "sex": "U",  # Subject.sex: M, F, O or U (unknown)
    "age": "P0D/",  # Subject.age, ISO 8601 duration ("P14D"); "P0D/" = unknown
    "subject_description": "not given",  # Subject.description (culture, preparation)
    "lab": None,  # NWBFile.lab
    "institution": None,  # NWBFile.institution
    "experimenter": None,  # NWBFile.experimenter: "Last, First" or a list of them
    "indicator": "unknown",  # ImagingPlane.indicator ("GCaMP6f", "Fluo-4", ...)
    "location": "unknown",  # ImagingPlane.location (brain area, "hippocampal culture")
    "excitation_lambda_nm": float("nan"),  # ImagingPlane.excitation_lambda
    "emission_lambda_nm": float("nan"),  # OpticalChannel.emission_lambda
})

#: Further keys of the ``nwb`` mapping, used when given (no placeholder, no warning):
#: ``key -> where it goes``.
NWB_OPTIONAL_KEYS: Mapping[str, str] = MappingProxyType({
    "experiment_description": "NWBFile.experiment_description (default: names CALIM and the "
                              "condition)",
    "keywords": "NWBFile.keywords, a list of str (default: ['calcium imaging', 'CALIM'])",
    "related_publications": "NWBFile.related_publications ('doi:...'), a list of str",
    "pharmacology": "NWBFile.pharmacology (drugs of the condition, e.g. DNQX)",
    "protocol": "NWBFile.protocol (ethics protocol id)",
    "surgery": "NWBFile.surgery",
    "virus": "NWBFile.virus",
    "strain": "Subject.strain",
    "genotype": "Subject.genotype",
    "weight": "Subject.weight ('20 g')",
    "device": "Device name when the metadata names no camera (default: 'camera')",
    "device_description": "Device.description",
    "device_model": "DeviceModel.name of the camera (e.g. 'ORCA-Flash4.0 V3')",
    "device_manufacturer": "DeviceModel.manufacturer of the camera (e.g. 'Hamamatsu')",
})

#: Event columns written (from ``calim_helpers.events.detect_events_dataset``):
#: ``column -> description``.
EVENT_COLUMNS: Mapping[str, str] = MappingProxyType({
    "roi": "ROI number (the PlaneSegmentation id)",
    "frame": "onset: index of the first downsampled frame of the rise",
    "time_s": "onset time (s, session time base)",
    "peak_frame": "index of the downsampled frame of the peak",
    "peak_time_s": "peak time (s, session time base)",
    "end_frame": "index of the first downsampled frame after the event (exclusive)",
    "peak_dff": "value of the normalized trace (DfOverF/norm) at the peak",
    "amplitude": "peak minus the local pre-onset level, in the unit of DfOverF/norm",
    "duration_s": "duration (s): (end_frame - frame) times the frame interval",
    "snr": "amplitude divided by the trace's noise standard deviation",
})

_NORM_UNITS = {
    "dff": ("dF/F", "dF/F = corrected / baseline_raw (the arPLS baseline of the raw ROI "
                    "trace): change relative to the ROI's resting fluorescence"),
    "session": ("corrected / S", "corrected / S, S one scale per session (the median over "
                                 "ROIs of the mean arPLS baseline of the raw trace)"),
    "zscore": ("noise SD", "robust z-score: corrected divided by the ROI's noise standard "
                           "deviation (MAD of the quiet part)"),
}

_CAMERA_KEYS = ("Camera", "Core-Camera", "CameraName", "Core_Camera")
_START_KEYS = ("StartTime", "Time")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
                                       "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
# "2023-04-04 10:12:31.123 +0200", "2023-04-04T10:12:31+02:00", "... Z", no zone.
_ISO_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}:?\d{2})?")
# Java's Date.toString(), written by Micro-Manager 1.4 as "Time": "Tue Apr 04 10:12:31 CEST 2023".
_JAVA_TIME = re.compile(
    r"[A-Z][a-z]{2} ([A-Z][a-z]{2}) (\d{1,2}) (\d{2}):(\d{2}):(\d{2}) ([A-Za-z]+)? ?(\d{4})")
_UTC_NAMES = {"Z", "UTC", "GMT"}


# --------------------------------------------------------------------------- metadata


def _summary(acquisition_metadata: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Micro-Manager summary metadata as a dict (``{}`` when absent or unreadable)."""
    if acquisition_metadata is None or acquisition_metadata == "":
        return {}
    if isinstance(acquisition_metadata, Mapping):
        md = dict(acquisition_metadata)
    else:
        try:
            md = json.loads(acquisition_metadata)
        except (TypeError, ValueError):
            return {}
    if not isinstance(md, dict):
        return {}
    if isinstance(md.get("Summary"), dict):  # a whole metadata.txt
        md = md["Summary"]
    return md


def _local(naive: _dt.datetime) -> _dt.datetime:
    """Attach the local zone of this machine (as a fixed offset, valid at that date)."""
    return naive.astimezone()


def _parse_one(text: str) -> tuple[_dt.datetime, str | None] | None:
    """Parse one Micro-Manager time string; return (datetime, zone text or None)."""
    text = text.strip()
    m = _ISO_TIME.fullmatch(text)
    if m:
        y, mo, d, h, mi, s, frac, zone = m.groups()
        micro = int((frac or "0")[:6].ljust(6, "0"))
        naive = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
        if zone is None:
            return naive, None
        if zone in _UTC_NAMES:
            return naive.replace(tzinfo=_dt.UTC), zone
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        return naive.replace(tzinfo=_dt.timezone(sign * offset)), zone
    m = _JAVA_TIME.fullmatch(text)
    if m and m.group(1) in _MONTHS:
        mon, d, h, mi, s, zone, y = m.groups()
        naive = _dt.datetime(int(y), _MONTHS[mon], int(d), int(h), int(mi), int(s))
        if zone in _UTC_NAMES:
            return naive.replace(tzinfo=_dt.UTC), zone
        return naive, zone  # an abbreviation such as CEST is ambiguous: not an offset
    return None


def _folder_date(date: str) -> _dt.datetime:
    """Midnight (naive) of a ``dd-mm-yy`` date folder."""
    try:
        return _dt.datetime.strptime(date, "%d-%m-%y")
    except (TypeError, ValueError):
        raise ValueError(f"date must be a dd-mm-yy date folder name, got {date!r}") from None


def parse_start_time(acquisition_metadata: str | Mapping[str, Any] | None, /, *,
                     date: str | None = None) -> tuple[_dt.datetime, str]:
    """Start time of an acquisition from its Micro-Manager summary metadata.

    Micro-Manager 2.0 writes ``"StartTime": "2023-04-04 10:12:31.123 +0200"``, 1.4
    ``"StartTime": "2023-04-04 10:12:31 +0200"`` and ``"Time": "Tue Apr 04 10:12:31 CEST
    2023"`` (Java's date format). ``StartTime`` is tried first, then ``Time``; ISO 8601
    forms (``T`` separator, ``Z``, ``+02:00``) are accepted too.

    Parameters
    ----------
    acquisition_metadata : str or mapping or None
        The summary metadata: JSON text (the ``acquisition_metadata`` attribute of a
        load store), a dict, or a whole ``metadata.txt`` dict (its ``Summary`` is used).
    date : str, optional
        The session's date folder (``dd-mm-yy``), used at 00:00 when the metadata holds
        no start time. Default is None (then a missing start time raises).

    Returns
    -------
    datetime.datetime
        Time-zone aware. Without a numeric zone in the metadata (none, or an abbreviation
        such as ``CEST`` that names no unique offset), the local zone of the machine
        running this function is assumed, with its offset at that date.
    str
        How the time was found (for the file's description), e.g.
        ``"Micro-Manager StartTime"`` or ``"Micro-Manager StartTime (no time zone in the
        metadata: local zone of this machine assumed, UTC+02:00)"``.

    Raises
    ------
    ValueError
        If the metadata holds no readable start time and ``date`` is None or not a
        ``dd-mm-yy`` date.

    Warns
    -----
    CalimWarning
        When the metadata holds no readable start time and the date folder is used.

    Examples
    --------
    >>> parse_start_time({"StartTime": "2023-04-04 10:12:31 +0200"})[0].isoformat()
    '2023-04-04T10:12:31+02:00'
    >>> parse_start_time('{"Time": "Tue Apr 04 10:12:31 GMT 2023"}')[0].isoformat()
    '2023-04-04T10:12:31+00:00'
    >>> dt, how = parse_start_time({"StartTime": "2023-04-04 10:12:31"})
    >>> dt.replace(tzinfo=None).isoformat(), dt.tzinfo is not None, "local zone" in how
    ('2023-04-04T10:12:31', True, True)
    """
    return _start_time(acquisition_metadata, date, stacklevel=3)


def _start_time(acquisition_metadata: str | Mapping[str, Any] | None, date: str | None, *,
                stacklevel: int) -> tuple[_dt.datetime, str]:
    md = _summary(acquisition_metadata)
    for key in _START_KEYS:
        value = md.get(key)
        if not isinstance(value, str):
            continue
        parsed = _parse_one(value)
        if parsed is None:
            continue
        when, zone = parsed
        if when.tzinfo is not None:
            return when, f"Micro-Manager {key}"
        when = _local(when)
        off = when.strftime("%z")
        why = "no time zone in the metadata" if zone is None else (
            f"time zone {zone!r} in the metadata is not an offset")
        return when, (f"Micro-Manager {key} ({why}: local zone of this machine assumed, "
                      f"UTC{off[:3]}:{off[3:]})")
    if date is None:
        raise ValueError("acquisition_metadata holds no readable StartTime or Time, "
                         "and no date folder was given")
    when = _local(_folder_date(date))
    warnings.warn(f"no start time in the Micro-Manager metadata: session_start_time is the "
                  f"date folder {date} at 00:00 (local zone)", CalimWarning, stacklevel=stacklevel)
    return when, (f"date folder {date} at 00:00, local zone of this machine (no start time "
                  f"in the Micro-Manager metadata)")


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy and paths as Python, tuples and sets as lists, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, set | frozenset):
        return [_plain(v) for v in sorted(value, key=str)]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _canonical_json(value: Any, **kwargs: Any) -> str:
    """Strict JSON (no NaN) with sorted keys: equal inputs give equal text."""
    return json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, allow_nan=False,
                      **kwargs)


def session_identifier(experiment: str, date: str, session: str, params: Mapping[str, Any],
                       /) -> str:
    """Return the identifier of a session's NWB file: the same inputs give the same one.

    Parameters
    ----------
    experiment, date, session : str
        The session's experiment (condition) folder, date folder and session folder.
    params : mapping
        The run parameters; their canonical JSON (sorted keys) is hashed (SHA-256,
        first 12 hex digits), so a run with other parameters gets another identifier.

    Returns
    -------
    str
        ``"<experiment>_<date>_<session>_calim-<hash>"``.

    Examples
    --------
    >>> a = session_identifier("E", "04-04-23", "230404_5", {"b": 1, "a": [1, 2]})
    >>> a == session_identifier("E", "04-04-23", "230404_5", {"a": [1, 2], "b": 1})
    True
    >>> a == session_identifier("E", "04-04-23", "230404_5", {"b": 2, "a": [1, 2]})
    False
    """
    digest = hashlib.sha256(_canonical_json(dict(params)).encode()).hexdigest()[:12]
    return f"{experiment}_{date}_{session}_calim-{digest}"


def _nwb_metadata(nwb: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """Complete the ``nwb`` mapping with placeholders; one warning names what is missing."""
    unknown = set(nwb) - set(NWB_KEYS) - set(NWB_OPTIONAL_KEYS)
    if unknown:
        raise ValueError(f"nwb has unknown key(s) {sorted(unknown)}; allowed: "
                         f"{sorted(NWB_KEYS) + sorted(NWB_OPTIONAL_KEYS)}")
    out = {k: v for k, v in nwb.items() if v is not None}
    missing = [k for k in NWB_KEYS if k not in out]
    for k in missing:
        out[k] = NWB_KEYS[k]
    if missing:
        warnings.warn(f"NWB file: {', '.join(missing)} not given, placeholders written; "
                      f"set them in the nwb: parameter section before sharing on DANDI",
                      CalimWarning, stacklevel=3)
    if isinstance(out["subject_id"], str):
        try:
            out["subject_id"] = out["subject_id"].format_map(ids)
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"nwb.subject_id may use {{experiment}}, {{date}} and {{session}} "
                             f"only, got {out['subject_id']!r}") from None
    for key in ("excitation_lambda_nm", "emission_lambda_nm"):
        try:
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise ValueError(f"nwb.{key} must be a number (nm), got {out[key]!r}") from None
    return out


# --------------------------------------------------------------------------- validation


def _attr(ds: xr.Dataset, name: str, key: str) -> Any:
    if key not in ds.attrs:
        raise ValueError(f"{name} lacks the attribute {key!r}")
    return ds.attrs[key]


def _positive(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r} "
                         f"(NWB times are in seconds)")
    return v


def _time_axis(time_s: np.ndarray, interval_s: float) -> dict[str, Any]:
    """``starting_time``/``rate`` for a regular axis, else ``timestamps``."""
    t = np.asarray(time_s, dtype=float)
    if t.size >= 1 and np.allclose(np.diff(t), interval_s, rtol=1e-6, atol=1e-9):
        return {"starting_time": float(t[0]), "rate": 1.0 / interval_s}
    return {"timestamps": t}


def _check_events(events: pd.DataFrame, rois: np.ndarray) -> pd.DataFrame:
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lacks the column(s) {missing} "
                         f"(expected those of events.detect_events_dataset)")
    unknown = sorted(set(events["roi"].tolist()) - set(rois.tolist()))
    if unknown:
        raise ValueError(f"events names ROI(s) {unknown} that result does not hold")
    return events[list(EVENT_COLUMNS)].reset_index(drop=True)


def _check_masks(masks: Any, n_roi: int, frame_shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(masks)
    want = (n_roi, *frame_shape)
    if m.shape != want:
        raise ValueError(f"masks must have shape (roi, row, col) = {want} (the native frame), "
                         f"got {m.shape}")
    if m.dtype != bool:
        raise ValueError(f"masks must be boolean, got dtype {m.dtype}")
    empty = np.flatnonzero(~m.reshape(n_roi, -1).any(axis=1))
    if empty.size:
        raise ValueError(f"masks: ROI index(es) {empty.tolist()} have no pixel")
    return m


def _check_shifts(shifts: xr.DataArray, n_native: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Shifts as (time, [dy, dx]) and their time coordinate (s) when they have one."""
    if not isinstance(shifts, xr.DataArray) or shifts.ndim != 2 or "axis" not in shifts.dims:
        raise ValueError("shifts must be a 2-D DataArray with dims (native_time, axis), "
                         "axis = ['dy', 'dx']")
    (tdim,) = [d for d in shifts.dims if d != "axis"]
    s = shifts.transpose(tdim, "axis")
    if "axis" in s.coords:
        s = s.sel(axis=["dy", "dx"])
    if s.sizes["axis"] != 2 or s.sizes[tdim] != n_native:
        raise ValueError(f"shifts must have shape ({n_native}, 2) (native frames, [dy, dx]), "
                         f"got {tuple(s.shape)}")
    t = np.asarray(s[tdim].values, float) if tdim in s.coords else None
    return np.asarray(s.values, dtype=np.float64), t


# --------------------------------------------------------------------------- builder


def _float_or_nan(value: Any) -> float:
    """Return a stored attribute as a float: None (how stores keep NaN) becomes NaN."""
    return float("nan") if value is None else float(value)


def session_nwbfile(
    load: xr.Dataset,
    traces: xr.Dataset,
    result: xr.Dataset,
    /,
    *,
    events: pd.DataFrame,
    masks: np.ndarray,
    shifts: xr.DataArray | None = None,
    nwb: Mapping[str, Any],
    params: Mapping[str, Any],
    version: str,
    movie_file: str | None = None,
) -> NWBFile:
    """Build the NWB file of one session, in memory (no file is read or written).

    Parameters
    ----------
    load : xarray.Dataset
        The session's ``<session>_load.zarr``: attributes ``experiment``, ``date``
        (``dd-mm-yy``), ``session``, ``native_shape`` (time, row, col),
        ``pixel_size_um``, ``frame_interval_s``, ``frame_interval_s_downsampled``,
        ``acquisition_metadata`` (Micro-Manager summary, JSON text); variables ``mip``
        (row, col) and, with motion correction, ``shifts`` and ``bad_frame``.
    traces : xarray.Dataset
        The session's ``<session>_traces.zarr``: attributes ``roi_source``
        (``expert``/``auto``), ``roi_file``; coordinate ``roi`` equal to ``result``'s.
    result : xarray.Dataset
        The session's ``<session>_result.zarr``: ``raw``, ``corrected``, ``norm``
        (roi, time), ``background`` (time); coordinates ``roi`` (1..n), ``roi_name``,
        ``time`` (s); attribute ``normalize`` (``dff``, ``session`` or ``zscore``).
    events : pandas.DataFrame
        The session's events (``events.detect_events_dataset``), at least the columns of
        :data:`EVENT_COLUMNS`; may be empty.
    masks : numpy.ndarray of bool, shape (roi, row, col)
        One native-resolution mask per ROI of ``result``, in its order
        (:func:`calim_helpers.rois.rasterize`).
    shifts : xarray.DataArray, optional
        Motion correction applied, (native_time, axis) with ``axis = ["dy", "dx"]``, in
        native pixels. Default is None: ``load["shifts"]`` when the load store holds it,
        else no shifts are written.
    nwb : mapping
        Metadata the files cannot give (keys of :data:`NWB_KEYS`, with placeholders
        when absent, and of :data:`NWB_OPTIONAL_KEYS`).
    params : mapping
        The run's parameters: written as JSON into ``notes`` and hashed into the
        identifier.
    version : str
        The CALIM version (``calim_helpers.__version__``).
    movie_file : str, optional
        The corrected movie (an OME-TIFF), as a path relative to the NWB file: linked as
        an external ``ImageSeries`` ``corrected_movie`` in ``ophys``, never copied; at the
        native rate when ``load.attrs["movie_output"]`` is ``"native"``, else at the
        downsampled rate. Default is None: no movie.

    Returns
    -------
    pynwb.NWBFile
        See the module docstring for what goes where.

    Raises
    ------
    ValueError
        For a missing attribute or variable, a non-positive or unknown frame interval,
        masks of the wrong shape or with an empty ROI, ROI coordinates that differ between
        ``traces`` and ``result``, events without the needed columns or naming unknown
        ROIs, an unknown ``nwb`` key, or (without a start time in the metadata) a date
        that is not ``dd-mm-yy``.

    Warns
    -----
    CalimWarning
        Once when ``nwb`` lacks keys of :data:`NWB_KEYS` (naming them and their
        placeholders), and when the start time comes from the date folder.
    """
    # ---- validation, up front
    experiment = str(_attr(load, "load", "experiment"))
    date = str(_attr(load, "load", "date"))
    session = str(_attr(load, "load", "session"))
    native_shape = tuple(int(n) for n in _attr(load, "load", "native_shape"))
    if len(native_shape) != 3:
        raise ValueError(f"load.attrs['native_shape'] must be (time, row, col), "
                         f"got {native_shape}")
    dt_native = _positive(_attr(load, "load", "frame_interval_s"), "frame_interval_s")
    dt_down = _positive(_attr(load, "load", "frame_interval_s_downsampled"),
                        "frame_interval_s_downsampled")
    for var in ("raw", "corrected", "norm", "background"):
        if var not in result:
            raise ValueError(f"result lacks the variable {var!r}")
    rois = np.asarray(result["roi"].values)
    if "roi" not in traces.coords or not np.array_equal(np.asarray(traces["roi"].values), rois):
        raise ValueError("traces and result must hold the same ROIs (coordinate 'roi')")
    n_roi = rois.size
    roi_names = ([str(n) for n in result["roi_name"].values.tolist()]
                 if "roi_name" in result.coords else [str(r) for r in rois.tolist()])
    mask_arr = _check_masks(masks, n_roi, native_shape[1:])
    table = _check_events(events, rois)
    if shifts is None and "shifts" in load:
        shifts = load["shifts"]
    shift_values, shift_time = (_check_shifts(shifts, native_shape[0]) if shifts is not None
                                else (None, None))
    normalize = str(result.attrs.get("normalize", "dff"))
    norm_unit, norm_text = _NORM_UNITS.get(normalize, ("normalized", f"normalized ({normalize})"))
    roi_source = str(traces.attrs.get("roi_source", result.attrs.get("roi_source", "expert")))
    ids = {"experiment": experiment, "date": date, "session": session}
    meta = _nwb_metadata(nwb, ids)
    summary = _summary(load.attrs.get("acquisition_metadata"))
    start, start_how = _start_time(summary, date, stacklevel=3)

    # ---- file and its general metadata
    processing = {k: result.attrs[k] for k in ("normalize", "lam", "cutoff_s", "tol",
                                                "max_iter", "trim_start", "session_scale",
                                                "seed", "background_fraction",
                                                "n_background_pixels") if k in result.attrs}
    notes = {
        "calim_version": version,
        "session_start_time_source": start_how,
        "roi_source": roi_source,
        "roi_file": traces.attrs.get("roi_file", ""),
        "source_files": list(load.attrs.get("source_files", [])),
        "native_shape": list(native_shape),
        "frame_interval_s": dt_native,
        "frame_interval_s_downsampled": dt_down,
        "pixel_size_um": load.attrs.get("pixel_size_um"),
        "processing": processing,
        "n_events": len(table),
        "parameters": dict(params),
    }
    experimenter = meta.get("experimenter")
    if isinstance(experimenter, str):
        experimenter = [experimenter]
    nwbfile = NWBFile(
        session_description=(
            f"Calcium imaging session {session} of {date} (dd-mm-yy), experiment (condition) "
            f"{experiment}: {n_roi} {roi_source} ROI(s); traces background-subtracted, "
            f"drift-corrected (arPLS) and normalized ({normalize}) by CALIM {version}. "
            f"Start time: {start_how}."),
        identifier=session_identifier(experiment, date, session, params),
        session_start_time=start,
        session_id=session,
        experiment_description=meta.get(
            "experiment_description",
            f"CALIM analysis of calcium imaging (Micro-Manager stacks, Fiji ROIs), "
            f"condition {experiment}"),
        experimenter=experimenter,
        lab=meta.get("lab"),
        institution=meta.get("institution"),
        keywords=list(meta.get("keywords", ["calcium imaging", "CALIM"])),
        related_publications=meta.get("related_publications"),
        pharmacology=meta.get("pharmacology"),
        protocol=meta.get("protocol"),
        surgery=meta.get("surgery"),
        virus=meta.get("virus"),
        notes=_canonical_json(notes, indent=1),
        data_collection=("Micro-Manager summary metadata of the acquisition (JSON): "
                         + _canonical_json(summary)),
        source_script=f"CALIM {version}: calim_helpers.nwb.session_nwbfile",
        source_script_file_name="calim_helpers/nwb.py",
        was_generated_by=[["CALIM", str(version)]],
        subject=Subject(
            subject_id=str(meta["subject_id"]),
            species=meta["species"],
            sex=meta["sex"],
            age=meta["age"],
            description=meta["subject_description"],
            strain=meta.get("strain"),
            genotype=meta.get("genotype"),
            weight=meta.get("weight"),
        ),
    )

    # ---- device, optical channel, imaging plane
    camera = next((str(summary[k]) for k in _CAMERA_KEYS
                   if isinstance(summary.get(k), str) and summary[k]), None)
    device_name = (camera or str(meta.get("device", "camera"))).replace("/", "-")
    mm_version = summary.get("MicroManagerVersion")
    model = None
    if meta.get("device_model") or meta.get("device_manufacturer"):
        model = DeviceModel(name=str(meta.get("device_model", f"{device_name} model")),
                            manufacturer=str(meta.get("device_manufacturer", "unknown")),
                            description="camera model")
        nwbfile.add_device_model(model)
    device = Device(
        name=device_name,
        description=meta.get("device_description",
                             "camera of the Micro-Manager acquisition"
                             + (f" (Micro-Manager {mm_version})" if mm_version else "")
                             + ("" if camera else "; its name is not in the metadata")),
        model=model,
    )
    nwbfile.add_device(device)
    channel_names = summary.get("ChNames") or []
    channel = OpticalChannel(
        name="OpticalChannel",
        description=("fluorescence channel"
                     + (f" {channel_names[0]!r} (Micro-Manager)" if channel_names else "")),
        emission_lambda=meta["emission_lambda_nm"],
    )
    pixel_um = _float_or_nan(load.attrs.get("pixel_size_um"))
    spacing = ({"grid_spacing": [pixel_um * 1e-6, pixel_um * 1e-6],
                "grid_spacing_unit": "meters"} if np.isfinite(pixel_um) and pixel_um > 0
               else {})
    plane = nwbfile.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        description=(f"the camera's field of view, {native_shape[2]} x {native_shape[1]} "
                     f"pixels (x, y), {native_shape[0]} frames"
                     + (f", {pixel_um} um per pixel" if spacing else ", pixel size unknown")),
        device=device,
        excitation_lambda=meta["excitation_lambda_nm"],
        imaging_rate=1.0 / dt_native,
        indicator=str(meta["indicator"]),
        location=str(meta["location"]),
        **spacing,
    )

    ophys = nwbfile.create_processing_module(
        name="ophys",
        description=(f"CALIM {version}: ROIs, ROI and background traces at the downsampled "
                     f"rate (block means), drift-corrected and normalized ({normalize}) "
                     f"traces, events and motion correction of session {session}"),
    )

    # ---- ROIs (masks transposed to NWB's (x, y))
    segmentation = ImageSegmentation(name="ImageSegmentation")
    ophys.add(segmentation)
    origin = "drawn in Fiji" if roi_source == "expert" else "CALIM automatic detection"
    roi_file = traces.attrs.get("roi_file", "not recorded")
    planeseg = segmentation.create_plane_segmentation(
        name="PlaneSegmentation",
        description=(f"{roi_source} ROIs ({origin}; file {roi_file}), rasterized on the "
                     f"native frame as ImageJ does; id = ROI number (1..n, order of the ROI "
                     f"set). image_mask axes are NWB's (x, y), i.e. the (row, col) mask "
                     f"transposed; overlapping ROIs keep their shared pixels"),
        imaging_plane=plane,
    )
    planeseg.add_column(name="roi_name", description="name of the ROI in the Fiji ROI set")
    planeseg.add_column(name="roi_source",
                        description="expert: drawn by hand in Fiji; auto: detected by CALIM")
    for i in range(n_roi):
        planeseg.add_roi(id=int(rois[i]), image_mask=mask_arr[i].T.astype(np.uint8),
                         roi_name=roi_names[i], roi_source=roi_source)
    planeseg["image_mask"].set_data_io(H5DataIO, {"compression": "gzip"})
    region = planeseg.create_roi_table_region(
        region=list(range(n_roi)), description=f"all {n_roi} ROIs of the session")

    # ---- traces, (time, roi) at the downsampled rate
    time_s = np.asarray(result["time"].values, dtype=float)
    timing = _time_axis(time_s, dt_down)
    when = ("time of a downsampled frame = centre of its block of native frames (s from "
            "the first native frame)")

    def add_series(container: Any, var: str, description: str, unit: str) -> None:
        data = np.asarray(result[var].transpose("time", "roi").values, dtype=np.float32)
        container.create_roi_response_series(name=var, data=data, rois=region, unit=unit,
                                             description=f"{description}; {when}", **timing)

    # Containers join the file before their series link to the PlaneSegmentation (hdmf
    # checks that a region and its table share an ancestor).
    fluorescence = Fluorescence(name="Fluorescence")
    ophys.add(fluorescence)
    add_series(fluorescence, "raw", "raw ROI trace: coverage-weighted mean of the ROI's pixels "
               "in each downsampled frame (block mean of native frames), camera counts", "a.u.")
    add_series(fluorescence, "corrected", "background-subtracted and drift-corrected ROI "
               "trace: raw - background - arPLS baseline of (raw - background), camera counts",
               "a.u.")
    dff = DfOverF(name="DfOverF")
    ophys.add(dff)
    add_series(dff, "norm", f"normalized trace, normalize = {normalize}: {norm_text}; unit "
               f"{norm_unit}", norm_unit)
    bg_count = result.attrs.get("n_background_pixels", traces.attrs.get("n_background_pixels"))
    ophys.add(TimeSeries(
        name="background",
        data=np.asarray(result["background"].values, dtype=np.float32),
        unit="a.u.",
        description=("background trace of the session (one per session, subtracted from "
                     "every ROI): mean of randomly chosen downsampled pixels outside every "
                     f"ROI ({bg_count} pixels, seed {result.attrs.get('seed', 'n/a')}), "
                     f"camera counts; {when}"),
        **timing,
    ))

    # ---- events (no table when there is none: nwbinspector flags empty tables, and
    # several of its checks fail on them; notes["n_events"] says 0)
    if len(table):
        events_table = DynamicTable(
            name="events",
            description=(f"calcium events detected on the normalized traces (DfOverF/norm, "
                         f"{normalize}), one row per event; frames index the downsampled "
                         f"frames, times are in seconds in the session time base"),
            columns=[VectorData(name=c, description=d, data=table[c].to_numpy())
                     for c, d in EVENT_COLUMNS.items()],
        )
        ophys.add(events_table)
        row_of = {int(r): i for i, r in enumerate(rois.tolist())}
        events_table.add_column(
            name="roi_row",
            description="the event's ROI: row of ImageSegmentation/PlaneSegmentation",
            data=np.array([row_of[int(r)] for r in table["roi"].tolist()], dtype=np.int64),
            table=planeseg)

    # ---- motion correction
    if shift_values is not None:
        start_native = float(shift_time[0]) if shift_time is not None and shift_time.size else 0.0
        ophys.add(TimeSeries(
            name="motion_correction_shifts",
            data=shift_values,
            unit="pixels",
            starting_time=start_native,
            rate=1.0 / dt_native,
            description=(
                "rigid motion correction applied to each native frame before the ROI traces "
                "were extracted, columns [dy, dx] in native pixels (rows, columns): "
                "corrected(y, x) = frame(y - dy, x - dx), i.e. the frame content was moved "
                "by +dy rows and +dx columns onto the template (a frame whose content had "
                "moved by (+a, +b) gets (-a, -b)); for piecewise-rigid correction the mean "
                "over patches. A plain TimeSeries: NWB's MotionCorrection needs the "
                "corrected movie as an ImageSeries, which CALIM does not keep"),
        ))
        if "bad_frame" in load and load["bad_frame"].size == native_shape[0]:
            ophys.add(TimeSeries(
                name="motion_correction_bad_frame",
                data=np.asarray(load["bad_frame"].values, dtype=bool),
                unit="n.a.",
                starting_time=start_native,
                rate=1.0 / dt_native,
                description=("True where the registration of the native frame is not to be "
                             "trusted: its shift reached max_shift_px or its correlation with "
                             "the template was below half the session's median"),
            ))

    # ---- the corrected movie, linked (external file), never copied
    if movie_file is not None:
        if load.attrs.get("movie_output") == "native":
            n_time, rate = int(native_shape[0]), 1.0 / dt_native
            start = float(shift_time[0]) if shift_time is not None and shift_time.size else 0.0
            dtype = str(load.attrs.get("dtype", "uint16"))
            what = (f"at the recording's resolution, in its pixel type ({dtype}"
                    + (", rounded to whole counts)" if np.dtype(dtype).kind in "ui" else ")"))
        else:
            n_time, rate = int(result.sizes["time"]), 1.0 / dt_down
            start = float(result["time"].values[0]) if n_time else 0.0
            what = "block-mean downsampled as the traces were (float32)"
        ophys.add(ImageSeries(
            name="corrected_movie", external_file=[str(movie_file)], format="external",
            starting_frame=[0], num_samples=n_time, rate=rate, starting_time=start,
            unit="n.a.",
            description=f"the motion-corrected movie, {what}; an OME-TIFF beside this file"))

    # ---- summary image
    if "mip" in load:
        mip = np.asarray(load["mip"].values, dtype=np.float32)
        ophys.add(Images(name="summary_images", description="images summarizing the movie",
                         images=[GrayscaleImage(
                             name="mip", data=mip.T,
                             description=("maximum-intensity projection of the native movie, "
                                          "the image expert ROIs are drawn on; NWB axes (x, y): "
                                          "the (row, col) image transposed"))]))
    return nwbfile


def write_nwb(nwbfile: NWBFile, path: str | os.PathLike[str], /) -> Path:
    """Write an NWB file atomically (a temporary sibling, then a rename).

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        From :func:`session_nwbfile`.
    path : path-like
        Destination, conventionally ``<session>.nwb``; its folder is created. An existing
        file is replaced only once the new one is complete.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a hidden sibling that keeps the .nwb suffix (pynwb warns on other names)
    tmp = path.with_name(f".{path.stem}.part-{os.getpid()}{path.suffix}")
    try:
        with NWBHDF5IO(str(tmp), mode="w") as nwb_io:
            nwb_io.write(nwbfile)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return io.commit(tmp, path)
