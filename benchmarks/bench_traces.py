"""ROI + background traces of a full-size session: one sparse pass vs a per-ROI loop.

Usage::

    .venv/bin/python benchmarks/bench_traces.py [SESSION_DIR ROI_ZIP]

Without arguments, writes a 1500 x 512 x 688 uint16 Micro-Manager stack (1.06 GB) and
60 polygon ROIs to a temporary folder first. Each measurement runs in a fresh
subprocess so that its peak resident memory (``VmHWM``) is its own; the movie is opened
with ``open_movie``'s default 100-frame chunks unless said otherwise:

- ``sparse``: ``calim_helpers.traces.extract_traces(...).compute()`` -- the movie is
  read, block-mean downsampled (2 x 2 x 10) and multiplied by the sparse
  (61 x 88064) weight matrix chunk by chunk;
- ``naive``: the downsampled movie computed into memory, then, per ROI, the
  coverage-weighted mean over the whole frame ``(movie_ds * w).sum() / w.sum()``
  (the original notebook's pattern), and the background as a fancy-indexed mean.
  This child also times both products alone on the same in-memory downsampled array;
- ``sparse, 20-frame chunks``: as ``sparse`` with ``open_movie(chunks={"time": 20})``
  (peak memory is set by the chunks that downsampling holds in flight).

Both children check they produce the same traces. The lines printed are measured in
this one run, side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _synthetic import random_rois, write_noise_session

CHILD = r"""
import json, sys, time, warnings

def hwm_mb():  # peak resident set of this address space (VmHWM, fresh after exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

what, session, roi_zip, out, time_chunk = sys.argv[1:6]
import dask.array, numpy as np, scipy.sparse, tifffile, xarray, zarr  # not measured
from calim_helpers import io, rois, traces
from calim_helpers.downsample import downsample
base = hwm_mb()
warnings.simplefilter("ignore")
factors = {"time": 10, "y": 2, "x": 2}
t0 = time.perf_counter()
movie = io.open_movie(session, chunks={"time": int(time_chunk)})
roi_list = rois.read_rois(roi_zip)
extra = {}
if what == "sparse":
    ds = traces.extract_traces(movie, roi_list, factors=factors, seed=0).compute()
    raw, bg = ds["raw"].values, ds["background"].values
else:
    movie_ds = downsample(movie, factors).values  # (150, 256, 344) float32 in memory
    shape = (movie.sizes["y"], movie.sizes["x"])
    covs = [rois.coverage_weights(rois.rasterize(r, shape), factors=factors)
            for r in roi_list]
    t1 = time.perf_counter()
    raw = np.empty((len(covs), movie_ds.shape[0]), np.float32)
    for k, w in enumerate(covs):
        raw[k] = (movie_ds * w).sum(axis=(1, 2), dtype=np.float64) / w.sum(dtype=np.float64)
    weights = traces.roi_weights(roi_list, shape, factors=factors)
    px = traces.background_pixels(weights, movie_ds.shape[1:], fraction=0.10, seed=0)
    bg = movie_ds.reshape(movie_ds.shape[0], -1)[:, px].mean(axis=1, dtype=np.float64)
    extra["naive_loop_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    sparse_raw = traces._weighted_sums(movie_ds, weights)
    extra["sparse_product_s"] = time.perf_counter() - t2
    extra["loop_vs_product_max_abs_diff"] = float(np.abs(sparse_raw.T - raw).max())
took = time.perf_counter() - t0
np.savez(out, raw=raw, background=bg)
print(json.dumps({"seconds": took, "peak_rss_mb": hwm_mb(), "import_rss_mb": base, **extra}))
"""


def _make_session(folder: Path) -> tuple[Path, Path]:
    from calim_helpers import rois

    session = write_noise_session(folder)
    roi_zip = session / "ROIs" / "ROIs.zip"
    roi_zip.parent.mkdir()
    rois.write_rois(roi_zip, random_rois(60, shape=(512, 688)))
    return session, roi_zip


def _measure(what: str, session: Path, roi_zip: Path, out: Path, time_chunk: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, str(session), str(roi_zip),
                           str(out), str(time_chunk)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print one line per measurement and the ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if len(sys.argv) > 2:
            session, roi_zip = Path(sys.argv[1]), Path(sys.argv[2])
        else:
            t0 = time.perf_counter()
            session, roi_zip = _make_session(tmp)
            print(f"wrote a 1500 x 512 x 688 stack and 60 ROIs in "
                  f"{time.perf_counter() - t0:.1f} s")
        runs = {"sparse": ("sparse", 100), "naive": ("naive", 100),
                "sparse, 20-frame chunks": ("sparse", 20)}
        res = {name: _measure(w, session, roi_zip, tmp / f"{w}{c}.npz", c)
               for name, (w, c) in runs.items()}
        for w, r in res.items():
            print(f"{w:24s} {r['seconds']:6.2f} s   peak RSS {r['peak_rss_mb']:5.0f} MB "
                  f"(after imports {r['import_rss_mb']:.0f} MB)")
        sparse, naive = res["sparse"], res["naive"]
        print(f"ratio naive/sparse: time {naive['seconds'] / sparse['seconds']:.2f}x, "
              f"peak RSS {naive['peak_rss_mb'] / sparse['peak_rss_mb']:.2f}x "
              f"(added over imports: {naive['peak_rss_mb'] - naive['import_rss_mb']:.0f} MB "
              f"vs {sparse['peak_rss_mb'] - sparse['import_rss_mb']:.0f} MB)")
        print(f"on the same in-memory downsampled movie: per-ROI loop + background "
              f"{naive['naive_loop_s']:.3f} s, sparse product {naive['sparse_product_s']:.3f} s "
              f"({naive['naive_loop_s'] / naive['sparse_product_s']:.1f}x)")
        a, b = np.load(tmp / "sparse100.npz"), np.load(tmp / "naive100.npz")
        diff_raw = float(np.abs(a["raw"] - b["raw"]).max())
        diff_bg = float(np.abs(a["background"] - b["background"]).max())
        print(f"agreement: max |sparse - naive| raw {diff_raw:.2e}, background {diff_bg:.2e} "
              f"(counts); in-memory product vs loop {naive['loop_vs_product_max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
