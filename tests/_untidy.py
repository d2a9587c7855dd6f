"""Make a demo experiment untidy the way labs' folders are (shared by the tests).

:func:`make_untidy` rewrites the 4 sessions of a small demo experiment in place:

- ``04-04-23/230404_5``: its ROI set gains a measurement line (``measurement-line``)
  and a polygon half outside the frame (``half-outside``); a Fiji MAX projection is
  saved beside the stack;
- ``04-04-23/230404_9``: Micro-Manager 2.0 file names (``_MMStack_Default``);
- ``05-04-23/230405_2``: one plain ImageJ TIFF with its own frame interval (100 ms)
  and pixel size (0.65 µm) instead of the Micro-Manager files;
- the fourth session: a 20-frame plain TIFF, too short for ``downsample.time = 10``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import roifile
import tifffile

from calim_helpers import io


def read_stack(source: Path) -> np.ndarray:
    """All frames of a session folder or stack file, the file closed again."""
    movie = io.open_movie(source)
    try:
        return movie.values
    finally:
        movie.close()


def replace_with_tiff(folder: Path, stack: np.ndarray, name: str, *,
                      pixel_um: float | None = None, **imagej_meta) -> Path:
    """Remove a session's Micro-Manager files and write ``stack`` as one plain TIFF."""
    for f in list(folder.glob("*MMStack*")):
        f.unlink()
    path = folder / name
    tifffile.imwrite(path, stack, imagej=True,
                     resolution=None if pixel_um is None else (1 / pixel_um, 1 / pixel_um),
                     metadata={"axes": "TYX", **imagej_meta})
    return path


def make_untidy(exp: Path) -> dict[str, str]:
    """Rewrite the demo experiment ``exp`` as described above; return what was done.

    Returns a dict with ``short`` (the short session's folder name) and ``roi_zip``
    (the extended ROI set of 230404_5, as a string path).
    """
    s5, s9 = exp / "04-04-23" / "230404_5", exp / "04-04-23" / "230404_9"
    s2 = exp / "05-04-23" / "230405_2"
    (short,) = [p for p in (exp / "05-04-23").iterdir() if p.name != "230405_2"]

    (zip_path,) = list(s5.rglob("*.zip"))
    rois = roifile.roiread(zip_path)
    line = roifile.ImagejRoi.frompoints(np.array([[5.0, 5.0], [30.0, 20.0]]),
                                        name="measurement-line")
    line.roitype = roifile.ROI_TYPE.LINE
    line.x1, line.y1, line.x2, line.y2 = 5.0, 5.0, 30.0, 20.0
    stack5 = read_stack(s5)
    ny, nx = stack5.shape[1:]
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    edge = roifile.ImagejRoi.frompoints(
        np.stack([nx + 6 * np.cos(t), ny / 2 + 6 * np.sin(t)], 1), name="half-outside")
    zip_path.unlink()
    roifile.roiwrite(zip_path, [*rois, line, edge])
    tifffile.imwrite(s5 / "MAX_230404_5_MMStack_Pos0.ome.tif",
                     stack5.max(0), imagej=True)

    for f in sorted(s9.glob("*MMStack_Pos0*")):
        f.rename(f.with_name(f.name.replace("_MMStack_Pos0", "_MMStack_Default")))

    replace_with_tiff(s2, read_stack(s2), "230405_2.tif", pixel_um=0.65,
                      unit="micron", finterval=100, tunit="msec")
    replace_with_tiff(short, read_stack(short)[:20], f"{short.name}.tif",
                      finterval=0.1, tunit="sec")
    return {"short": short.name, "roi_zip": str(zip_path)}
