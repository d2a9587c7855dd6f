"""Write held-out "hard" synthetic sessions, one per seed, with their ground truth.

Usage::

    .venv/bin/python benchmarks/make_hard_sessions.py OUT --seeds 101 102 103
    .venv/bin/python benchmarks/make_hard_sessions.py OUT --seeds 201-210 --frames 40 \\
        --neuropil-strength 4 --name HARD_NP4 --motion

Writes ``OUT/<name>/<date>/<yymmdd>_<seed>/`` (Micro-Manager stack, metadata,
``ROIs/ROIs.zip``: the layout ``calim run`` reads) and
``OUT/<name>_truth/<date>/<yymmdd>_<seed>/truth.npz, session.json`` plus
``OUT/<name>_truth/README.txt`` (every truth field). Session ``<yymmdd>_<seed>`` is
simulated with exactly that seed (``calim_helpers.demo.plan_sessions``), so anyone
can regenerate it from the seed and the options, which are printed and written to
``OUT/<name>_truth/make_hard_sessions.json``.

Score against the truth with ``calim_helpers.demo``: ``true_masks`` + ``match_masks``
(detection at IoU >= 0.5), ``session_transients(truth, time_bin=10)`` + ``match_events``
(events), ``trace_correlation`` with ``truth["roi_dff_clean"]`` (traces, neuropil).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from calim_helpers import demo


def _seeds(values: list[str]) -> list[int]:
    out: list[int] = []
    for value in values:
        if "-" in value:
            lo, hi = (int(v) for v in value.split("-", 1))
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(value))
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, write the sessions, print a summary line per session."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (receives NAME and NAME_truth)")
    p.add_argument("--seeds", nargs="+", required=True,
                   help="session seeds: integers or ranges like 101-110")
    p.add_argument("--name", default="HARD", help="experiment name (default: HARD)")
    p.add_argument("--difficulty", default="hard", choices=["hard", "default"])
    p.add_argument("--frames", type=int, default=600, help="native frames (default 600; "
                   "20-60 for short recordings)")
    p.add_argument("--shape", type=int, nargs=2, default=(96, 128), metavar=("Y", "X"),
                   help="frame size in pixels (default 96 128; 512 688 = the lab's)")
    p.add_argument("--neurons", type=int, default=None,
                   help="in-focus neurons per session (default: 2000 per mm²)")
    p.add_argument("--neuropil-strength", type=float, default=1.0,
                   help="factor on the neuropil brightness (default 1; e.g. 0.5 or 4)")
    p.add_argument("--motion", action="store_true", help="rigid motion in every session")
    p.add_argument("--pixel-size", type=float, default=0.65, help="µm (default 0.65)")
    p.add_argument("--interval", type=float, default=0.1, help="frame interval, s (default 0.1)")
    p.add_argument("--overwrite", action="store_true", help="write into existing folders")
    args = p.parse_args(argv)

    options = {"seeds": _seeds(args.seeds), "difficulty": args.difficulty,
               "n_frames": args.frames, "frame_shape": list(args.shape),
               "n_neurons": args.neurons, "neuropil_strength": args.neuropil_strength,
               "motion": args.motion, "pixel_size_um": args.pixel_size,
               "frame_interval_s": args.interval}
    start = time.perf_counter()
    planned = demo.plan_sessions(
        options["seeds"], difficulty=args.difficulty, n_frames=args.frames,
        frame_shape=tuple(args.shape), n_neurons=args.neurons,
        neuropil_strength=args.neuropil_strength, motion=args.motion,
        pixel_size_um=args.pixel_size, frame_interval_s=args.interval)
    out = Path(args.out)
    try:
        exp = demo.write_sessions(out, planned, name=args.name, overwrite=args.overwrite)
    except FileExistsError as err:
        print(f"make_hard_sessions: {err}", file=sys.stderr)
        return 1
    (out / f"{args.name}_truth" / "make_hard_sessions.json").write_text(
        json.dumps(options, indent=2), encoding="utf-8")
    for plan in planned:
        info = plan.info
        keys = ("n_neurons", "n_rois", "n_dim", "n_rare", "n_touching", "n_bad_rois",
                "n_unlabelled", "n_out_of_focus", "n_neurites")
        print(plan.date, plan.name, " ".join(f"{k}={info[k]}" for k in keys if k in info))
    print(f"{len(planned)} sessions in {exp} ({time.perf_counter() - start:.1f} s); "
          f"options: {json.dumps(options)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
