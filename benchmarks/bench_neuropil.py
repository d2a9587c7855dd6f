"""Neuropil correction on "hard" sessions: the final ΔF/F against the truth, and its cost.

Usage::

    .venv/bin/python benchmarks/bench_neuropil.py                 # held-out seeds 101-110
    .venv/bin/python benchmarks/bench_neuropil.py --quick         # 2 seeds, smaller frames
    .venv/bin/python benchmarks/bench_neuropil.py --cache /tmp/np_cache --strengths 4 8 0.5

Sessions come from ``calim_helpers.demo.simulate_session(..., difficulty="hard")``
(:mod:`calim_helpers.synthetic.hard`: local neuropil that follows the cells around it,
out-of-focus cells and neurites, dim and rarely firing cells, badly drawn expert ROIs),
1500 frames of 192 x 256 pixels (0.65 µm, 0.1 s; ~42 neurons, ~36 expert ROIs), with
``neuropil_strength`` 4 (``strong``) and 0.5 (``weak``) by default. Methods were
tuned on seeds 1-10; the default seeds 101-110 are held out.

Each session is rendered once and block-mean downsampled (2 x 2 x 10) -- with
``--cache DIR`` the downsampled movie and the truth are kept in ``DIR`` and reused --
and its traces are extracted from the downsampled movie with the session's pixel
size (``extract_traces(..., native_shape=...)``, as the pipeline's ROI step) with
``neuropil_method`` ``"none"``, ``"annulus"`` and ``"fitted"`` (other neuropil
parameters at their defaults). The downstream steps are those of
:func:`calim_helpers.correction.correct_traces` (arPLS λ = 10, tol 1e-5, 100
iterations, ``dff`` = corrected / arPLS baseline of ``raw``), run on the ``signal``
of :func:`calim_helpers.traces.background_subtracted`; for ``"none"`` the script
checks that this is exactly ``correct_traces``' ``norm``. The score of a ROI is the
Pearson r between its ``norm`` and the truth's ``roi_dff_clean`` (the ROI's
neuropil-free true ΔF/F), block-mean over the same 10 frames. Printed per regime: the
median over all ROIs of all sessions, the mean over sessions of the session median,
the 10th percentile and the worst ROI, and the mean over sessions of each session's
worst ROI; then per session.

Then the cost, on one session's downsampled in-memory movie: ``extract_traces`` +
``background_subtracted`` for each method, alternating, 5 times each, medians (the
machine is shared: noisy).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from calim_helpers import baseline as bl
from calim_helpers import demo
from calim_helpers import normalize as nm
from calim_helpers.correction import correct_traces
from calim_helpers.downsample import downsample
from calim_helpers.errors import CalimWarning
from calim_helpers.synthetic.expert_rois import imagej_rois
from calim_helpers.traces import background_subtracted, extract_traces

F = {"time": 10, "y": 2, "x": 2}
ARPLS = {"lam": 10.0, "tol": 1e-5, "max_iter": 100}
METHODS = ("none", "annulus", "fitted")
REGIME_NAMES = {4.0: "strong", 8.0: "very strong", 1.0: "default", 0.5: "weak"}


def make_session(seed: int, strength: float, *, n_frames: int, shape: tuple[int, int],
                 cache: Path | None = None) -> dict:
    """Render (or load from ``cache``) a hard session: downsampled movie, ROIs, truth."""
    path = None if cache is None else \
        cache / f"hard_s{strength:g}_seed{seed}_{n_frames}x{shape[0]}x{shape[1]}.npz"
    if path is not None and path.exists():
        d = dict(np.load(path))
    else:
        s = demo.simulate_session(n_frames, shape, None, difficulty="hard",
                                  neuropil_strength=strength, seed=seed)
        parts = [downsample(xr.DataArray(b, dims=("time", "y", "x")), F).values
                 for b in demo.iter_frames(s, chunk_frames=100)]
        t = demo.session_truth(s)
        nt = (n_frames // F["time"]) * F["time"]
        clean = t["roi_dff_clean"].astype(np.float64)[:, :nt]
        lengths = [len(p) for p in s.roi_polygons]
        d = {"movie_ds": np.concatenate(parts).astype(np.float32),
             "pixel_size_um": np.float64(s.pixel_size_um),
             "roi_xy": np.concatenate(s.roi_polygons),
             "roi_off": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
             "roi_names": np.asarray(s.roi_names, dtype=str),
             "clean": clean.reshape(clean.shape[0], -1, F["time"]).mean(axis=2),
             "quality": t["roi_quality"]}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **d)
    off, xy = d["roi_off"], d["roi_xy"]
    polygons = [xy[off[k]:off[k + 1]] for k in range(off.size - 1)]
    size = float(d["pixel_size_um"])
    return {"movie_ds": xr.DataArray(d["movie_ds"], dims=("time", "y", "x"),
                                     attrs={"pixel_size_um": size}),
            "rois": imagej_rois(polygons, [str(v) for v in d["roi_names"]]),
            "truth": d["clean"], "quality": d["quality"], "native_shape": shape,
            "pixel_size_um": size}


def traces(sess: dict, method: str) -> xr.Dataset:
    """One session's traces from its downsampled movie, as the pipeline's ROI step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        return extract_traces(sess["movie_ds"], sess["rois"], factors=F,
                              native_shape=sess["native_shape"], neuropil_method=method,
                              pixel_size_um=sess["pixel_size_um"]).compute()


def downstream(tr: xr.Dataset) -> np.ndarray:
    """``correct_traces``' ``norm`` (dff) computed from ``background_subtracted(tr)``."""
    raw = tr["raw"].transpose("roi", "time").values.astype(np.float64)
    signal = background_subtracted(tr).values
    base, _ = bl.arpls(signal, **ARPLS)
    base_raw, _ = bl.arpls(raw, **ARPLS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)
        norm, _ = nm.normalize(signal - base, base_raw, method="dff", trim_start=0)
    return np.asarray(norm, dtype=np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of two (roi, time) arrays."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def scores(sess: dict, method: str) -> np.ndarray:
    """Per-ROI Pearson r of the final ΔF/F with the truth."""
    tr = traces(sess, method)
    norm = downstream(tr)
    if method == "none":  # the replication of correct_traces is exact
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)
            ref = correct_traces(tr, cutoff_s=None, normalize="dff", trim_start=0, **ARPLS)
        assert np.array_equal(ref["norm"].values, norm, equal_nan=True)
    return pearson(norm, sess["truth"])


def accuracy(strengths: list[float], seeds: list[int], *, n_frames: int,
             shape: tuple[int, int], cache: Path | None) -> dict:
    print(f"Pearson r of the final dff with roi_dff_clean; hard sessions {n_frames} x "
          f"{shape[0]} x {shape[1]}, seeds {seeds}", flush=True)
    results: dict = {}
    for strength in strengths:
        per: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
        for seed in seeds:
            sess = make_session(seed, strength, n_frames=n_frames, shape=shape, cache=cache)
            for m in METHODS:
                per[m].append(scores(sess, m))
        results[strength] = per
    _summary(results)
    print("\nper session: median r (worst ROI)")
    for strength, per in results.items():
        for i, seed in enumerate(seeds):
            print(f"  {_name(strength):>11} seed {seed:4d} ({per['none'][i].size:2d} ROIs): "
                  + "  ".join(f"{m} {np.median(per[m][i]):.3f} ({per[m][i].min():+.3f})"
                              for m in METHODS))
    return results


def _name(strength: float) -> str:
    return f"{REGIME_NAMES.get(strength, 'strength')} {strength:g}"


def _summary(results: dict) -> None:
    head = f"{'regime':>16} {'statistic':>26} " + " ".join(f"{m:>8}" for m in METHODS) \
        + f" {'ann-none':>9} {'fit-none':>9}"
    print(head)
    for strength, per in results.items():
        pooled = {m: np.concatenate(v) for m, v in per.items()}
        rows = {
            "median (all ROIs)": {m: np.median(v) for m, v in pooled.items()},
            "mean of session medians": {m: np.mean([np.median(x) for x in v])
                                        for m, v in per.items()},
            "10th percentile": {m: np.percentile(v, 10) for m, v in pooled.items()},
            "mean of session worst": {m: np.mean([x.min() for x in v])
                                      for m, v in per.items()},
            "worst ROI": {m: v.min() for m, v in pooled.items()},
        }
        for label, vals in rows.items():
            print(f"{_name(strength):>16} {label:>26} "
                  + " ".join(f"{vals[m]:8.4f}" for m in METHODS)
                  + f" {vals['annulus'] - vals['none']:+9.4f}"
                    f" {vals['fitted'] - vals['none']:+9.4f}")
        n_sess = len(per["none"])
        wins = [sum(np.median(per[m][i]) > np.median(per["none"][i]) for i in range(n_sess))
                for m in ("annulus", "fitted")]
        print(f"{'':>16} {'sessions beating none':>26} {'':>8} {wins[0]:>8d} {wins[1]:>8d}"
              f"   (of {n_sess}; {pooled['none'].size} ROIs)", flush=True)


def cost(sess: dict, repeats: int = 5) -> None:
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(repeats):
        for m in METHODS:
            t0 = time.perf_counter()
            background_subtracted(traces(sess, m))
            times[m].append(time.perf_counter() - t0)
    print(f"\ncost (extract_traces + background_subtracted on the downsampled "
          f"{sess['movie_ds'].sizes['time']} x {sess['movie_ds'].sizes['y']} x "
          f"{sess['movie_ds'].sizes['x']} movie, {len(sess['rois'])} ROIs; {repeats} runs "
          f"each, alternating, medians): "
          + ", ".join(f"{m} {np.median(v) * 1e3:.1f} ms" for m, v in times.items()),
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(101, 111)),
                    help="held-out seeds (default 101-110; tuning used 1-10)")
    ap.add_argument("--strengths", type=float, nargs="+", default=[4.0, 0.5],
                    help="neuropil_strength of each regime (default 4 = strong, 0.5 = weak)")
    ap.add_argument("--frames", type=int, default=1500, help="native frames (default 1500)")
    ap.add_argument("--shape", type=int, nargs=2, default=(192, 256), metavar=("Y", "X"),
                    help="frame size in pixels (default 192 256)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder to keep and reuse the rendered, downsampled sessions")
    ap.add_argument("--quick", action="store_true",
                    help="2 seeds, 600 frames of 128 x 160, 3 timing repeats")
    args = ap.parse_args()
    seeds, frames, shape = args.seeds, args.frames, tuple(args.shape)
    if args.quick:
        seeds, frames, shape = seeds[:2], 600, (128, 160)
    accuracy(args.strengths, seeds, n_frames=frames, shape=shape, cache=args.cache)
    sess = make_session(seeds[0], args.strengths[0], n_frames=frames, shape=shape,
                        cache=args.cache)
    cost(sess, repeats=3 if args.quick else 5)


if __name__ == "__main__":
    main()
