"""Event detection against the truth of held-out "hard" sessions, on the pipeline's traces.

Usage::

    .venv/bin/python benchmarks/bench_events.py                 # fresh held-out seeds 801-810
    .venv/bin/python benchmarks/bench_events.py --seeds 101-110 # held out, earlier reports
    .venv/bin/python benchmarks/bench_events.py --seeds 1-10    # tuning seeds (1-60)
    .venv/bin/python benchmarks/bench_events.py --work DIR -p events.threshold 3.5
    .venv/bin/python benchmarks/bench_events.py --neuropil annulus   # one neuropil method

Each seed set is scored on the pipeline run with ``neuropil.method fitted`` (the
recommended correction) and ``none`` (the lab's method), unless ``--neuropil`` says
otherwise; ``-p KEY VALUE`` with a key outside ``events.`` is passed to the run.

What it does: writes the hard sessions of the seeds (``benchmarks/make_hard_sessions.py``'s
defaults: 600 native frames of 96 x 128 pixels at 0.1 s, 0.65 µm) into ``--work``
(default ``$TMPDIR/calim_bench_events``), runs the whole pipeline on them once
(``calim run EXP --out WORK/out[_SETTING] -q -p figures.per_roi false -p outputs.nwb
false [-p neuropil.method METHOD]``; the run's own resume skips it the next time),
then detects events with :func:`calim_helpers.events.detect_events_dataset` on each
session's ``norm`` (the pipeline's ΔF/F, 1 s frames; the store's ``neuropil`` ring
and raw traces go along in the dataset) with the parameters of
``calim_helpers/data/default.yaml`` (``-p events.KEY VALUE`` overrides one), and
scores them. It also scores the detector alone on *oracle* traces: each ROI's
noise-free, neuropil-free ΔF/F (``roi_dff_clean``, binned like the pipeline) plus
Gaussian noise of the ROI's true sigma on that time base.

Scoring definition (one ROI = the transients of its own neuron, ``truth["roi_neuron"]``)
---------------------------------------------------------------------------------------
- Time base: the pipeline's, native frames binned by ``downsample.time`` = 10 (1 s).
- True transient: the neuron's spikes grouped while each is less than one binned frame
  (``min_gap_s`` = 1 s) after the previous one (:func:`~calim_helpers.synthetic.truth.
  true_transients` with ``time_bin=10, min_gap_s=1.0``): at 1 s frames closer spikes
  cannot be told apart. Its peak frame is where the binned noise-free ΔF/F is largest.
- Its size in the ROI: the neuron's binned amplitude (peak minus the frame before the
  onset) times the neuron's share of the ROI's soma light (the least-squares weight of
  ``dff[neuron]`` in ``roi_dff_clean``, exact for the simulator's linear model), over
  the ROI's noise on that time base, ``roi_noise_dff / sqrt(10)`` (shot and read noise
  of independent frames): ``snr``. A transient counts when ``snr >= 3``.
- Matching: per ROI, one-to-one, greedy by distance, a detected peak within
  ``--tolerance`` frames (default 1 = 1 s) of a counted true peak is a hit. Detections
  left over are then matched the same way to the *uncounted* (``snr < 3``) true
  transients; those are neither hits nor false positives. Every other detection is a
  false positive, every unmatched counted transient a miss.
- Precision = hits / (hits + false positives), recall = hits / counted transients, F1.
- Smallest third: the counted transients whose neuron's own binned ΔF/F amplitude is in
  the lowest third of all counted transients of the seeds scored; their recall.

Prints one block per trace kind (pipeline, oracle): counts, precision, recall, F1,
recall by SNR band and for the smallest third (with its ΔF/F range), and how many false
positives coincide with a transient of another cell seen through the ROI (a neighbour's
soma, a neurite or out-of-focus cell, i.e. the trace, not the detector).

Two further lines explain the figures without changing them:

- *Precision with other cells' light as neither*: the false positives that coincide
  with another cell's transient are counted as neither hits nor false positives. It is
  printed beside the target's precision, never instead of it: another cell's light in
  the ROI is light of the ROI, but not an event of the ROI's neuron, which the target
  scores, so those detections stay false positives there; the second figure says what
  a detector that cannot see outside the trace can reach at best.
- *Where the false positives come from* (pipeline traces): each false positive is given
  to the component of the ROI's noise-free light (truth of the simulator, on the binned
  time base, in units of the ROI's soma resting light) that rises most, by at least 2
  noise sigmas, within 2 frames before to 1 frame after it: ``neuropil`` (the neuropil
  inside the ROI before any correction; it follows the cells around, so it also rises in
  network bursts; oracle traces have none), ``contaminant`` (out-of-focus cells and
  neurites), ``other soma`` (a neighbour's soma inside the ROI); else ``own`` (an own
  transient, misplaced) or ``noise``. And the *gain*: per ROI, the least-squares slope
  of the trace on the ROI's own-neuron ΔF/F (median and 10-90 %): the fraction of a true
  ΔF/F the pipeline's ``dff`` shows, against which ``min_amplitude`` (in the trace's
  units) acts.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from calim_helpers import demo
from calim_helpers.errors import CalimWarning
from calim_helpers.events import detect_events_dataset
from calim_helpers.io import open_store
from calim_helpers.synthetic.truth import match_events, true_transients

TIME_BIN = 10  # the pipeline's downsample.time
MIN_SNR = 3.0
N_FRAMES = 600
SHAPE = (96, 128)
EXTRA_VARIABLES = ("neuropil", "baseline_raw", "raw", "background")
RUN_PARAMS = ("-p", "figures.per_roi", "false", "-p", "outputs.nwb", "false")


def _seeds(values: list[str]) -> list[int]:
    out: list[int] = []
    for value in values:
        lo, _, hi = value.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def default_event_params() -> dict:
    """The ``events`` section of the packaged default parameters."""
    path = Path(demo.__file__).parent / "data" / "default.yaml"
    return dict(yaml.safe_load(path.read_text(encoding="utf-8"))["events"])


def roi_truth(truth, *, time_bin: int = TIME_BIN, min_gap_s: float = 1.0) -> list[dict]:
    """True transients of each ROI's own neuron on the binned time base, with ROI SNR."""
    dff = np.asarray(truth["dff"], dtype=np.float64)
    n, t_native = dff.shape
    nb = t_native // time_bin
    tr = true_transients(dff, truth["spike_times_s"], truth["spike_neuron"],
                         frame_interval_s=float(truth["frame_interval_s"]),
                         min_gap_s=min_gap_s, time_bin=time_bin)
    clean = np.asarray(truth["roi_dff_clean"], dtype=np.float64)
    out = []
    for k, i in enumerate(np.asarray(truth["roi_neuron"])):
        coef, *_ = np.linalg.lstsq(dff.T, clean[k], rcond=None)
        share = float(coef[i])
        own = tr["neuron"] == i
        noise = float(truth["roi_noise_dff"][k]) / math.sqrt(time_bin)
        amp = tr["amplitude"][own]
        # the other cells' light in the ROI: its clean trace minus the own neuron's part
        other = clean[k] - share * dff[i]
        other = other[: nb * time_bin].reshape(nb, time_bin).mean(axis=1)
        out.append({
            "peak_frame": tr["peak_frame"][own], "amplitude": amp,
            "snr": share * amp / noise, "noise": noise, "share": share,
            "other_binned": other,
            "own_binned": share * dff[i, : nb * time_bin].reshape(nb, time_bin).mean(axis=1),
        })
    return out


def light_components(truth, *, time_bin: int = TIME_BIN) -> dict[str, np.ndarray]:
    """Neuropil and contaminant light inside each ROI, binned, over its soma resting light.

    From the simulator's truth (hard sessions; empty without its fields): the ROI mean of
    the neuropil image times its local ΔF/F (``neuropil_grid_dff`` on the
    ``neuropil_weights_*`` grid) and of each contaminant's footprint times its brightness
    and ΔF/F, block-averaged like the pipeline, each ``(roi, time)`` in units of the ROI's
    soma resting light (so in the ROI's ΔF/F units, like ``other_binned``).
    """
    need = ("roi_masks", "neuropil", "neuropil_weights_y", "neuropil_weights_x",
            "neuropil_grid_dff", "contaminant_footprints", "contaminant_brightness",
            "contaminant_dff", "roi_soma_f", "roi_dff_clean")
    if any(k not in truth for k in need):
        return {}
    masks = np.asarray(truth["roi_masks"], dtype=bool)
    clean = np.asarray(truth["roi_dff_clean"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rest = np.nanmedian(np.asarray(truth["roi_soma_f"], dtype=np.float64) / (1 + clean),
                            axis=1)
    n_pix = masks.reshape(masks.shape[0], -1).sum(axis=1).clip(min=1)
    grid = np.asarray(truth["neuropil_grid_dff"], dtype=np.float64)
    wy, wx = truth["neuropil_weights_y"], truth["neuropil_weights_x"]
    image = np.asarray(truth["neuropil"], dtype=np.float64)
    cfp = np.asarray(truth["contaminant_footprints"], dtype=np.float64)
    cdff = np.asarray(truth["contaminant_dff"], dtype=np.float64)
    cb = np.asarray(truth["contaminant_brightness"], dtype=np.float64)
    nb = grid.shape[-1] // time_bin

    def binned(a):
        return a[..., : nb * time_bin].reshape(*a.shape[:-1], nb, time_bin).mean(axis=-1)

    neuropil, contaminant = [], []
    for k, m in enumerate(masks):
        g = wy.T @ (image * m) @ wx / n_pix[k]  # the ROI's share of each grid node
        neuropil.append(binned(np.einsum("ab,abt->t", g, grid)) / rest[k])
        w = cfp[:, m].sum(axis=1) / n_pix[k] * cb
        contaminant.append(binned(w @ cdff) / rest[k])
    return {"neuropil": np.array(neuropil), "contaminant": np.array(contaminant)}


def fp_source(frame: int, rt: dict, parts: dict[str, np.ndarray]) -> str:
    """The light component that rises most (>= 2 noise sigmas) around a false positive."""
    lo, hi = max(frame - 2, 0), min(frame + 1, rt["own_binned"].size - 1)
    best, rise_best = "noise", 2.0
    for label, c in (("other soma", rt["other_binned"]), ("own", rt["own_binned"]),
                     *parts.items()):
        rise = (c[lo:hi + 1].max() - c[max(lo - 1, 0)]) / rt["noise"]
        if rise >= rise_best:
            best, rise_best = label, rise
    return best


def gain(norm: np.ndarray, rt: dict) -> float:
    """Least-squares slope of one ROI's trace on its own neuron's binned ΔF/F (finite frames)."""
    own = rt["own_binned"][: norm.size]
    ok = np.isfinite(norm[: own.size])
    a = np.stack([own[ok], np.ones(ok.sum())], axis=1)
    coef, *_ = np.linalg.lstsq(a, norm[: own.size][ok], rcond=None)
    return float(coef[0])


def clean_binned(truth, *, time_bin: int = TIME_BIN) -> np.ndarray:
    """``roi_dff_clean`` block-averaged like the pipeline, (roi, time)."""
    clean = np.asarray(truth["roi_dff_clean"], dtype=np.float64)
    nb = clean.shape[1] // time_bin
    return clean[:, : nb * time_bin].reshape(clean.shape[0], nb, time_bin).mean(axis=2)


def score_roi(det_peaks: np.ndarray, rt: dict, *, tolerance: int) -> dict:
    """Hits, false positives, misses of one ROI (see the module docstring)."""
    counted = rt["snr"] >= MIN_SNR
    first = match_events(det_peaks, rt["peak_frame"][counted], tolerance_frames=tolerance)
    hit_true = np.zeros(counted.sum(), dtype=bool)
    hit_true[first["pairs"][:, 1]] = True
    used = np.zeros(det_peaks.size, dtype=bool)
    used[first["pairs"][:, 0]] = True
    rest = np.flatnonzero(~used)
    second = match_events(det_peaks[rest], rt["peak_frame"][~counted],
                          tolerance_frames=tolerance)
    neutral = np.zeros(det_peaks.size, dtype=bool)
    neutral[rest[second["pairs"][:, 0]]] = True
    fp = ~used & ~neutral
    return {"hit": hit_true, "fp_frames": det_peaks[fp], "n_neutral": int(neutral.sum())}


def _other_cell_at(frames: np.ndarray, other: np.ndarray, noise: float) -> np.ndarray:
    """Whether another cell's light in the ROI rises by >= 2 noise sigmas near each frame."""
    out = np.zeros(frames.size, dtype=bool)
    for j, f in enumerate(frames):
        lo, hi = max(f - 2, 0), min(f + 2, other.size - 1)
        seg = other[lo:hi + 1]
        out[j] = seg.size > 1 and (seg.max() - other[max(lo - 1, 0)]) >= 2 * noise
    return out


def score(sessions: list[tuple], params: dict, *, tolerance: int = 1,
          background_light: bool = True) -> dict:
    """Pool the scores of ``(truth, norm (roi, time), time_s, extra)`` tuples.

    ``background_light``: the traces hold neuropil and contaminant light (pipeline
    traces, not oracle ones), so false positives may be given to them.
    """
    import xarray as xr

    hits, amps, snrs, gains = [], [], [], []
    n_fp = n_neutral = n_fp_other = 0
    sources: dict[str, int] = {}
    for truth, norm, time_s, extra in sessions:
        rts = roi_truth(truth)
        parts = light_components(truth) if background_light else {}
        ds = xr.Dataset({"norm": (("roi", "time"), norm),
                         **extra},
                        coords={"time": time_s})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)
            ev = detect_events_dataset(ds, **params)
        for k, rt in enumerate(rts):
            peaks = ev.loc[ev["roi"] == k + 1, "peak_frame"].to_numpy()
            s = score_roi(peaks, rt, tolerance=tolerance)
            counted = rt["snr"] >= MIN_SNR
            hits.append(s["hit"])
            amps.append(rt["amplitude"][counted])
            snrs.append(rt["snr"][counted])
            n_fp += s["fp_frames"].size
            n_neutral += s["n_neutral"]
            n_fp_other += int(_other_cell_at(s["fp_frames"], rt["other_binned"],
                                             rt["noise"]).sum())
            roi_parts = {"neuropil": parts["neuropil"][k],
                         "contaminant": parts["contaminant"][k]} if parts else {}
            for f in s["fp_frames"]:
                label = fp_source(int(f), rt, roi_parts)
                sources[label] = sources.get(label, 0) + 1
            gains.append(gain(norm[k], rt))
    hit = np.concatenate(hits)
    amp = np.concatenate(amps)
    snr = np.concatenate(snrs)
    tp, fn = int(hit.sum()), int((~hit).sum())
    small = amp <= np.quantile(amp, 1 / 3) if amp.size else amp.astype(bool)
    bands = {}
    for lo, hi in ((3, 5), (5, 10), (10, np.inf)):
        sel = (snr >= lo) & (snr < hi)
        bands[f"{lo}-{hi}"] = (float(hit[sel].mean()) if sel.any() else float("nan"),
                               int(sel.sum()))
    return {
        "tp": tp, "fp": n_fp, "fn": fn, "neutral": n_neutral, "fp_other_cell": n_fp_other,
        "precision": tp / (tp + n_fp) if tp + n_fp else float("nan"),
        "precision_own_light": tp / (tp + n_fp - n_fp_other) if tp + n_fp - n_fp_other
        else float("nan"),
        "fp_sources": dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        "gain": np.percentile(gains, [10, 50, 90]) if gains else np.full(3, np.nan),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "f1": 2 * tp / (2 * tp + n_fp + fn) if tp else 0.0,
        "small_recall": float(hit[small].mean()) if small.any() else float("nan"),
        "small_n": int(small.sum()),
        "small_range": (float(amp[small].min()), float(amp[small].max())) if small.any()
        else (float("nan"), float("nan")),
        "bands": bands,
    }


def pipeline_sessions(results: Path, truth_dir: Path) -> list[tuple]:
    """``(truth, norm, time_s, extra)`` of every session with a truth.npz and a result store.

    ``extra`` holds the store's other (roi, time) variables the detector reads: ``neuropil``
    (with a neuropil correction).
    """
    out = []
    for tpath in sorted(truth_dir.glob("*/*/truth.npz")):
        date, name = tpath.parent.parent.name, tpath.parent.name
        store = results / date / name / f"{name}_result.zarr"
        ds = open_store(store).load()
        truth = dict(np.load(tpath))
        norm = ds["norm"].transpose("roi", "time").values.astype(np.float64)
        if norm.shape[0] != len(truth["roi_neuron"]):
            raise RuntimeError(f"{store}: {norm.shape[0]} ROIs, truth has "
                               f"{len(truth['roi_neuron'])}")
        extra = {k: (ds[k].dims, ds[k].values.astype(np.float64))
                 for k in EXTRA_VARIABLES if k in ds}
        out.append((truth, norm, ds["time"].values.astype(np.float64), extra))
    return out


def oracle_sessions(sessions: list[tuple], seed: int = 0) -> list[tuple]:
    """The same ROIs, with ``roi_dff_clean`` binned + Gaussian noise of the ROI's sigma."""
    rng = np.random.default_rng(seed)
    out = []
    for truth, _, time_s, _ in sessions:
        clean = clean_binned(truth)
        noise = np.asarray(truth["roi_noise_dff"], dtype=np.float64) / math.sqrt(TIME_BIN)
        out.append((truth, clean + rng.normal(size=clean.shape) * noise[:, None], time_s, {}))
    return out


def out_dir(work: Path, run_params: list[tuple[str, str]]) -> Path:
    """The pipeline's output folder for these run parameters (one per setting)."""
    if not run_params:
        return work / "out"
    slug = "_".join(f"{k}-{v}" for k, v in run_params)
    return work / ("out_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in slug))


def prepare(work: Path, seeds: list[int], name: str,
            run_params: list[tuple[str, str]] = ()) -> tuple[Path, Path]:
    """Write the sessions (once) and run the pipeline on them (resumed when done)."""
    exp = work / "data" / name
    if not exp.exists():
        planned = demo.plan_sessions(seeds, difficulty="hard", n_frames=N_FRAMES,
                                     frame_shape=SHAPE)
        demo.write_sessions(work / "data", planned, name=name)
    out = out_dir(work, list(run_params))
    extra = [a for k, v in run_params for a in ("-p", k, v)]
    cmd = [sys.executable, "-m", "calim_helpers.cli", "run", str(exp), "--out", str(out),
           "-q", *RUN_PARAMS, *extra]
    subprocess.run(cmd, check=True)
    return out / name, work / "data" / f"{name}_truth"


def _print(label: str, s: dict) -> None:
    print(f"{label}: precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
          f"F1 {s['f1']:.3f}  smallest-third recall {s['small_recall']:.3f} "
          f"(n={s['small_n']}, ΔF/F {s['small_range'][0]:.3f}-{s['small_range'][1]:.3f})")
    print(f"    hits {s['tp']}, false positives {s['fp']} (of which at another cell's "
          f"transient {s['fp_other_cell']}), misses {s['fn']}, matched to sub-3σ truth "
          f"{s['neutral']}")
    print("    recall by SNR: " + ", ".join(f"{k}: {v:.3f} (n={n})"
                                           for k, (v, n) in s["bands"].items()))
    print(f"    precision with other cells' light as neither: {s['precision_own_light']:.3f}"
          f"; false positives by source: {s['fp_sources']}; gain (trace on own ΔF/F) "
          f"median {s['gain'][1]:.2f} (10-90 %: {s['gain'][0]:.2f}-{s['gain'][2]:.2f})")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, prepare the sessions, print the scores."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", default=["801-810"],
                   help="session seeds: 801-810 (fresh held out, the default), 101-110 "
                   "(held out, earlier reports), 901-910 (fresh, events helper) or 1-60 (tuning)")
    p.add_argument("--neuropil", nargs="+", default=["fitted", "none"],
                   choices=["none", "annulus", "fitted", "demix"],
                   help="neuropil.method(s) of the pipeline runs scored (default: fitted, "
                   "the recommended, and none, the lab's method)")
    p.add_argument("--work", type=Path,
                   default=Path(tempfile.gettempdir()) / "calim_bench_events",
                   help="folder for the sessions and the pipeline's outputs (reused)")
    p.add_argument("--tolerance", type=int, default=1, help="peak tolerance, frames")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[],
                   metavar=("KEY", "VALUE"), help="override events.KEY (e.g. -p "
                   "events.threshold 3.5) or, any other section, a run parameter "
                   "(e.g. -p neuropil.method fitted)")
    args = p.parse_args(argv)
    seeds = _seeds(args.seeds)
    params = default_event_params()
    run_params = []
    for key, value in args.param:
        if key.startswith("events.") or "." not in key:
            params[key.removeprefix("events.")] = yaml.safe_load(value)
        elif key == "neuropil.method":
            args.neuropil = [value]
        else:
            run_params.append((key, value))
    name = f"HARD_{seeds[0]}_{seeds[-1]}_{len(seeds)}"
    for method in args.neuropil:
        rp = run_params + ([] if method == "none" else [("neuropil.method", method)])
        start = time.perf_counter()
        results, truth_dir = prepare(args.work, seeds, name, rp)
        prep_s = time.perf_counter() - start
        sessions = pipeline_sessions(results, truth_dir)
        print(f"\n{len(sessions)} hard sessions (seeds {args.seeds}), neuropil {method}, run "
              f"parameters {rp or 'defaults'}, pipeline outputs {results} ({prep_s:.0f} s); "
              f"events: {params}; tolerance {args.tolerance} frame(s)")
        _print(f"pipeline norm (neuropil {method})",
               score(sessions, params, tolerance=args.tolerance))
    _print("oracle traces", score(oracle_sessions(sessions), params,
                                  tolerance=args.tolerance, background_light=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
