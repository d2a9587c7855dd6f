"""Fast loop for trace demixing: score neuropil methods on a finished pipeline run's load step.

Usage::

    .venv/bin/python benchmarks/bench_demix.py WORK/out_neuropil.method-fitted/HARD_1_6_6 \\
        WORK/data/HARD_1_6_6 --method fitted demix -d n_background 4

Takes the downsampled movies (``<session>_load.zarr``) of a pipeline run of
``benchmarks/bench_events.py`` (sessions and truth in its ``--work`` folder), extracts
the traces again with :func:`calim_helpers.traces.extract_traces` for each ``--method``
(``-d KEY VALUE`` sets a ``demix_KEY`` argument), corrects them with the default
parameters (:func:`calim_helpers.correction.correct_traces`) and scores the events with
``bench_events.score``: the same figures as ``bench_events.py`` without rerunning the
pipeline. The official figures come from ``bench_events.py --neuropil demix``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_events import _print, default_event_params, roi_truth, score  # noqa: E402

from calim_helpers import demo  # noqa: E402
from calim_helpers.correction import correct_traces  # noqa: E402
from calim_helpers.errors import CalimWarning  # noqa: E402
from calim_helpers.io import open_store  # noqa: E402
from calim_helpers.rois import drop_outside, read_rois  # noqa: E402
from calim_helpers.traces import extract_traces  # noqa: E402


def sessions(out: Path, data: Path, method: str, demix: dict) -> tuple[list[tuple], float]:
    """``(truth, norm, time_s, extra)`` per session for one method, and the traces' seconds."""
    params = yaml.safe_load((Path(demo.__file__).parent / "data" / "default.yaml").read_text())
    np_params = {f"neuropil_{k}": v for k, v in params["neuropil"].items() if k != "method"}
    out_list, spent = [], 0.0
    for tpath in sorted(Path(str(data) + "_truth").glob("*/*/truth.npz")):
        date, name = tpath.parent.parent.name, tpath.parent.name
        load = open_store(out / date / name / f"{name}_load.zarr")
        movie = load["movie"].load()
        native = tuple(load.attrs["native_shape"][1:])
        rois, _ = drop_outside(read_rois(data / date / name / "ROIs" / "ROIs.zip"), native)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)
            tr = extract_traces(movie, rois, native_shape=native,
                                factors={"time": 10, "y": 2, "x": 2},
                                background_fraction=params["background"]["fraction"],
                                seed=params["background"]["seed"],
                                pixel_size_um=float(load.attrs["pixel_size_um"]),
                                **(np_params | {"neuropil_method": method}),
                                **{f"neuropil_demix_{k}": v for k, v in demix.items()}).compute()
            tr.attrs["frame_interval_s_downsampled"] = 1.0
            res = correct_traces(tr, lam=params["arpls"]["lam"], cutoff_s=None,
                                 tol=params["arpls"]["tol"],
                                 max_iter=params["arpls"]["max_iter"],
                                 normalize=params["normalize"],
                                 trim_start=params["trim_start"])
        spent += time.perf_counter() - start
        truth = dict(np.load(tpath))
        extra = {k: (res[k].dims, res[k].values.astype(np.float64))
                 for k in ("neuropil", "baseline_raw", "raw", "background") if k in res}
        out_list.append((truth, res["norm"].values.astype(np.float64),
                         res["time"].values.astype(np.float64), extra))
    return out_list, spent


def excess(ss: list[tuple]) -> np.ndarray:
    """Per ROI: RMS of the trace minus its fit on the own neuron's ΔF/F, over gain x noise."""
    out = []
    for truth, norm, _, _ in ss:
        for k, rt in enumerate(roi_truth(truth)):
            own = rt["own_binned"][: norm.shape[1]]
            ok = np.isfinite(norm[k, : own.size])
            a = np.stack([own[ok], np.ones(ok.sum())], axis=1)
            coef, *_ = np.linalg.lstsq(a, norm[k, : own.size][ok], rcond=None)
            resid = norm[k, : own.size][ok] - a @ coef
            out.append(resid.std() / (abs(coef[0]) * rt["noise"]))
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and print one score block per method."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="pipeline output folder of the experiment")
    p.add_argument("data", type=Path, help="the experiment's data folder (truth beside it)")
    p.add_argument("--method", nargs="+", default=["fitted", "demix"])
    p.add_argument("-d", "--demix", nargs=2, action="append", default=[],
                   metavar=("KEY", "VALUE"), help="demix_KEY argument of extract_traces")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[],
                   metavar=("KEY", "VALUE"), help="events.KEY override")
    args = p.parse_args(argv)
    demix = {k: yaml.safe_load(v) for k, v in args.demix}
    events = default_event_params() | {k.removeprefix("events."): yaml.safe_load(v)
                                       for k, v in args.param}
    for method in args.method:
        ss, spent = sessions(args.out, args.data, method,
                             demix if method == "demix" else {})
        print(f"\n{len(ss)} sessions, {method} {demix if method == 'demix' else ''}: "
              f"traces + correction {spent:.1f} s")
        _print(f"norm ({method})", score(ss, events))
        print(f"    residual around the own ΔF/F over the ROI's noise x gain: median "
              f"{np.median(excess(ss)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
