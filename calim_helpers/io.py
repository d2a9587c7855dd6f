"""Finding sessions and opening Micro-Manager stacks: the only module that opens image files.

An *experiment* folder holds *date* folders (``dd-mm-yy``) holding *session* folders
(``<yymmdd>_<n>``), each with a Micro-Manager OME-TIFF stack (possibly split into
continuation files), its ``metadata.txt`` and a Fiji ROI set (SPEC §1).

Examples
--------
>>> from calim_helpers import demo, io
>>> exp = demo.write_demo_experiment(tmp, n_frames=40, frame_shape=(32, 40))  # doctest: +SKIP
>>> sessions = io.find_sessions(exp)  # doctest: +SKIP
>>> movie = io.open_movie(sessions[0])  # lazy, dask-backed  # doctest: +SKIP
>>> movie.dims  # doctest: +SKIP
('time', 'y', 'x')

Reading relies on tifffile's Micro-Manager (``mmstack``) and OME support and on its
zarr store; nothing here parses TIFF structures. Files in the Micro-Manager layout are
written by :func:`calim_helpers.synthetic.mmstack.write_mmstack` (demo data, tests).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shutil
import struct
import warnings
from collections.abc import Mapping
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
    "read_mm_metadata_file",
    "save_figure",
    "write_store",
    "write_text",
]

DATE_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})$")
SESSION_RE = re.compile(r"^(\d{6})_(\d+)$")
STACK_RE = re.compile(
    r"^(?P<prefix>.+)_MMStack_(?P<pos>Pos\d+)(?:_(?P<part>\d+))?\.ome\.tiff?$", re.IGNORECASE
)
# ROI-set locations accepted (compared case-insensitively), in order of preference.
ROI_LOCATIONS = ("rois/rois.zip", "roiset.zip", "rois/roiset.zip", "rois.zip")


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
    """

    experiment: str
    date: str
    name: str
    path: Path
    stack_files: tuple[Path, ...]
    metadata_file: Path | None
    roi_file: Path | None
    problem: str = ""

    @property
    def id(self) -> str:
        """``<date>_<session>``, unique within an experiment."""
        return f"{self.date}_{self.name}"


# --------------------------------------------------------------------------- discovery


def find_stack_files(folder: str | os.PathLike, /) -> tuple[tuple[Path, ...], Path | None]:
    """Return the stack files of one session folder, in order, and its metadata file.

    Micro-Manager writes ``<prefix>_MMStack_Pos0.ome.tif`` and, past 4 GB,
    continuation files ``<prefix>_MMStack_Pos0_1.ome.tif``, ``..._2...``. A folder
    without any ``_MMStack_`` file but with exactly one ``.tif``/``.tiff`` uses that file.

    Parameters
    ----------
    folder : path-like
        Session folder.

    Returns
    -------
    stack_files : tuple of pathlib.Path
        Main file first, then continuation files in order.
    metadata_file : pathlib.Path or None
        ``<prefix>_MMStack_<pos>_metadata.txt`` if present.

    Raises
    ------
    CalimInputError
        No stack, stacks of several positions, or a gap in the continuation files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CalimInputError(f"{folder}: session folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    parts: dict[tuple[str, str], dict[int, Path]] = {}
    for p in files:
        m = STACK_RE.match(p.name)
        if m:
            key = (m["prefix"], m["pos"])
            parts.setdefault(key, {})[int(m["part"] or 0)] = p
    if not parts:
        tiffs = [p for p in files if p.suffix.lower() in (".tif", ".tiff")]
        if len(tiffs) == 1:
            return (tiffs[0],), _find_metadata_txt(folder, None)
        found = ", ".join(p.name for p in tiffs) or "no TIFF file"
        raise CalimInputError(
            f"{folder}: no Micro-Manager stack '*_MMStack_Pos0.ome.tif' found ({found})"
        )
    if len(parts) > 1:
        names = ", ".join(f"{a}_MMStack_{b}" for a, b in sorted(parts))
        raise CalimInputError(f"{folder}: stacks of several acquisitions/positions: {names}")
    (prefix, pos), numbered = next(iter(parts.items()))
    expected = list(range(max(numbered) + 1))
    if sorted(numbered) != expected:
        missing = [f"{prefix}_MMStack_{pos}{'_' + str(k) if k else ''}.ome.tif"
                   for k in expected if k not in numbered]
        raise CalimInputError(
            f"{folder}: continuation file(s) missing: {', '.join(missing)}"
        )
    stack_files = tuple(numbered[k] for k in expected)
    return stack_files, _find_metadata_txt(folder, f"{prefix}_MMStack_{pos}_metadata.txt")


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
        ROI set (it will need automatic detection or be skipped), or a session folder
        that cannot be used (no stack, a gap in its continuation files, several ROI
        sets): it is listed with its ``problem``, so that it fails alone.
    """
    root = Path(experiment_dir)
    if not root.is_dir():
        raise CalimInputError(f"{root}: experiment folder not found")
    sessions = []
    for date_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        dm = DATE_RE.match(date_dir.name)
        if not dm:
            continue
        for sdir in sorted(p for p in date_dir.iterdir() if p.is_dir()):
            sm = SESSION_RE.match(sdir.name)
            if not sm:
                continue
            dd, mm, yy = dm.groups()
            if sm[1] != f"{yy}{mm}{dd}":
                warnings.warn(
                    f"{sdir}: session date {sm[1]} does not match date folder {date_dir.name}",
                    CalimWarning, stacklevel=2,
                )
            try:
                stack_files, metadata_file = find_stack_files(sdir)
                roi_file = _find_roi_file(sdir)
            except CalimInputError as exc:
                warnings.warn(str(exc), CalimWarning, stacklevel=2)
                sessions.append(Session(root.name, date_dir.name, sdir.name, sdir, (), None,
                                        None, problem=str(exc)))
                continue
            if roi_file is None:
                warnings.warn(f"{sdir}: no ROI set (ROIs/ROIs.zip, Rois/Rois.zip, RoiSet.zip)",
                              CalimWarning, stacklevel=2)
            sessions.append(Session(root.name, date_dir.name, sdir.name, sdir,
                                    stack_files, metadata_file, roi_file))
    if not sessions:
        raise CalimInputError(
            f"{root}: no session found (expected dd-mm-yy/<yymmdd>_<n>/ folders)"
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


_LENGTH_TO_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}
_TIME_TO_S = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "min": 60.0, "h": 3600.0}


def _ome_pixels(tif: tifffile.TiffFile) -> dict[str, Any]:
    xml = tif.ome_metadata
    if not xml:
        return {}
    try:
        ome = tifffile.xml2dict(xml)["OME"]
    except Exception:  # noqa: BLE001 - a broken OME-XML is only lost metadata
        warnings.warn(f"{tif.filename}: unreadable OME-XML ignored", CalimWarning, stacklevel=3)
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


def _physical_metadata(
    tif: tifffile.TiffFile, mm_summary: Mapping[str, Any], file_meta: Mapping[str, Any]
) -> tuple[float | None, float | None, list[str]]:
    """Pixel size (µm) and frame interval (s), with the sources they came from."""
    sources = []
    pixels = _ome_pixels(tif)
    pixel_um = _positive(pixels.get("PhysicalSizeX"))
    if pixel_um is not None:
        pixel_um *= _LENGTH_TO_UM.get(pixels.get("PhysicalSizeXUnit", "µm"), 1.0)
        sources.append("pixel size: OME PhysicalSizeX")
    interval_s = _positive(pixels.get("TimeIncrement"))
    if interval_s is not None:
        interval_s *= _TIME_TO_S.get(pixels.get("TimeIncrementUnit", "s"), 1.0)
        sources.append("frame interval: OME TimeIncrement")
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
    return pixel_um, interval_s, sources


def _open_tiff(path: Path) -> tifffile.TiffFile:
    if not path.is_file():
        raise CalimInputError(f"{path}: stack file not found")
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error) as exc:
        raise CalimInputError(f"{path}: not a readable TIFF file ({exc})") from None


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


def _check_extents(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Refuse pages whose pixel data lie beyond the end of their file (truncation)."""
    for i, page in enumerate(series.pages):
        if page is None:
            raise CalimInputError(f"{path}: frame {i} is missing")
        size = page.parent.filehandle.size
        for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
            if off == 0 or off + n > size:
                raise CalimInputError(
                    f"{page.parent.filehandle.path}: frame {i} lies beyond the end of the "
                    f"file ({size} bytes): file truncated"
                )


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
            f"{axes!r} (several channels, slices or positions are not supported)"
        )
    return arr, axes


def _close_all(files: list[tifffile.TiffFile]) -> None:
    for f in files:
        f.close()


def _series_to_dask(series: tifffile.TiffPageSeries, chunk_time: int) -> da.Array:
    """Dask array over tifffile's zarr store, ``chunk_time`` pages per dask chunk.

    Reading many pages per task straight from the store (rather than one task per page,
    rechunked afterwards) keeps dask from reading ahead of the reductions that consume
    the pages, so memory stays near a few chunks.
    """
    z = zarr.open_array(series.aszarr(), mode="r")
    chunks = (min(chunk_time, z.shape[0]), *z.shape[1:]) if z.ndim >= 3 else z.shape
    return da.from_zarr(z, chunks=chunks, inline_array=True)


def open_movie(
    session_or_path: Session | str | os.PathLike,
    /,
    *,
    chunks: Mapping[str, int] | None = None,
) -> xr.DataArray:
    """Open a session's stack lazily as a dask-backed ``DataArray`` (no pixel is read).

    Parameters
    ----------
    session_or_path : Session or path-like
        A :class:`Session`, a session folder, or the main stack file.
    chunks : mapping of str to int, optional
        Dask chunk sizes per dimension (``"time"``, ``"y"``, ``"x"``); dimensions not
        given span the whole axis. Default is ``{"time": 100}``.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "y", "x")``, the file's dtype (uint16 for Micro-Manager).
        ``movie.close()`` closes its files (pixels cannot be read afterwards).
        Coordinates: ``time`` in seconds when the frame interval is known (else frame
        index, ``attrs["time_units"] == "frame"``); ``y`` and ``x`` in micrometres when
        the pixel size is known (``row × pixel size``), else pixel indices.
        ``attrs``: ``source_files``, ``frame_interval_s``, ``pixel_size_um`` (NaN when
        unknown), ``metadata_sources`` and ``acquisition_metadata`` (the Micro-Manager
        summary as JSON text).

    Raises
    ------
    CalimInputError
        A missing, truncated or corrupt file, a stack that is not 3-D, continuation
        files missing or out of order, zero-filled missing frames, unreadable metadata.
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
            stack_files, metadata_file = find_stack_files(p.parent)
            if p not in stack_files and p.resolve() not in [f.resolve() for f in stack_files]:
                stack_files = (p,)
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
        try:
            series = tif.series[0]
        except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on corrupt files
            raise CalimInputError(
                f"{stack_files[0]}: cannot read the image series, file corrupt or truncated ({exc})"
            ) from None
        mm = tif.micromanager_metadata if tif.is_micromanager else None
        mm_summary = (mm or {}).get("Summary", {}) or file_meta.get("Summary", {})
        want = {"time": 100, **(chunks or {})}
        unknown = set(want) - {"time", "y", "x"}
        if unknown:
            raise ValueError(f"chunks has unknown dimension(s) {sorted(unknown)}")
        chunk_time = int(want["time"])
        if series.kind == "mmstack":
            _check_mmstack_files(stack_files, series)
            arr = _series_to_dask(series, chunk_time)
        elif len(stack_files) > 1 and not series.is_multifile:
            parts = [_series_to_dask(series, chunk_time)]
            _check_extents(series, Path(stack_files[0]))
            for f in stack_files[1:]:
                t2 = _open_tiff(Path(f))
                opened.append(t2)
                s2 = t2.series[0]
                _check_extents(s2, Path(f))
                parts.append(_series_to_dask(s2, chunk_time))
            try:
                arr = da.concatenate(parts, axis=0)
            except ValueError as exc:
                raise CalimInputError(
                    f"{stack_files[0]}: continuation files do not match ({exc})") from None
        else:
            _check_extents(series, Path(stack_files[0]))
            arr = _series_to_dask(series, chunk_time)
        arr, _ = _squeeze_to_tyx(arr, series.axes, Path(stack_files[0]))

        declared = mm_summary.get("Frames")
        if isinstance(declared, int) and declared > 1 and declared != arr.shape[0]:
            raise CalimInputError(
                f"{stack_files[0]}: holds {arr.shape[0]} frames but its metadata declares "
                f"{declared}: a continuation file is missing or the acquisition was cut short"
            )

        pixel_um, interval_s, sources = _physical_metadata(tif, mm_summary, file_meta)
        nt, ny, nx = arr.shape
        arr = arr.rechunk(tuple(int(want.get(d, n)) for d, n in zip(("time", "y", "x"), arr.shape,
                                                                   strict=True)))
        coords: dict[str, Any] = {}
        attrs: dict[str, Any] = {
            "source_files": [str(f) for f in stack_files],
            "metadata_file": str(metadata_file) if metadata_file else "",
            "frame_interval_s": interval_s if interval_s is not None else float("nan"),
            "pixel_size_um": pixel_um if pixel_um is not None else float("nan"),
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


def save_figure(fig: Any, path: str | os.PathLike, /, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), **kwargs)
    finally:
        plt.close(fig)
    return commit(tmp, path)


def write_text(path: str | os.PathLike, text: str, /) -> Path:
    """Write a text file (CSV, JSON, ...) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    tmp.write_text(text, encoding="utf-8")
    return commit(tmp, path)


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
