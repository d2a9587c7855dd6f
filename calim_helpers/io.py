"""Finding sessions and opening image stacks: the only module that opens image files.

An *experiment* folder holds *date* folders (``dd-mm-yy``) holding *session* folders
(``<yymmdd>_<n>``), each with a Micro-Manager OME-TIFF stack (possibly split into
continuation files), its ``metadata.txt`` and a Fiji ROI set (SPEC §1).

Accepted stacks: Micro-Manager 1.4 and 2.0 files (``<prefix>_MMStack_Pos0.ome.tif``,
``<prefix>_MMStack_Default.ome.tif``, ``<prefix>_MMStack_1-Pos_000_000.ome.tif``, each
with continuation files ``..._1.ome.tif``, ``..._2.ome.tif``), and plain ImageJ or OME
TIFF stacks exported from Fiji, whose frame interval and pixel size come from their own
metadata. Projections saved beside the stack (Fiji's ``MAX_``, ``AVG_``, ... files) and
other TIFFs that are not part of it are left aside with a :class:`CalimWarning`.

Examples
--------
>>> from calim_helpers import demo, io
>>> exp = demo.write_demo_experiment(tmp, n_frames=40, frame_shape=(32, 40))  # doctest: +SKIP
>>> sessions = io.find_sessions(exp)  # doctest: +SKIP
>>> movie = io.open_movie(sessions[0])  # lazy, dask-backed  # doctest: +SKIP
>>> movie.dims  # doctest: +SKIP
('time', 'y', 'x')

Which file names make up one Micro-Manager acquisition:

>>> m = STACK_RE.match("230404_5_MMStack_1-Pos_000_000_2.ome.tif")
>>> m["prefix"], m["pos"], m["part"]
('230404_5', '1-Pos_000_000', '2')
>>> STACK_RE.match("230404_5_MMStack_Default.ome.tif")["pos"]
'Default'
>>> PROJECTION_RE.match("MAX_230404_5_MMStack_Pos0.ome.tif")[1]
'MAX'

Reading relies on tifffile's Micro-Manager (``mmstack``), OME and ImageJ support and on
its zarr store; nothing here decodes TIFF structures, except that the link to the next
page is read once to tell a truncated file from a short one. Files in the Micro-Manager
layout are written by :func:`calim_helpers.synthetic.mmstack.write_mmstack` (demo data,
tests).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import struct
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import xarray as xr
import zarr

from calim_helpers.errors import CalimInputError, CalimWarning

__all__ = [
    "Session",
    "atomic_path",
    "commit",
    "find_sessions",
    "find_stack_files",
    "open_movie",
    "open_store",
    "png_bytes",
    "read_mm_metadata_file",
    "save_figure",
    "save_pdf_pages",
    "save_png",
    "write_store",
    "write_movie",
    "write_text",
]

DATE_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})$")
SESSION_RE = re.compile(r"^(\d{6})_(\d+)$")
# Micro-Manager stack file names: the position label is Pos<n> (1.4 and 2.0), Default
# (2.0 without a position list) or <n>-Pos_<col>_<row> (1.4 position grids); continuation
# files past 4 GB add _<k>.
STACK_RE = re.compile(
    r"^(?P<prefix>.+)_MMStack_(?P<pos>Pos\d+|Default|\d+-Pos_\d+_\d+)(?:_(?P<part>\d+))?"
    r"\.ome\.tiff?$",
    re.IGNORECASE,
)
# Fiji's Image > Stacks > Z Project... names its result <method>_<title>.
PROJECTION_RE = re.compile(r"^(MAX|AVG|MIN|SUM|STD|MED)_", re.IGNORECASE)
_PROJECTIONS = {"MAX": "maximum", "AVG": "average", "MIN": "minimum", "SUM": "sum",
                "STD": "standard-deviation", "MED": "median"}
# ROI-set locations accepted (compared case-insensitively), in order of preference.
ROI_LOCATIONS = ("rois/rois.zip", "roiset.zip", "rois/roiset.zip", "rois.zip")
# A folder name that looks like a date in some other spelling (04-04-2023, 2023-04-05,
# 04.04.23, 040423, ...): find_sessions warns when such a folder holds session folders.
DATE_LIKE_RE = re.compile(r"\d{1,4}[-_. ]\d{1,2}[-_. ]\d{1,4}|\d{6}")


@dataclass(frozen=True)
class Session:
    """One imaging session of an experiment.

    Attributes
    ----------
    experiment : str
        Name of the experiment folder (the condition, e.g. ``"GLUT_DNQX"``).
    date : str
        Date folder name, ``dd-mm-yy``.
    name : str
        Session folder name, ``<yymmdd>_<n>``.
    path : pathlib.Path
        The session folder.
    stack_files : tuple of pathlib.Path
        The Micro-Manager stack and its continuation files, in acquisition order.
    metadata_file : pathlib.Path or None
        Micro-Manager ``*_metadata.txt``, if present.
    roi_file : pathlib.Path or None
        Fiji ROI set (``ROIs/ROIs.zip``, ``Rois/Rois.zip`` or ``RoiSet.zip``), if present.
    problem : str
        Why the session folder cannot be used (no stack, a gap in the continuation
        files, several ROI sets), or ``""``. :func:`open_movie` raises it.
    notes : tuple of str
        Files of the session folder left aside, each with the reason (a projection saved
        beside the stack, a TIFF that is not part of it). :func:`find_sessions` also
        warns with each.
    """

    experiment: str
    date: str
    name: str
    path: Path
    stack_files: tuple[Path, ...]
    metadata_file: Path | None
    roi_file: Path | None
    problem: str = ""
    notes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """``<date>_<session>``, unique within an experiment."""
        return f"{self.date}_{self.name}"


# --------------------------------------------------------------------------- discovery


def find_stack_files(folder: str | os.PathLike, /) -> tuple[tuple[Path, ...], Path | None]:
    """Return the stack files of one session folder, in order, and its metadata file.

    Micro-Manager writes ``<prefix>_MMStack_<pos>.ome.tif`` and, past 4 GB,
    continuation files ``<prefix>_MMStack_<pos>_1.ome.tif``, ``..._2...``, where
    ``<pos>`` is ``Pos0`` (1.4 and 2.0), ``Default`` (2.0 without a position list) or
    ``1-Pos_000_000`` (1.4 position grids). A folder without any such file uses its
    TIFF time series: a plain ImageJ or OME-TIFF stack exported from Fiji.

    Projections saved beside the stack (Fiji's ``MAX_``, ``AVG_``, ``MIN_``, ``SUM_``,
    ``STD_``, ``MED_`` files), TIFFs that are not part of the Micro-Manager
    acquisition and, when there is no Micro-Manager stack, single images are left aside
    with a warning; they are never taken for the stack.

    Parameters
    ----------
    folder : path-like
        Session folder.

    Returns
    -------
    stack_files : tuple of pathlib.Path
        Main file first, then continuation files in numeric order.
    metadata_file : pathlib.Path or None
        ``<prefix>_MMStack_<pos>_metadata.txt`` if present (for a plain TIFF stack, the
        folder's only ``*metadata.txt`` when the stack is the folder's only TIFF).

    Raises
    ------
    CalimInputError
        No stack, stacks of several acquisitions or positions, several plain TIFF time
        series, or a gap in the continuation files.

    Warns
    -----
    CalimWarning
        For each file left aside, naming it and why.
    """
    stack_files, metadata_file, notes = _scan_folder(Path(folder))
    for note in notes:
        warnings.warn(note, CalimWarning, stacklevel=2)
    return stack_files, metadata_file


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _projection_note(path: Path, method: str) -> str:
    kind = _PROJECTIONS[method.upper()]
    article = "an" if kind[0] in "aeiou" else "a"
    return (f"{path}: ignored, {article} {kind}-intensity projection saved beside the stack "
            f"(Fiji's '{method}_' prefix), not a time series")


def _mm_groups(files: list[Path]) -> tuple[dict[tuple[str, str], dict[int, Path]], list[Path]]:
    """Micro-Manager files by (prefix, position) and part number; the other files."""
    groups: dict[tuple[str, str], dict[int, Path]] = {}
    others = []
    for p in files:
        m = STACK_RE.match(p.name)
        if m:
            groups.setdefault((m["prefix"], m["pos"]), {})[int(m["part"] or 0)] = p
        else:
            others.append(p)
    return groups, others


def _mm_parts_in_order(folder: Path, prefix: str, pos: str,
                       numbered: Mapping[int, Path]) -> tuple[Path, ...]:
    expected = list(range(max(numbered) + 1))
    if sorted(numbered) != expected:
        missing = [f"{prefix}_MMStack_{pos}{'_' + str(k) if k else ''}.ome.tif"
                   for k in expected if k not in numbered]
        raise CalimInputError(
            f"{folder}: continuation file(s) missing: {', '.join(missing)}"
        )
    return tuple(numbered[k] for k in expected)


def _not_a_time_series(path: Path) -> str | None:
    """Why a TIFF cannot be a session's time series, or None when it may be one.

    A file that cannot be read, or whose metadata declare several images (a truncated
    stack), may be the stack: :func:`open_movie` then says what is wrong with it.
    """
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            n_images = math.prod(n for ax, n in zip(series.axes, series.shape, strict=True)
                                 if ax not in "YXSC")
            declared = _declared_images(tif)
    except Exception:  # noqa: BLE001 - tifffile raises many kinds on corrupt files
        return None
    if n_images > 1 or (declared is not None and declared[0] > 1):
        return None
    return f"a single image (axes {series.axes}, shape {series.shape}), not a time series"


def _scan_folder(folder: Path) -> tuple[tuple[Path, ...], Path | None, list[str]]:
    """:func:`find_stack_files` without warnings: also returns the notes on files left aside."""
    if not folder.is_dir():
        raise CalimInputError(f"{folder}: session folder not found")
    tiffs = sorted(p for p in folder.iterdir() if p.is_file() and _is_tiff(p))
    notes = []
    candidates = []
    for p in tiffs:
        proj = PROJECTION_RE.match(p.name)
        if proj:
            notes.append(_projection_note(p, proj[1]))
        else:
            candidates.append(p)
    groups, others = _mm_groups(candidates)
    if len(groups) > 1:
        names = ", ".join(f"{a}_MMStack_{b}" for a, b in sorted(groups))
        raise CalimInputError(f"{folder}: stacks of several acquisitions/positions: {names}")
    if groups:
        (prefix, pos), numbered = next(iter(groups.items()))
        stack_files = _mm_parts_in_order(folder, prefix, pos, numbered)
        notes += [f"{p}: ignored, not part of the Micro-Manager stack {prefix}_MMStack_{pos}"
                  for p in others]
        return (stack_files, _find_metadata_txt(folder, f"{prefix}_MMStack_{pos}_metadata.txt"),
                notes)
    if not others:
        found = ", ".join(p.name for p in tiffs) or "no TIFF file"
        raise CalimInputError(
            f"{folder}: no Micro-Manager stack '*_MMStack_Pos0.ome.tif' and no other TIFF "
            f"stack found ({found})"
        )
    if len(others) == 1:
        return (others[0],), _find_metadata_txt(folder, None), notes
    series = []
    single = []
    for p in others:
        why = _not_a_time_series(p)
        if why is None:
            series.append(p)
        else:
            single.append(f"{p.name} is {why}")
            notes.append(f"{p}: ignored, {why}")
    if len(series) == 1:
        return (series[0],), None, notes
    if not series:
        raise CalimInputError(
            f"{folder}: no Micro-Manager stack and no TIFF time series: {'; '.join(single)}"
        )
    names = ", ".join(p.name for p in series)
    raise CalimInputError(
        f"{folder}: several TIFF time series ({names}); keep one per session folder or "
        "open the file by name"
    )


def _stack_files_of(path: Path) -> tuple[tuple[Path, ...], Path | None]:
    """Stack files for a file named by the user: its Micro-Manager acquisition, or itself."""
    folder = path.parent
    m = STACK_RE.match(path.name)
    if m and not PROJECTION_RE.match(path.name):
        groups, _ = _mm_groups(sorted(p for p in folder.iterdir() if p.is_file()))
        key = (m["prefix"], m["pos"])
        files = _mm_parts_in_order(folder, *key, groups[key])
        return files, _find_metadata_txt(folder, f"{key[0]}_MMStack_{key[1]}_metadata.txt")
    alone = [p for p in folder.iterdir()
             if p.is_file() and _is_tiff(p) and not PROJECTION_RE.match(p.name)] == [path]
    return (path,), _find_metadata_txt(folder, None) if alone else None


def _find_metadata_txt(folder: Path, preferred: str | None) -> Path | None:
    candidates = sorted(p for p in folder.iterdir()
                        if p.is_file() and p.name.lower().endswith("metadata.txt"))
    if preferred is not None:
        for p in candidates:
            if p.name.lower() == preferred.lower():
                return p
    return candidates[0] if len(candidates) == 1 else None


def _find_roi_file(folder: Path) -> Path | None:
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix().lower()
        if p.is_file() and rel in ROI_LOCATIONS:
            found.setdefault(rel, p)
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found.values())
        raise CalimInputError(f"{folder}: several ROI sets ({names}); keep one")
    return next(iter(found.values()), None)


def _visible_subfolders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` not hidden (``.name``), sorted; none if it cannot be listed."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _holds_tiffs(folder: Path) -> bool:
    """Whether ``folder`` directly holds a TIFF file that is not hidden."""
    try:
        return any(p.is_file() and _is_tiff(p) and not p.name.startswith(".")
                   for p in folder.iterdir())
    except OSError:
        return False


def _misnamed_date_folder(folder: Path) -> str | None:
    """Why a folder of the experiment that is not named ``dd-mm-yy`` is worth a warning.

    It is when it holds TIFF files, or when its name looks like a date and its
    sub-folders hold TIFF files (session folders under a mis-spelled date folder);
    otherwise (notes, analysis, empty or hidden folders) None.
    """
    expected = ("not a date folder: expected a 'dd-mm-yy' name (e.g. 04-04-23) holding "
                "'<yymmdd>_<n>' session folders (e.g. 230404_5)")
    if _holds_tiffs(folder):
        return f"{folder}: ignored, holds TIFF files but is {expected}"
    if DATE_LIKE_RE.search(folder.name):
        with_tiffs = [p.name for p in _visible_subfolders(folder) if _holds_tiffs(p)]
        if with_tiffs:
            return (f"{folder}: ignored, its sub-folders hold TIFF files "
                    f"({', '.join(with_tiffs)}) but it is {expected}")
    return None


def _misnamed_session_folder(folder: Path, date_match: re.Match[str]) -> str | None:
    """Why a folder of a date folder that is not named ``<yymmdd>_<n>`` is worth a warning.

    It is when it holds TIFF files; otherwise (an analysis folder, an empty one) None.
    """
    if not _holds_tiffs(folder):
        return None
    dd, mm, yy = date_match.groups()
    return (f"{folder}: ignored, holds TIFF files but is not a session folder: expected a "
            f"'<yymmdd>_<n>' name (e.g. {yy}{mm}{dd}_1) inside date folder "
            f"{folder.parent.name}")


def find_sessions(experiment_dir: str | os.PathLike, /) -> list[Session]:
    """List the sessions of an experiment folder, sorted by date then session number.

    Parameters
    ----------
    experiment_dir : path-like
        Folder holding ``dd-mm-yy`` date folders of ``<yymmdd>_<n>`` session folders.

    Returns
    -------
    list of Session
        Deterministic order: chronological dates, then session number.

    Raises
    ------
    CalimInputError
        The folder is missing or holds no session.

    Warns
    -----
    CalimWarning
        A session whose ``yymmdd`` does not match its date folder, a session without an
        ROI set (it will need automatic detection or be skipped), a file left aside in a
        session folder (see :func:`find_stack_files`; also in ``Session.notes``), or a
        session folder that cannot be used (no stack, a gap in its continuation files,
        several ROI sets): it is listed with its ``problem``, so that it fails alone.
        Also, once for each folder left aside because its name does not follow the
        layout although it holds TIFF files: a folder of the experiment not named
        ``dd-mm-yy`` that holds TIFF files, or whose name looks like a date in another
        spelling (``04-04-2023``, ``2023-04-05``) and whose sub-folders hold TIFF files;
        a folder of a date folder not named ``<yymmdd>_<n>`` (``230404_2b``,
        ``230404-3``) that holds TIFF files. Such folders are not read. Folders without
        TIFF files (notes, analysis, empty or hidden folders) are skipped silently.
    """
    root = Path(experiment_dir)
    if not root.is_dir():
        raise CalimInputError(f"{root}: experiment folder not found")
    sessions = []
    misnamed = []
    for date_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        dm = DATE_RE.match(date_dir.name)
        if not dm:
            if not date_dir.name.startswith("."):
                why = _misnamed_date_folder(date_dir)
                if why is not None:
                    misnamed.append(date_dir.name)
                    warnings.warn(why, CalimWarning, stacklevel=2)
            continue
        for sdir in sorted(p for p in date_dir.iterdir() if p.is_dir()):
            sm = SESSION_RE.match(sdir.name)
            if not sm:
                if not sdir.name.startswith("."):
                    why = _misnamed_session_folder(sdir, dm)
                    if why is not None:
                        misnamed.append(f"{date_dir.name}/{sdir.name}")
                        warnings.warn(why, CalimWarning, stacklevel=2)
                continue
            dd, mm, yy = dm.groups()
            if sm[1] != f"{yy}{mm}{dd}":
                warnings.warn(
                    f"{sdir}: session date {sm[1]} does not match date folder {date_dir.name}",
                    CalimWarning, stacklevel=2,
                )
            try:
                stack_files, metadata_file, notes = _scan_folder(sdir)
                roi_file = _find_roi_file(sdir)
            except CalimInputError as exc:
                warnings.warn(str(exc), CalimWarning, stacklevel=2)
                sessions.append(Session(root.name, date_dir.name, sdir.name, sdir, (), None,
                                        None, problem=str(exc)))
                continue
            for note in notes:
                warnings.warn(note, CalimWarning, stacklevel=2)
            if roi_file is None:
                warnings.warn(f"{sdir}: no ROI set (ROIs/ROIs.zip, Rois/Rois.zip, RoiSet.zip)",
                              CalimWarning, stacklevel=2)
            sessions.append(Session(root.name, date_dir.name, sdir.name, sdir,
                                    stack_files, metadata_file, roi_file, notes=tuple(notes)))
    if not sessions:
        hint = (f"; folders holding TIFF files but named otherwise: {', '.join(misnamed)}"
                if misnamed else "")
        raise CalimInputError(
            f"{root}: no session found (expected dd-mm-yy/<yymmdd>_<n>/ folders){hint}"
        )

    def order(s: Session) -> tuple[str, int]:
        d, m, y = DATE_RE.match(s.date).groups()
        return (f"{y}{m}{d}", int(SESSION_RE.match(s.name)[2]))

    return sorted(sessions, key=order)


# --------------------------------------------------------------------------- reading


def read_mm_metadata_file(path: str | os.PathLike, /) -> dict[str, Any]:
    """Read a Micro-Manager ``*_metadata.txt`` (JSON with a ``Summary`` and per-frame keys).

    Raises
    ------
    CalimInputError
        The file is missing or is not valid JSON.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        raise CalimInputError(f"{path}: metadata file not found") from None
    except (json.JSONDecodeError, OSError) as exc:
        raise CalimInputError(f"{path}: unreadable Micro-Manager metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise CalimInputError(f"{path}: unreadable Micro-Manager metadata (not a JSON object)")
    return meta


def _frame_interval_from_frames(meta: Mapping[str, Any]) -> float | None:
    """Median spacing of ``ElapsedTime-ms`` over the per-frame entries, in ms."""
    times = []
    for key, value in meta.items():
        if key.startswith(("FrameKey", "Metadata-")) and isinstance(value, dict):
            t = value.get("ElapsedTime-ms")
            if isinstance(t, int | float):
                times.append(float(t))
    if len(times) < 2:
        return None
    step = float(np.median(np.diff(np.sort(times))))
    return step if step > 0 else None


# Units of lengths (to µm) and times (to s) as OME, ImageJ and TIFF write them. ImageJ
# escapes non-ASCII characters in its description ("\u00B5m"); "Âµm" is the same unit
# read with the wrong encoding.
_LENGTH_TO_UM = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "Âµm": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "nm": 1e-3, "pm": 1e-6, "Å": 1e-4, "mm": 1e3, "cm": 1e4, "m": 1e6,
    "in": 25400.0, "inch": 25400.0,
}
_TIME_TO_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
    "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "usec": 1e-6, "ns": 1e-9, "min": 60.0,
    "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0,
    "hours": 3600.0, "d": 86400.0,
}
_UNCALIBRATED = ("", "pixel", "pixels", "px")


def _unit_factor(unit: Any, table: Mapping[str, float], what: str, path: str) -> float | None:
    """Factor of ``unit`` in ``table`` (ImageJ escapes decoded); warn and None if unknown."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), str(unit)).strip()
    factor = table.get(text, table.get(text.lower()))
    if factor is None:
        warnings.warn(f"{path}: {what} unit {unit!r} not understood; {what} ignored",
                      CalimWarning, stacklevel=5)  # the caller of open_movie
    return factor


# the parsed OME Pixels of each open TiffFile: a Micro-Manager OME-XML with a Plane per
# frame takes ~70 ms to parse at 1500 frames, and calibration, bit depth, channel names
# and the declared frame count all read it
_OME_PIXELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ome_pixels(tif: tifffile.TiffFile) -> dict[str, Any]:
    """Return the first OME Image's ``Pixels`` as a dict (parsed once per file; read only)."""
    if tif not in _OME_PIXELS:
        _OME_PIXELS[tif] = _parse_ome_pixels(tif)
    return _OME_PIXELS[tif]


def _parse_ome_pixels(tif: tifffile.TiffFile) -> dict[str, Any]:
    xml = tif.ome_metadata
    if not xml:
        return {}
    try:
        ome = tifffile.xml2dict(xml)["OME"]
    except Exception:  # noqa: BLE001 - a broken OME-XML is only lost metadata
        warnings.warn(f"{tif.filename}: unreadable OME-XML ignored", CalimWarning, stacklevel=4)
        return {}
    image = ome.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    return image.get("Pixels", {}) if isinstance(image, dict) else {}


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _ome_calibration(tif: tifffile.TiffFile) -> tuple[float | None, float | None, float | None]:
    """OME pixel size (µm), ``TimeIncrement`` (s) and median ``DeltaT`` step (s)."""
    pixels = _ome_pixels(tif)
    pixel_um = interval_s = step_s = None
    size = _positive(pixels.get("PhysicalSizeX"))
    if size is not None:  # OME's default unit is the micrometre
        factor = _unit_factor(pixels.get("PhysicalSizeXUnit", "µm"), _LENGTH_TO_UM,
                              "OME PhysicalSizeX", tif.filehandle.path)
        pixel_um = None if factor is None else size * factor
    increment = _positive(pixels.get("TimeIncrement"))
    if increment is not None:  # OME's default unit is the second
        factor = _unit_factor(pixels.get("TimeIncrementUnit", "s"), _TIME_TO_S,
                              "OME TimeIncrement", tif.filehandle.path)
        interval_s = None if factor is None else increment * factor
    planes = pixels.get("Plane", [])
    planes = [planes] if isinstance(planes, dict) else planes
    times = {}
    for plane in planes:
        if not isinstance(plane, dict) or plane.get("TheC", 0) or plane.get("TheZ", 0):
            continue
        factor = _TIME_TO_S.get(str(plane.get("DeltaTUnit", "s")))
        if factor is not None and isinstance(plane.get("DeltaT"), int | float):
            times[int(plane.get("TheT", 0))] = float(plane["DeltaT"]) * factor
    if len(times) > 1:
        step_s = _positive(np.median(np.diff([times[k] for k in sorted(times)])))
    return pixel_um, interval_s, step_s


def _imagej_calibration(tif: tifffile.TiffFile) -> tuple[float | None, float | None]:
    """Pixel size (µm) and frame interval (s) of an ImageJ TIFF.

    ImageJ writes the pixel size as the X resolution (pixels per unit) with the unit in
    its description (``unit=micron``); without ``unit`` the image is uncalibrated,
    whatever the TIFF resolution tags say (often 1 pixel per inch). The frame interval
    is ``finterval`` in ``tunit`` (seconds when absent). ``spacing`` is the z step, not
    a pixel size.
    """
    meta = tif.imagej_metadata
    if not meta:
        return None, None
    path = tif.filehandle.path
    pixel_um = interval_s = None
    page = tif.pages.first
    unit = str(meta.get("unit", "")).strip()
    per_unit = _positive(page.resolution[0]) if page.resolution else None
    if per_unit is not None and unit.lower() not in _UNCALIBRATED:
        factor = _unit_factor(unit, _LENGTH_TO_UM, "ImageJ pixel size", path)
        pixel_um = None if factor is None else factor / per_unit
    finterval = _positive(meta.get("finterval"))
    if finterval is not None:
        factor = _unit_factor(meta.get("tunit", "sec"), _TIME_TO_S, "ImageJ frame interval",
                              path)
        interval_s = None if factor is None else finterval * factor
    return pixel_um, interval_s


def _physical_metadata(
    tif: tifffile.TiffFile, mm_summary: Mapping[str, Any], file_meta: Mapping[str, Any]
) -> tuple[float | None, float | None, list[str]]:
    """Pixel size (µm) and frame interval (s), with the sources they came from.

    First found wins: OME ``PhysicalSizeX``/``TimeIncrement``; ImageJ calibration; the
    Micro-Manager summary in the file, then in ``metadata.txt``; the median step of
    ``ElapsedTime-ms`` in ``metadata.txt``; the median step of OME ``DeltaT``.
    """
    sources = []
    pixel_um, interval_s, ome_step_s = _ome_calibration(tif)
    if pixel_um is not None:
        sources.append("pixel size: OME PhysicalSizeX")
    if interval_s is not None:
        sources.append("frame interval: OME TimeIncrement")
    ij_pixel_um, ij_interval_s = _imagej_calibration(tif)
    if pixel_um is None and ij_pixel_um is not None:
        pixel_um = ij_pixel_um
        sources.append("pixel size: ImageJ resolution and unit")
    if interval_s is None and ij_interval_s is not None:
        interval_s = ij_interval_s
        sources.append("frame interval: ImageJ finterval")
    file_summary = file_meta.get("Summary", {}) if file_meta else {}
    for label, summ in (("Micro-Manager summary", mm_summary), ("metadata.txt", file_summary)):
        if pixel_um is None:
            pixel_um = _positive(summ.get("PixelSize_um", summ.get("PixelSizeUm")))
            if pixel_um is not None:
                sources.append(f"pixel size: {label} PixelSize_um")
        if interval_s is None:
            ms = _positive(summ.get("Interval_ms", summ.get("IntervalMs")))
            if ms is not None:
                interval_s = ms / 1000.0
                sources.append(f"frame interval: {label} Interval_ms")
    if interval_s is None and file_meta:
        ms = _frame_interval_from_frames(file_meta)
        if ms is not None:
            interval_s = ms / 1000.0
            sources.append("frame interval: metadata.txt ElapsedTime-ms (median step)")
    if interval_s is None and ome_step_s is not None:
        interval_s = ome_step_s
        sources.append("frame interval: OME DeltaT (median step)")
    return pixel_um, interval_s, sources


def _saturation_value(tif: tifffile.TiffFile, mm_summary: Mapping[str, Any],
                      file_meta: Mapping[str, Any], dtype: np.dtype) -> tuple[float, str]:
    """Return the camera's largest value (``2 ** bits - 1``) and where its bit depth came from.

    First found wins: OME ``SignificantBits``; ``BitDepth`` of the Micro-Manager summary
    in the file, then of ``metadata.txt``; else the dtype's maximum (a 12-bit camera
    stored as uint16 without either saturates at 4095, which this cannot know). A bit
    depth that the dtype cannot hold (0, or more bits than it has) is skipped with a
    warning. NaN for float data, which has no saturation value. The source is ``""``
    when no metadata gave it.
    """
    if not np.issubdtype(dtype, np.integer):
        return float("nan"), ""
    top, bits_max = int(np.iinfo(dtype).max), np.iinfo(dtype).bits
    file_summary = file_meta.get("Summary", {}) if file_meta else {}
    candidates = (("OME SignificantBits", _ome_pixels(tif).get("SignificantBits")),
                  ("Micro-Manager summary BitDepth", mm_summary.get("BitDepth")),
                  ("metadata.txt BitDepth", file_summary.get("BitDepth")))
    rejected = []
    for label, value in candidates:
        if value is None or isinstance(value, bool) or value in rejected:
            continue
        try:
            bits = float(value)
        except (TypeError, ValueError):
            bits = float("nan")
        if bits.is_integer() and 1 <= bits <= bits_max:
            return float(2 ** int(bits) - 1), f"saturation: {label} {int(bits)}"
        rejected.append(value)  # metadata.txt repeats the summary: one warning
        warnings.warn(f"{tif.filehandle.path}: {label} {value!r} does not fit {dtype} data "
                      "and is ignored", CalimWarning, stacklevel=3)  # open_movie's caller
    return float(top), ""


def _open_tiff(path: Path) -> tifffile.TiffFile:
    if not path.is_file():
        raise CalimInputError(f"{path}: stack file not found")
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error) as exc:
        raise CalimInputError(f"{path}: not a readable TIFF file ({exc})") from None


def _first_series(tif: tifffile.TiffFile, path: Path) -> tifffile.TiffPageSeries:
    try:
        return tif.series[0]
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on corrupt files
        raise CalimInputError(
            f"{path}: cannot read the image series, file corrupt or truncated ({exc})"
        ) from None


def _check_mmstack_files(stack_files: tuple[Path, ...], series: tifffile.TiffPageSeries) -> None:
    """Refuse zero-filled (missing) frames and continuation files out of time order."""
    missing = [i for i, page in enumerate(series.pages)
               if page is None or not page.dataoffsets or page.dataoffsets[0] == 0]
    if missing:
        raise CalimInputError(
            f"{stack_files[0]}: {len(missing)} of {len(series.pages)} frames are missing "
            f"(first missing frame {missing[0]}): a stack file is truncated or a "
            "continuation file is missing"
        )
    last = -1
    for path in stack_files:
        with open(path, "rb") as fh:
            try:
                imap = tifffile.read_micromanager_metadata(fh, {"IndexMap"}).get("IndexMap")
            except ValueError as exc:
                raise CalimInputError(f"{path}: not a Micro-Manager stack ({exc})") from None
        if imap is None or len(imap) == 0:
            raise CalimInputError(f"{path}: Micro-Manager index map unreadable (file truncated?)")
        frames = imap[:, 2]
        if frames.min() <= last:
            raise CalimInputError(
                f"{path}: continuation files out of order (its first frame {frames.min()} "
                f"comes before frame {last} of the previous file)"
            )
        last = int(frames.max())


def _declared_images(tif: tifffile.TiffFile) -> tuple[int, str] | None:
    """Return how many images the file's own metadata announce, and which metadata say so.

    In order: the Micro-Manager summary in the file header (``Frames`` x ``Slices`` x
    ``Channels``, all continuation files together), OME ``SizeT`` x ``SizeZ`` x
    ``SizeC``, ImageJ ``images=``, tifffile's ``shape``. None when none says.
    """
    try:
        mm = tif.micromanager_metadata or {}
    except Exception:  # noqa: BLE001 - a damaged header is only lost metadata
        mm = {}
    summary = mm.get("Summary") if isinstance(mm.get("Summary"), dict) else {}
    frames = summary.get("Frames")
    if isinstance(frames, int) and frames > 0:
        n = frames * max(int(summary.get("Slices", 1) or 1), 1) * max(
            int(summary.get("Channels", 1) or 1), 1)
        return n, "Micro-Manager summary 'Frames'"
    pixels = _ome_pixels(tif)
    sizes = [pixels.get(k) for k in ("SizeT", "SizeZ", "SizeC")]
    if all(isinstance(v, int) and v > 0 for v in sizes):
        return math.prod(sizes), "OME SizeT"
    ij = tif.imagej_metadata or {}
    if isinstance(ij.get("images"), int) and ij["images"] > 0:
        return ij["images"], "ImageJ images="
    shaped = tif.shaped_metadata
    page = tif.pages.first
    if shaped and isinstance(shaped[0].get("shape"), list) and page.size:
        return math.prod(shaped[0]["shape"]) // page.size, "tifffile shape"
    return None


def _complete_images(series: tifffile.TiffPageSeries) -> tuple[int, int]:
    """Images of a series whose pixels lie wholly in their file, counted from the first.

    Returns ``(complete, announced)``: ``announced`` is the series' number of images.
    """
    keyframe = series.keyframe
    announced = math.prod(series.shape) // max(keyframe.size, 1)
    pages = series.pages
    if len(pages) == 1 and announced > 1 and pages[0] is not None:
        # one page whose image data continue contiguously (ImageJ, large stacks)
        page = pages[0]
        room = page.parent.filehandle.size - page.dataoffsets[0]
        return min(announced, max(room, 0) // max(keyframe.nbytes, 1)), announced
    for i, page in enumerate(pages):
        if page is None or not page.dataoffsets:
            return i, announced
        size = page.parent.filehandle.size
        for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
            if off == 0 or off + n > size:
                return i, announced
    return len(pages), announced


def _page_chain_cut(tif: tifffile.TiffFile) -> bool:
    """Tell whether the last page tifffile found links to a page beyond the end of the file.

    A complete TIFF ends its chain of pages with a zero link; tifffile stops (and only
    logs) at a link past the end of the file, which is how a truncated file that lost its
    metadata looks like a shorter, valid one. This reads that one link, stored right
    after the last page's tag list.
    """
    fmt, fh = tif.tiff, tif.filehandle
    last = tif.pages[len(tif.pages) - 1]
    with fh.lock:
        try:
            fh.seek(last.offset)
            (n_tags,) = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))
            fh.seek(last.offset + fmt.tagnosize + n_tags * fmt.tagsize)
            (link,) = struct.unpack(fmt.offsetformat, fh.read(fmt.offsetsize))
        except (struct.error, OSError):
            return True
    return link >= fh.size


def _contiguous_frames(tif: tifffile.TiffFile) -> int:
    """Whole frames of pixel data an ImageJ file stored in one block holds (0 if not so).

    ImageJ writes a stack as one image description and all frames' pixels back to back;
    tifffile reads the frames from the first page's offset. A file cut short has only
    its first page, yet the bytes after it may hold many whole frames.
    """
    page = tif.pages.first
    if not tif.is_imagej or not page.is_contiguous or page.compression != 1 or not page.nbytes:
        return 0  # page.nbytes: one decoded frame, bytes (uncompressed: as stored)
    return max(int((tif.filehandle.size - page.dataoffsets[0]) // page.nbytes), 0)


def _check_complete(parts: list[tuple[tifffile.TiffPageSeries, tifffile.TiffFile, Path]],
                    declared: tuple[int, str] | None) -> None:
    """Refuse a stack shorter than its metadata announce, or cut inside or after a page.

    ``parts`` are the series of the stack files in order; ``declared`` what the first
    file's metadata announce for all of them (:func:`_declared_images`).
    """
    found = 0
    cut = None
    for series, tif, path in parts:
        complete, announced = _complete_images(series)
        found += complete
        if complete < announced:
            cut = (path, f"frame {found} lies beyond the end of the file "
                         f"({tif.filehandle.size} bytes)")
            break
        if _page_chain_cut(tif):
            cut = (path, f"the file ends where its frame {found} should begin "
                         f"({tif.filehandle.size} bytes)")
            break
    if cut is None and (declared is None or found >= declared[0]):
        return
    if declared is not None and found < declared[0]:
        where = (f" in {len(parts)} files: a file is truncated or a continuation file is "
                 "missing" if len(parts) > 1 else "")
        if len(parts) == 1:
            found = max(found, _contiguous_frames(parts[0][1]))
        raise CalimInputError(
            f"{cut[0] if cut else parts[0][2]}: file truncated: expected {declared[0]} "
            f"frames ({declared[1]}), found {found}{where}"
        )
    raise CalimInputError(f"{cut[0]}: file truncated: {cut[1]}; found {found} complete frames")


def _squeeze_to_tyx(arr: da.Array, axes: str, path: Path) -> tuple[da.Array, str]:
    keep = [i for i, (ax, n) in enumerate(zip(axes, arr.shape, strict=True))
            if n > 1 or ax in "YX"]
    arr = arr.reshape(tuple(arr.shape[i] for i in keep))
    axes = "".join(axes[i] for i in keep)
    if arr.ndim == 2:
        raise CalimInputError(f"{path}: a single image (axes {axes}), not a time series")
    if arr.ndim != 3 or axes[-2:] != "YX":
        raise CalimInputError(
            f"{path}: expected a 3-D (time, y, x) stack, got shape {arr.shape} with axes "
            f"{axes!r} (several slices or positions are not supported)"
        )
    return arr, axes


def _channel_names(tif: tifffile.TiffFile, mm_summary: Mapping[str, Any], n: int) -> list[str]:
    """Return the channels' names from the Micro-Manager summary or OME, ``""`` where unknown."""
    names = mm_summary.get("ChNames")
    if not (isinstance(names, list) and len(names) == n):
        ome = _ome_pixels(tif).get("Channel", [])
        ome = [ome] if isinstance(ome, dict) else ome
        names = [c.get("Name", "") if isinstance(c, dict) else "" for c in ome]
    return [str(v) for v in names] if len(names) == n else [""] * n


def _check_channel(channel: Any, series: tifffile.TiffPageSeries, tif: tifffile.TiffFile,
                   mm_summary: Mapping[str, Any], path: Path) -> int | None:
    """Return the channel index to keep (None: the series has no ``C`` axis to select on).

    Raises :class:`CalimInputError` for several channels and no choice, or a choice the
    stack lacks; a single-channel stack accepts ``channel`` None or 0.
    """
    axis = series.axes.find("C")
    n = int(series.shape[axis]) if axis >= 0 else 1
    if channel is not None and (isinstance(channel, bool)
                                or not isinstance(channel, int | np.integer)):
        raise ValueError(f"channel must be an integer or None, got {channel!r}")
    listed = ", ".join(f"{k}" + (f" {name!r}" if name else "")
                       for k, name in enumerate(_channel_names(tif, mm_summary, n)))
    if n > 1 and channel is None:
        raise CalimInputError(
            f"{path}: the stack has {n} channels ({listed}); choose the one to analyse "
            f"with the parameter load.channel (0 to {n - 1}; calim run -p load.channel 0)")
    if channel is not None and not 0 <= channel < n:
        raise CalimInputError(
            f"{path}: load.channel is {channel} but the stack has {n} channel(s) ({listed})")
    return int(channel) if axis >= 0 and channel is not None else None


def _close_all(files: list[tifffile.TiffFile]) -> None:
    for f in files:
        f.close()


def _series_to_dask(series: tifffile.TiffPageSeries, chunk_time: int,
                    channel: int | None = None) -> da.Array:
    """Dask array over a TIFF series, ``chunk_time`` pages per dask chunk.

    Reading many pages per task straight from the file (rather than one task per page,
    rechunked afterwards) keeps dask from reading ahead of the reductions that consume
    the pages, so memory stays near a few chunks. A series of 2-D pages is read with
    tifffile, a block of pages at a time (:class:`_SeriesPages`); any other through
    tifffile's zarr store. With ``channel``, only that index of the series' ``C`` axis
    is kept (the axis dropped; of a series of 2-D pages only its pages are read).
    """
    shape = tuple(series.shape)
    axis = series.axes.find("C") if channel is not None else -1
    kept = shape if axis < 0 else shape[:axis] + shape[axis + 1:]
    pages = _SeriesPages.of(series, channel=None if axis < 0 else (axis, channel))
    if pages is not None:
        arr = da.from_array(pages, chunks=(min(chunk_time, pages.shape[0]), *pages.shape[1:]),
                            inline_array=True, asarray=False)
        return arr.reshape(kept) if arr.shape != kept else arr
    z = zarr.open_array(series.aszarr(), mode="r")
    chunks = (min(chunk_time, z.shape[0]), *z.shape[1:]) if z.ndim >= 3 else z.shape
    arr = da.from_zarr(z, chunks=chunks, inline_array=True)
    return arr if axis < 0 else da.take(arr, channel, axis=axis)


class _SeriesPages:
    """The 2-D pages of a TIFF series as an array of shape ``(pages, y, x)`` dask can slice.

    A slice reads only the pages it selects, in one :meth:`tifffile.TiffFile.asarray`
    call (one thread; a lock keeps the threads of a dask scheduler from sharing the
    file handles at once). Zarr over tifffile's store spends about 0.4 ms per page
    in its asynchronous layer: a full-size session's 1500 pages (512 x 688 uint16)
    summed in chunks of 50 took 0.95-1.29 s that way, 0.55 s this way (3 runs each,
    this machine, file in the page cache). ``page_index`` maps its pages to the
    series' (one channel's pages of a multi-channel series).
    """

    def __init__(self, series: tifffile.TiffPageSeries, page_index: np.ndarray, /) -> None:
        self.series = series
        self.page_index = page_index
        self.shape = (len(page_index), *series.keyframe.shape)
        self.dtype = np.dtype(series.dtype)
        self.ndim = 3
        self._lock = threading.Lock()

    @classmethod
    def of(cls, series: tifffile.TiffPageSeries, /, *,
           channel: tuple[int, int] | None = None) -> _SeriesPages | None:
        """Return the reader of ``series``, or None unless its pages are all present and 2-D.

        ``channel`` is ``(axis, index)``: only the pages at ``index`` of that axis of
        ``series.shape[:-2]`` (pages are stored in C order of those axes).
        """
        page = series.keyframe
        if (page is None or len(page.shape) != 2 or tuple(series.shape[-2:]) != page.shape
                or math.prod(series.shape[:-2]) != len(series.pages)
                or any(p is None for p in series.pages)):
            return None
        index = np.arange(len(series.pages))
        if channel is not None:
            index = index.reshape(series.shape[:-2]).take(channel[1], axis=channel[0]).ravel()
        return cls(series, index)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = (*key, *(slice(None),) * (3 - len(key)))
        index = np.arange(self.shape[0])[key[0]]
        pages = self.page_index[np.atleast_1d(index)]
        if pages.size:
            with self._lock:
                # a continuation file tifffile closed after reading its pages' tags is
                # opened for this read only (as tifffile's zarr store opens it)
                handles = {id(fh): fh for fh in (self.series.pages[k].parent.filehandle
                                                 for k in pages.tolist())}
                reopened = [fh for fh in handles.values() if fh.closed]
                for fh in reopened:
                    fh.open()
                try:
                    data = self.series.parent.asarray(key=pages.tolist(), series=self.series,
                                                      maxworkers=1)
                finally:
                    for fh in reopened:
                        fh.close()
            data = data.reshape(pages.size, *self.shape[1:])
        else:
            data = np.empty((0, *self.shape[1:]), dtype=self.dtype)
        data = data[(slice(None), *key[1:])]
        return data[0] if index.ndim == 0 else data


def open_movie(
    session_or_path: Session | str | os.PathLike,
    /,
    *,
    chunks: Mapping[str, int] | None = None,
    channel: int | None = None,
) -> xr.DataArray:
    """Open a session's stack lazily as a dask-backed ``DataArray`` (no pixel is read).

    Parameters
    ----------
    session_or_path : Session or path-like
        A :class:`Session`, a session folder (see :func:`find_stack_files`), or a stack
        file. A Micro-Manager file opens its whole acquisition (main and continuation
        files); any other TIFF opens alone. Other TIFFs in its folder do not matter.
    chunks : mapping of str to int, optional
        Dask chunk sizes per dimension (``"time"``, ``"y"``, ``"x"``); dimensions not
        given span the whole axis. Default is ``{"time": 100}``.
    channel : int, optional
        For a stack with several channels (a ``C`` axis, e.g. GCaMP and a structural
        red channel), the 0-based index of the one to analyse; only its pages are read.
        Default is None: the stack must have one channel (0 is accepted for it too).

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "y", "x")``, the file's dtype (uint16 for Micro-Manager).
        ``movie.close()`` closes its files (pixels cannot be read afterwards).
        Coordinates: ``time`` in seconds when the frame interval is known (else frame
        index, ``attrs["time_units"] == "frame"``); ``y`` and ``x`` in micrometres when
        the pixel size is known (``row × pixel size``), else pixel indices.
        ``attrs``: ``source_files``, ``frame_interval_s``, ``pixel_size_um`` (NaN when
        unknown), ``saturation_value`` (the camera's largest value, ``2 ** bits - 1``
        from OME ``SignificantBits`` or Micro-Manager ``BitDepth``, else the dtype's
        maximum; NaN for float data), ``metadata_sources`` and ``acquisition_metadata``
        (the Micro-Manager summary as JSON text). Pixel size and frame interval come from OME
        (``PhysicalSizeX``, ``TimeIncrement``, with their units), ImageJ (resolution and
        ``unit``, ``finterval`` and ``tunit``), the Micro-Manager summary or
        ``metadata.txt``, or measured frame times, in that order of preference. Any
        number of frames opens; the pipeline's own minimum is checked elsewhere.

    Raises
    ------
    CalimInputError
        A missing or corrupt file; a truncated file (``file truncated: expected N
        frames (<metadata>), found M`` when the Micro-Manager summary, OME ``SizeT`` or
        ImageJ ``images=`` say how many there should be); a stack that is not 3-D;
        continuation files missing or out of order; zero-filled missing frames;
        unreadable metadata; several channels and no ``channel`` (the message lists
        them, with their Micro-Manager or OME names), or a ``channel`` it lacks.

    Warns
    -----
    CalimWarning
        Frame interval unknown (time in frames); a calibration unit not understood;
        files of a session folder left aside (see :func:`find_stack_files`).
    """
    if isinstance(session_or_path, Session):
        session = session_or_path
        if session.problem:
            raise CalimInputError(session.problem)
        stack_files, metadata_file = session.stack_files, session.metadata_file
    else:
        p = Path(session_or_path)
        if p.is_dir():
            stack_files, metadata_file = find_stack_files(p)
        elif not p.exists():
            raise CalimInputError(f"{p}: stack file not found")
        else:
            stack_files, metadata_file = _stack_files_of(p)
        session = None
    for f in stack_files:
        if not Path(f).is_file():
            raise CalimInputError(f"{f}: stack file not found")
    file_meta = read_mm_metadata_file(metadata_file) if metadata_file else {}

    # tifffile logs (rather than raises) on Micro-Manager inconsistencies; we check them.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    tif = _open_tiff(Path(stack_files[0]))
    opened = [tif]
    try:
        series = _first_series(tif, Path(stack_files[0]))
        mm = tif.micromanager_metadata if tif.is_micromanager else None
        mm_summary = (mm or {}).get("Summary", {}) or file_meta.get("Summary", {})
        want = {"time": 100, **(chunks or {})}
        unknown = set(want) - {"time", "y", "x"}
        if unknown:
            raise ValueError(f"chunks has unknown dimension(s) {sorted(unknown)}")
        chunk_time = int(want["time"])
        channel = _check_channel(channel, series, tif, mm_summary, Path(stack_files[0]))
        axes = series.axes if channel is None else series.axes.replace("C", "")
        if series.kind == "mmstack":
            _check_mmstack_files(stack_files, series)
            arr = _series_to_dask(series, chunk_time, channel)
        else:
            parts = [(series, tif, Path(stack_files[0]))]
            if len(stack_files) > 1 and not series.is_multifile:
                for f in stack_files[1:]:
                    t2 = _open_tiff(Path(f))
                    opened.append(t2)
                    parts.append((_first_series(t2, Path(f)), t2, Path(f)))
            _check_complete(parts, _declared_images(tif))
            try:
                arr = da.concatenate([_series_to_dask(s, chunk_time, channel)
                                      for s, _, _ in parts], axis=0)
            except ValueError as exc:
                raise CalimInputError(
                    f"{stack_files[0]}: continuation files do not match ({exc})") from None
        arr, _ = _squeeze_to_tyx(arr, axes, Path(stack_files[0]))

        pixel_um, interval_s, sources = _physical_metadata(tif, mm_summary, file_meta)
        saturation, source = _saturation_value(tif, mm_summary, file_meta, arr.dtype)
        sources += [source] if source else []
        nt, ny, nx = arr.shape
        arr = arr.rechunk(tuple(int(want.get(d, n)) for d, n in zip(("time", "y", "x"), arr.shape,
                                                                   strict=True)))
        coords: dict[str, Any] = {}
        attrs: dict[str, Any] = {
            "source_files": [str(f) for f in stack_files],
            "metadata_file": str(metadata_file) if metadata_file else "",
            "frame_interval_s": interval_s if interval_s is not None else float("nan"),
            "pixel_size_um": pixel_um if pixel_um is not None else float("nan"),
            "saturation_value": saturation,
            "channel": -1 if channel is None else channel,
            "metadata_sources": sources,
            "acquisition_metadata": json.dumps(mm_summary, default=str),
        }
        if interval_s is not None:
            coords["time"] = ("time", np.arange(nt) * interval_s, {"units": "s"})
        else:
            coords["time"] = ("time", np.arange(nt, dtype=float), {"units": "frame"})
            attrs["time_units"] = "frame"
            warnings.warn(f"{stack_files[0]}: frame interval unknown; time is in frames",
                          CalimWarning, stacklevel=2)
        for dim, n in (("y", ny), ("x", nx)):
            if pixel_um is not None:
                coords[dim] = (dim, np.arange(n) * pixel_um, {"units": "µm"})
            else:
                coords[dim] = (dim, np.arange(n, dtype=float), {"units": "pixel"})
        if session is not None:
            attrs.update(experiment=session.experiment, date=session.date, session=session.name)
        movie = xr.DataArray(arr, dims=("time", "y", "x"), coords=coords, attrs=attrs,
                             name=session.id if session else Path(stack_files[0]).name)
    except BaseException:
        _close_all(opened)
        raise
    movie.set_close(functools.partial(_close_all, opened))
    return movie


# --------------------------------------------------------------------------- outputs


def atomic_path(path: str | os.PathLike, /) -> Path:
    """Temporary sibling name for ``path``; write there, then :func:`commit` it."""
    path = Path(path)
    return path.with_name(f".{path.name}.part-{os.getpid()}")


def commit(tmp: str | os.PathLike, path: str | os.PathLike, /) -> Path:
    """Rename a finished temporary file onto its final name (atomic on one file system)."""
    os.replace(tmp, path)
    return Path(path)


# zlib level of the PNGs: 1 encodes a per-ROI figure with Pillow in 10.8 ms instead of
# 18.0 ms at its default 6, for files 6 % larger (75 vs 71 KB; 30 PNGs of a full-size
# session); png_bytes uses it too
_PNG_COMPRESS_LEVEL = 1


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike, /) -> Iterator[Path]:
    """Yield a temporary name to write ``path`` to; commit it after, or remove it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path)


def save_figure(fig: Any, path: str | os.PathLike, /, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    kind = path.suffix.lstrip(".").lower()
    if kind == "png":
        kwargs.setdefault("pil_kwargs", {"compress_level": _PNG_COMPRESS_LEVEL})
    try:
        with _atomic_file(path) as tmp:
            fig.savefig(tmp, format=kind, **kwargs)
    finally:
        plt.close(fig)
    return path


def save_png(image: np.ndarray, path: str | os.PathLike, /, *, dpi: float) -> Path:
    """Save an RGBA image as a PNG, atomically, as :func:`save_figure` saves a figure.

    ``image`` is uint8 of shape ``(height, width, 4)``, top row first, rendered at
    ``dpi`` (written as the PNG's resolution). Encoded by :func:`png_bytes`.
    """
    data = png_bytes(image, dpi=dpi)
    with _atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def png_bytes(image: np.ndarray, /, *, dpi: float | None = None) -> bytes:
    """Encode an 8-bit RGBA or RGB image as a PNG file's bytes.

    Encoded by imagecodecs (libpng) with each row unfiltered (PNG filter type 0) and
    zlib level 1. A figure's image is mostly flat colour, which deflate compresses
    without help from the row filters: a per-ROI figure of a full-size session
    (800 x 550 RGBA) encodes in 3.9 ms to 70 KB, against 10.5 ms and 77 KB from
    Pillow at the same level, which tries its adaptive filters on every row and has
    no option to skip them (30 PNGs of a full-size session, this machine). The
    resolution goes in a ``pHYs`` chunk after the header (PNG specification, W3C,
    2nd ed., 2003, 11.3.5.3: pixels per metre, unit 1; CRC-32 over type and data).

    Parameters
    ----------
    image : numpy.ndarray
        uint8, shape ``(height, width, 4)`` (RGBA) or ``(height, width, 3)`` (RGB),
        top row first.
    dpi : float, optional
        Resolution written in the ``pHYs`` chunk, dots per inch (None: no chunk).

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    ValueError
        If ``image`` is not such an array or ``dpi`` not a positive number.
    """
    import zlib

    import imagecodecs

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4) \
            or 0 in image.shape[:2]:
        raise ValueError(f"image must be uint8 of shape (height, width, 3 or 4), got "
                         f"{image.dtype} of shape {image.shape}")
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, (int, float))
                            or not dpi > 0 or not math.isfinite(dpi)):
        raise ValueError(f"dpi must be a positive number, got {dpi!r}")
    data = bytes(imagecodecs.png_encode(np.ascontiguousarray(image),
                                        level=_PNG_COMPRESS_LEVEL,
                                        filter=imagecodecs.PNG.FILTER.NONE))
    if dpi is None:
        return data
    per_metre = round(dpi / 0.0254)
    body = b"pHYs" + struct.pack(">IIB", per_metre, per_metre, 1)
    phys = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    header_end = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, CRC
    if data[12:16] != b"IHDR":  # pragma: no cover - libpng always writes it first
        raise RuntimeError("PNG without IHDR first")
    return data[:header_end] + phys + data[header_end:]


def save_pdf_pages(figures: Iterable[Any], path: str | os.PathLike, /) -> Path:
    """Save each figure of ``figures`` as a page of one PDF, atomically.

    The figures are saved as they come (an iterator may redraw one figure page after
    page, as :func:`calim_helpers.plots.roi_figure_pages` does) and are not closed.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    with _atomic_file(path) as tmp, PdfPages(tmp) as pdf:
        for fig in figures:
            pdf.savefig(fig)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, /) -> Path:
    """Write a text file (CSV, JSON, ...) atomically."""
    with _atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes a Zarr store can hold: non-finite floats become None, tuples lists."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def write_store(ds: xr.Dataset, path: str | os.PathLike, /) -> Path:
    """Write ``ds`` to a Zarr store atomically (temporary folder, then rename).

    Attributes are made JSON-safe (NaN -> None, tuples -> lists, numpy scalars ->
    Python); ``ds`` itself is not modified. An existing store at ``path`` is replaced
    only once the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs = _json_safe(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = _json_safe(ds[name].attrs)
    tmp = atomic_path(path)
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


def open_store(path: str | os.PathLike, /) -> xr.Dataset:
    """Open a Zarr store written by :func:`write_store`, lazily.

    Raises
    ------
    CalimInputError
        The store does not exist (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise CalimInputError(f"{path}: not found (did the step that writes it fail?)")
    return xr.open_zarr(path, consolidated=True)


def _ome_movie_metadata(pixel_size_um: tuple[float, float] | None,
                        frame_interval_s: float | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"axes": "TYX"}
    if pixel_size_um is not None and all(math.isfinite(v) for v in pixel_size_um):
        metadata |= {"PhysicalSizeY": float(pixel_size_um[0]), "PhysicalSizeYUnit": "µm",
                     "PhysicalSizeX": float(pixel_size_um[1]), "PhysicalSizeXUnit": "µm"}
    if frame_interval_s and math.isfinite(frame_interval_s):
        metadata |= {"TimeIncrement": float(frame_interval_s), "TimeIncrementUnit": "s"}
    return metadata


def as_pixel_type(block: Any, dtype: Any, /) -> np.ndarray:
    """Return ``block`` in ``dtype``, rounded to nearest and clipped for an integer type.

    Used to write a corrected movie in the recording's own pixel type (resampling and
    denoising give fractional counts).

    Parameters
    ----------
    block : array_like
        Pixel values, any shape, any real dtype. Not modified.
    dtype : numpy dtype
        An integer type (values rounded half to even, as ``np.rint``, clipped to the
        type's range, NaN as 0) or a float type (a plain cast).

    Returns
    -------
    numpy.ndarray
        ``block``'s shape, in ``dtype``.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return np.asarray(block, dtype=dtype)
    info = np.iinfo(dtype)
    # float32 holds every 8- and 16-bit count exactly; wider types round in float64
    work = np.array(block, dtype=np.float32 if dtype.itemsize <= 2 else np.float64)
    np.nan_to_num(work, copy=False, nan=0.0)
    np.rint(work, out=work)
    np.clip(work, info.min, info.max, out=work)
    return work.astype(dtype)


_WRITE_BYTES = 1 << 23  # MovieFile converts and writes blocks this many bytes at a time


class MovieFile:
    """A (time, y, x) OME-TIFF written block by block, in any order, then committed.

    The file is laid out at once (OME-XML with pixel size and frame interval, which Fiji
    reads; the pixel size also as TIFF resolution tags, which plain ImageJ reads; frames
    contiguous, a BigTIFF when it needs one) under a temporary name; ``out[t0:t1, y0:y1,
    x0:x1] = block`` writes a block at its place with ``os.pwrite``, so blocks may come
    from several threads (``dask.array.store(data, out, lock=False)``) and nothing but the
    block is held in memory: the written pages belong to the system's file cache, not to
    the process. :meth:`commit` renames the finished file onto ``path``; leaving the
    ``with`` block without it removes the temporary file (nothing half-written).

    Parameters
    ----------
    path : path-like
        Destination, e.g. ``<session>_corrected.ome.tif``.
    shape : (int, int, int)
        (time, y, x) of the whole movie.
    dtype : numpy dtype
        Pixel type of the file; blocks are converted with :func:`as_pixel_type`.
    pixel_size_um : (float, float) or None
        Pixel height and width, µm; None when unknown.
    frame_interval_s : float or None
        Seconds per frame; None when unknown.

    Examples
    --------
    >>> import numpy as np, tifffile
    >>> with MovieFile(tmp / "m.ome.tif", (4, 2, 3), np.uint16, pixel_size_um=(1.3, 1.3),
    ...                frame_interval_s=0.1) as out:  # doctest: +SKIP
    ...     out[2:4] = np.full((2, 2, 3), 7.6)
    ...     out[0:2] = np.zeros((2, 2, 3))
    ...     path = out.commit()
    >>> tifffile.imread(path)[3, 0, 0]  # doctest: +SKIP
    8
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], dtype: Any, /,
                 *, pixel_size_um: tuple[float, float] | None,
                 frame_interval_s: float | None) -> None:
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"{self.path}: shape must be (time, y, x) with every size >= 1, "
                             f"got {shape}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # ".<name>.part-<pid>.tif": the name a killed run's leftovers are cleared by
        self._tmp = atomic_path(self.path).with_name(f"{atomic_path(self.path).name}.tif")
        self._fd: int | None = None
        self._lock = threading.Lock()  # closing the file waits for no write, see below
        try:
            calibrated = _ome_movie_metadata(pixel_size_um, frame_interval_s)
            resolution = {}  # the TIFF tags too: plain ImageJ reads those, not the OME-XML
            if "PhysicalSizeX" in calibrated:
                resolution = {"resolution": (1e4 / calibrated["PhysicalSizeX"],
                                             1e4 / calibrated["PhysicalSizeY"]),
                              "resolutionunit": "CENTIMETER"}
            offset, _ = tifffile.imwrite(
                self._tmp, shape=self.shape, dtype=self.dtype, ome=True, metadata=calibrated,
                photometric="minisblack", returnoffset=True, **resolution)
            with tifffile.TiffFile(self._tmp) as tif:  # frames must lie one after the other
                if tif.series[0].dataoffset != offset:
                    raise RuntimeError(f"{self.path}: tifffile did not lay the frames out "
                                       "contiguously")
            self._offset = int(offset)
            self._fd = os.open(self._tmp, os.O_WRONLY)
        except BaseException:
            self.discard()
            raise

    def __setitem__(self, key: Any, block: Any) -> None:
        # a block written through its own copy of the descriptor: a dask task still
        # running after the computation failed and the file was discarded cannot write
        # into whatever file reused the descriptor's number
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self.path}: already committed or discarded")
            fd = os.dup(self._fd)
        try:
            self._write(fd, key, block)
        finally:
            os.close(fd)

    def _write(self, fd: int, key: Any, block: Any) -> None:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        (t0, t1), (y0, y1), (x0, x1) = (
            s.indices(n)[:2] if isinstance(s, slice) else (int(s), int(s) + 1)
            for s, n in zip(key, self.shape, strict=True))
        block = np.asarray(block).reshape(t1 - t0, y1 - y0, x1 - x0)
        _, ny, nx = self.shape
        size = self.dtype.itemsize
        whole = (y0, y1, x0, x1) == (0, ny, 0, nx)
        step = max(1, _WRITE_BYTES // max(1, block[0].size * max(size, block.itemsize)))
        for i in range(0, t1 - t0, step):  # converted a few MB at a time
            part = np.ascontiguousarray(as_pixel_type(block[i:i + step], self.dtype))
            if whole:  # whole frames: one write
                self._pwrite(fd, part, self._offset + (t0 + i) * ny * nx * size)
                continue
            for k, frame in enumerate(part):
                for j, row in enumerate(frame):
                    at = ((t0 + i + k) * ny + y0 + j) * nx + x0
                    self._pwrite(fd, row, self._offset + at * size)

    def _pwrite(self, fd: int, data: np.ndarray, offset: int) -> None:
        if os.pwrite(fd, data.data, offset) != data.nbytes:
            raise OSError(f"{self.path}: short write at byte {offset} (disk full?)")

    def write_block(self, block: np.ndarray, block_info: Any = None) -> np.ndarray:
        """Write a dask block at its place and return it unchanged (for ``map_blocks``).

        ``data.map_blocks(out.write_block)`` writes each block as a side effect of
        whatever computes ``data``: a movie its block mean is taken from is then written
        in the same pass, however the computation's graph is optimized.
        """
        where = block_info[0]["array-location"]
        self[tuple(slice(a, b) for a, b in where)] = block
        return block

    def commit(self) -> Path:
        """Close the file and rename it onto :attr:`path`; return :attr:`path`."""
        with self._lock:
            if self._fd is None:
                raise ValueError(f"{self.path}: already committed or discarded")
            os.close(self._fd)
            self._fd = None
        return commit(self._tmp, self.path)

    def discard(self) -> None:
        """Close and remove the temporary file (nothing is left behind)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> MovieFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None or self._tmp.exists():
            self.discard()


def write_movie(movie: xr.DataArray, path: str | os.PathLike, /, *,
                pixel_size_um: tuple[float, float] | None,
                frame_interval_s: float | None, dtype: Any = None) -> Path:
    """Write a (time, y, x) movie as an OME-TIFF that Fiji opens calibrated, atomically.

    A dask-backed movie is computed and written one block at a time (:class:`MovieFile`),
    so it never sits in memory whole. ``PhysicalSizeX/Y`` (µm) and ``TimeIncrement`` (s)
    are set when known.

    Parameters
    ----------
    movie : xarray.DataArray
        (time, y, x), any real dtype (float32 for the pipeline's corrected movie).
    path : path-like
        Destination, e.g. ``<session>_corrected.ome.tif``.
    pixel_size_um : (float, float) or None
        Pixel height and width of ``movie``'s own grid, µm; None when unknown.
    frame_interval_s : float or None
        Seconds per frame of ``movie``; None when unknown.
    dtype : numpy dtype, optional
        Pixel type of the file (:func:`as_pixel_type`). Default is None: ``movie``'s.
    """
    data = movie.transpose("time", "y", "x").data
    with MovieFile(path, data.shape, data.dtype if dtype is None else dtype,
                   pixel_size_um=pixel_size_um, frame_interval_s=frame_interval_s) as out:
        if isinstance(data, da.Array):
            da.store(data, out, lock=False)
        else:
            out[:] = data
        return out.commit()
