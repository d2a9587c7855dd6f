"""Pack ImageJ's per-ROI mask TIFFs into one compact ``masks.npz`` fixture.

Usage::

    .venv/bin/python tools/imagej/pack_imagej_output.py <imagej_out_dir> <fixture_dir>

Reads ``mask_<iii>.tif`` (Edit > Selection > Create Mask, 255 inside),
``rois.tsv``, ``multimeasure.csv``, ``zoo_imagej.zip`` and
``imagej_version.txt`` written by ``zoo_masks.ijm``; writes ``masks.npz``
(``masks``: bool (n_rois, ny, nx); ``names``: str (n_rois,); ``imagej_version``)
and copies the other files into the fixture folder.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import tifffile


def main(src: Path, dst: Path) -> None:
    """Pack `src` (ImageJ output) into `dst` (fixture folder)."""
    files = sorted(src.glob("mask_*.tif"))
    masks = np.stack([tifffile.imread(f) > 0 for f in files])
    lines = (src / "rois.tsv").read_text().splitlines()[1:]
    names = np.array([line.split("\t")[1] for line in lines])
    if len(names) != len(masks):
        raise SystemExit(f"{len(masks)} masks but {len(names)} ROIs in rois.tsv")
    version = (src / "imagej_version.txt").read_text().splitlines()[0]
    np.savez_compressed(dst / "masks.npz", masks=masks, names=names, imagej_version=version)
    for name in ("multimeasure.csv", "rois.tsv", "zoo_imagej.zip", "imagej_version.txt"):
        shutil.copyfile(src / name, dst / name)
    print(f"packed {len(masks)} masks {masks.shape[1:]} from {version} into {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
