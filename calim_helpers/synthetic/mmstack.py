"""Writing a time series in the Micro-Manager multipage-TIFF (``MMStack``) layout.

:func:`write_mmstack` streams uint16 frames into ``<prefix>_MMStack_Pos0.ome.tif``
(and continuation files ``..._Pos0_1.ome.tif``, ... past a size limit), with the
Micro-Manager header, summary, per-frame metadata, index map and OME-XML, plus the
``<prefix>_MMStack_Pos0_metadata.txt`` beside them, so :mod:`calim_helpers.io` reads
the files exactly as it reads the lab's acquisitions. It writes the demo data and
test inputs; reading lives in :mod:`calim_helpers.io`.

Examples
--------
>>> import numpy as np
>>> import tifffile
>>> from calim_helpers.synthetic.mmstack import write_mmstack
>>> import tempfile
>>> stack = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
>>> with tempfile.TemporaryDirectory() as folder:
...     files = write_mmstack(folder, "230404_5", stack, n_frames=3, frame_shape=(4, 5),
...                           pixel_size_um=0.65, interval_ms=100.0)
...     names = [f.name for f in files]
...     same = bool((tifffile.imread(files[0]) == stack).all())
>>> names, same
(['230404_5_MMStack_Pos0.ome.tif'], True)
"""

from __future__ import annotations

import json
import math
import os
import struct
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_mmstack"]

# Micro-Manager block markers (header and block magic numbers of the MMStack format).
_MM_INDEX_MAP_HEADER = 54773648
_MM_INDEX_MAP_BLOCK = 3453623
_MM_DISPLAY_HEADER = 483765892
_MM_DISPLAY_BLOCK = 347834724
_MM_COMMENTS_HEADER = 99384722
_MM_COMMENTS_BLOCK = 84720485
_MM_SUMMARY_HEADER = 2355492
_FRAME_META_BYTES = 512  # per-frame JSON is padded to this size so file sizes are predictable
_IFD_ENTRIES = 13  # Micro-Manager image IFDs: pixel data start 2 + 13*12 + 4 = 162 bytes after


def _ome_xml(prefix: str, n_frames: int, ny: int, nx: int, file_names: list[str],
             frames_per_file: int, pixel_size_um: float | None,
             interval_ms: float | None) -> str:
    uuids = [uuid.uuid5(uuid.NAMESPACE_URL, f"calim:{prefix}:{name}") for name in file_names]
    phys = ""
    if pixel_size_um:
        phys = (f' PhysicalSizeX="{pixel_size_um}" PhysicalSizeXUnit="µm"'
                f' PhysicalSizeY="{pixel_size_um}" PhysicalSizeYUnit="µm"')
    if interval_ms:
        phys += f' TimeIncrement="{interval_ms / 1000.0}" TimeIncrementUnit="s"'
    tiffdata = []
    for k, (name, u) in enumerate(zip(file_names, uuids, strict=True)):
        first = k * frames_per_file
        count = min(frames_per_file, n_frames - first)
        tiffdata.append(
            f'<TiffData FirstT="{first}" FirstZ="0" FirstC="0" IFD="0" PlaneCount="{count}">'
            f'<UUID FileName="{name}">urn:uuid:{u}</UUID></TiffData>'
        )
    # The Creator keeps the writer's former name (calim_helpers.io.write_mmstack) so that
    # files stay byte-identical to those written before it moved here.
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        f'UUID="urn:uuid:{uuids[0]}" Creator="calim_helpers.io.write_mmstack">'
        f'<Image ID="Image:0" Name="{prefix}"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" '
        f'Type="uint16" SizeX="{nx}" SizeY="{ny}" SizeC="1" SizeZ="1" SizeT="{n_frames}"'
        f'{phys} BigEndian="false"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        + "".join(tiffdata) + "</Pixels></Image></OME>"
    )


def _iter_frames(frames: Iterable[np.ndarray], frame_shape: tuple[int, int]):
    for block in frames:
        block = np.asarray(block)
        if block.ndim == 2:
            block = block[np.newaxis]
        if block.ndim != 3 or block.shape[1:] != tuple(frame_shape):
            raise ValueError(
                f"frames must be (y, x) = {tuple(frame_shape)} or (t, y, x) blocks, "
                f"got {block.shape}")
        if block.dtype != np.uint16:
            raise ValueError(f"frames must be uint16, got {block.dtype}")
        yield from block


def write_mmstack(
    directory: str | os.PathLike,
    prefix: str,
    frames: Iterable[np.ndarray],
    /,
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    pixel_size_um: float | None = None,
    interval_ms: float | None = None,
    max_file_bytes: int = 4_000_000_000,
    summary: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write a time series in the Micro-Manager multipage-TIFF (``MMStack``) layout.

    Streams frame by frame (memory holds one frame), splits into continuation files
    ``<prefix>_MMStack_Pos0_1.ome.tif``, ... past ``max_file_bytes`` like
    Micro-Manager, embeds OME-XML (pixel size, frame interval) in each file's first
    image and writes ``<prefix>_MMStack_Pos0_metadata.txt``. Each file is written under
    a temporary name and renamed when complete.

    Parameters
    ----------
    directory : path-like
        Destination folder (created if needed).
    prefix : str
        Acquisition name, e.g. ``"230404_5"``.
    frames : iterable of numpy.ndarray
        uint16 frames ``(y, x)`` or blocks ``(t, y, x)`` in time order, ``n_frames`` in all.
    n_frames : int
        Number of frames.
    frame_shape : tuple of int
        ``(y, x)`` size of a frame, in pixels.
    pixel_size_um : float, optional
        Pixel size in µm. Default is None (unknown).
    interval_ms : float, optional
        Frame interval in ms. Default is None (unknown).
    max_file_bytes : int, optional
        Largest file size before a continuation file starts. Default is 4 000 000 000.
    summary : mapping, optional
        Extra keys for the Micro-Manager summary metadata. Default is None.

    Returns
    -------
    list of pathlib.Path
        The stack files written, in order.

    Raises
    ------
    ValueError
        Wrong frame shape or dtype, or a frame count different from ``n_frames``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ny, nx = (int(v) for v in frame_shape)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames!r}")
    pix_bytes = ny * nx * 2
    frame_bytes = 162 + pix_bytes + 16 + _FRAME_META_BYTES
    mm_summary: dict[str, Any] = {
        "Prefix": prefix, "Frames": n_frames, "Slices": 1, "Channels": 1, "Positions": 1,
        "Width": nx, "Height": ny, "PixelType": "GRAY16", "BitDepth": 16, "IJType": 1,
        "MicroManagerVersion": "1.4.23 (CALIM demo writer)", "MetadataVersion": 10,
        "TimeFirst": False, "SlicesFirst": True, "ChNames": ["Default"],
        "Interval_ms": float(interval_ms or 0.0), "PixelSize_um": float(pixel_size_um or 0.0),
        "z-step_um": 0.0, "Source": "Micro-Manager", **dict(summary or {}),
    }
    summary_bytes = json.dumps(mm_summary).encode()
    header_bytes = 40 + len(summary_bytes) + 8192  # header, summary, OME-XML headroom
    per_file = max(1, (max_file_bytes - header_bytes - 20 * n_frames) // frame_bytes)
    n_files = math.ceil(n_frames / per_file)
    names = [f"{prefix}_MMStack_Pos0{'_' + str(k) if k else ''}.ome.tif" for k in range(n_files)]
    ome = _ome_xml(prefix, n_frames, ny, nx, names, per_file, pixel_size_um, interval_ms)

    frame_iter = _iter_frames(frames, (ny, nx))
    file_meta: dict[str, Any] = {"Summary": mm_summary}
    written = []
    index = 0
    for k, name in enumerate(names):
        count = min(per_file, n_frames - index)
        final = directory / name
        tmp = directory / (name + ".part")
        index_map = []
        with open(tmp, "wb") as fh:
            fh.write(b"II*\x00" + struct.pack("<I", 0))  # first IFD offset patched below
            fh.write(struct.pack("<IIIIII", _MM_INDEX_MAP_HEADER, 0, _MM_DISPLAY_HEADER, 0,
                                 _MM_COMMENTS_HEADER, 0))
            fh.write(struct.pack("<II", _MM_SUMMARY_HEADER, len(summary_bytes)) + summary_bytes)
            desc = ome.encode() + b"\x00" if k == 0 else b""
            prev_next_pos = 4
            for j in range(count):
                frame = next(frame_iter, None)
                if frame is None:
                    raise ValueError(f"frames yielded {index} frames, n_frames is {n_frames}")
                if fh.tell() % 2:
                    fh.write(b"\x00")
                ifd = fh.tell()
                fh.seek(prev_next_pos)
                fh.write(struct.pack("<I", ifd))
                fh.seek(ifd)
                elapsed = index * float(interval_ms or 0.0)
                fmeta = {"Frame": index, "FrameIndex": index, "SliceIndex": 0,
                         "ChannelIndex": 0, "PositionIndex": 0, "ElapsedTime-ms": elapsed,
                         "Width": nx, "Height": ny, "PixelSizeUm": pixel_size_um or 0.0,
                         "Camera": "CALIM-demo", "Binning": 1, "BitDepth": 16}
                meta = json.dumps(fmeta).encode().ljust(_FRAME_META_BYTES - 1) + b"\x00"
                file_meta[f"FrameKey-{index}-0-0"] = fmeta
                extra = bool(desc) and j == 0
                n_entries = _IFD_ENTRIES + int(extra)
                data_at = ifd + 2 + 12 * n_entries + 4
                res_at = data_at + pix_bytes
                meta_at = res_at + 16
                desc_at = meta_at + len(meta)
                entries = [
                    (256, 4, 1, nx), (257, 4, 1, ny), (258, 3, 1, 16), (259, 3, 1, 1),
                    (262, 3, 1, 1), (273, 4, 1, data_at), (277, 3, 1, 1), (278, 4, 1, ny),
                    (279, 4, 1, pix_bytes), (282, 5, 1, res_at), (283, 5, 1, res_at + 8),
                    (296, 3, 1, 3), (51123, 2, len(meta), meta_at),
                ]
                if extra:
                    entries.insert(5, (270, 2, len(desc), desc_at))
                fh.write(struct.pack("<H", n_entries))
                for tag, typ, cnt, val in entries:
                    if typ == 3:
                        fh.write(struct.pack("<HHIHH", tag, typ, cnt, val, 0))
                    else:
                        fh.write(struct.pack("<HHII", tag, typ, cnt, val))
                prev_next_pos = fh.tell()
                fh.write(struct.pack("<I", 0))
                fh.write(np.ascontiguousarray(frame, dtype="<u2").tobytes())
                um_per_cm = 1e4 / pixel_size_um if pixel_size_um else 1.0
                res = int(round(um_per_cm * 1000))
                fh.write(struct.pack("<IIII", res, 1000, res, 1000))
                fh.write(meta)
                if extra:
                    fh.write(desc)
                index_map.append((0, 0, index, 0, ifd))
                index += 1
            if fh.tell() % 2:
                fh.write(b"\x00")
            imap_at = fh.tell()
            fh.write(struct.pack("<II", _MM_INDEX_MAP_BLOCK, len(index_map)))
            fh.write(np.asarray(index_map, dtype="<u4").tobytes())
            display = json.dumps([{"Name": "Default", "Min": 0, "Max": 65535}]).encode()
            display_at = fh.tell()
            fh.write(struct.pack("<II", _MM_DISPLAY_BLOCK, len(display)) + display)
            comments = json.dumps({"Summary": ""}).encode()
            comments_at = fh.tell()
            fh.write(struct.pack("<II", _MM_COMMENTS_BLOCK, len(comments)) + comments)
            fh.seek(12)
            fh.write(struct.pack("<I", imap_at))
            fh.seek(20)
            fh.write(struct.pack("<I", display_at))
            fh.seek(28)
            fh.write(struct.pack("<I", comments_at))
        os.replace(tmp, final)
        written.append(final)
    if next(frame_iter, None) is not None:
        raise ValueError(f"frames yielded more than n_frames={n_frames} frames")
    meta_path = directory / f"{prefix}_MMStack_Pos0_metadata.txt"
    tmp = meta_path.with_name(meta_path.name + ".part")
    tmp.write_text(json.dumps(file_meta, indent=1), encoding="utf-8")
    os.replace(tmp, meta_path)
    return written
