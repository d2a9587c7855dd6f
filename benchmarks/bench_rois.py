"""Rasterizing Fiji ROIs on a lab-sized frame: calim_helpers.rois vs a whole-frame test.

Usage::

    .venv/bin/python benchmarks/bench_rois.py

Times ``label_image`` for 50 polygon ROIs on a 512 x 688 frame against the obvious
alternative (matplotlib's ``Path.contains_points`` on every pixel centre of the frame,
one ROI at a time), checks they agree away from exact ties, and prints both and the ratio
measured in this one run.
"""

from __future__ import annotations

import time

import numpy as np
from _synthetic import random_rois
from matplotlib.path import Path as MplPath

from calim_helpers.rois import label_image


def _whole_frame(rois, shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    lab = np.zeros(shape, np.int32)
    for k, roi in enumerate(rois, 1):
        inside = MplPath(roi.coordinates()).contains_points(centres).reshape(shape)
        lab[inside] = k
    return lab


def _best(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    """Run the benchmark and print the timings and their ratio."""
    shape = (512, 688)
    rois = random_rois(shape=shape)
    t_calim, lab = _best(lambda: label_image(rois, shape))
    t_frame, ref = _best(lambda: _whole_frame(rois, shape), repeat=2)
    agree = np.mean(lab == ref)
    print(f"50 ROIs on {shape[0]} x {shape[1]}: calim label_image {t_calim * 1e3:.1f} ms, "
          f"whole-frame contains_points {t_frame * 1e3:.1f} ms, "
          f"ratio {t_frame / t_calim:.1f}x; pixels agreeing {agree:.5f}")


if __name__ == "__main__":
    main()
