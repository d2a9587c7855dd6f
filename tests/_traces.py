"""Small synthetic trace Datasets shared by the tests of correction and aggregate."""

from __future__ import annotations

import numpy as np
import xarray as xr

ARPLS = {"lam": 10.0, "cutoff_s": None, "tol": 1e-5, "max_iter": 100}


def traces(n_roi=3, n_time=80, seed=0, frame_s=None):
    """ROI traces with a bleach, a transient at frames 30-32, and a background."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_time)
    bg = 200 + 20 * np.exp(-t / 40) + rng.normal(0, 1, n_time)
    raw = 500 + 100 * np.exp(-t / 50)[None, :] + rng.normal(0, 3, (n_roi, n_time))
    raw[:, 30:33] += 150
    ds = xr.Dataset({"raw": (("roi", "time"), raw.astype(np.float32)),
                     "background": ("time", bg.astype(np.float32))},
                    coords={"roi": np.arange(1, n_roi + 1),
                            "roi_name": ("roi", [f"c{k}" for k in range(n_roi)]),
                            "time": t * (frame_s or 1.0)})
    ds.attrs = {"experiment": "E", "date": "04-04-23", "session": "230404_5"}
    if frame_s:
        ds.attrs["frame_interval_s_downsampled"] = frame_s
    return ds
