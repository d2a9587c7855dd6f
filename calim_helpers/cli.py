"""The ``calim`` command.

Examples
--------
calim demo-data demo                 # small synthetic experiment in demo/DEMO
calim demo-data demo --full-size     # 4 sessions of 1500 x 512 x 688
calim sessions demo/DEMO             # what was found, and what is missing
calim run demo/DEMO --out out        # the pipeline, outputs under out/DEMO/
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

from calim_helpers import __version__
from calim_helpers.errors import CalimInputError, CalimWarning


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from calim_helpers import demo

    out = Path(args.out)
    targets = [out / args.name, out / f"{args.name}_truth"]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        print(f"calim demo-data: {existing[0]} exists (use --overwrite)", file=sys.stderr)
        return 2
    for t in existing:
        shutil.rmtree(t)
    exp = demo.write_demo_experiment(out, name=args.name, full_size=args.full_size,
                                     seed=args.seed)
    print(f"demo experiment: {exp}")
    print(f"ground truth:    {out / (args.name + '_truth')}")
    return 0


def _cmd_sessions(args: argparse.Namespace) -> int:
    from calim_helpers import io

    status = 0
    for exp in args.experiments:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalimWarning)
            try:
                sessions = io.find_sessions(exp)
            except CalimInputError as exc:
                print(f"error: {exc}", file=sys.stderr)
                status = 1
                continue
        for s in sessions:
            if s.problem:
                print(f"{s.experiment}\t{s.date}\t{s.name}\tUNUSABLE: {s.problem}")
                status = 1
                continue
            parts = len(s.stack_files)
            roi = s.roi_file.relative_to(s.path) if s.roi_file else "NO ROI SET"
            print(f"{s.experiment}\t{s.date}\t{s.name}\t{parts} stack file(s)\t{roi}")
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    return status


def _cmd_run(args: argparse.Namespace) -> int:
    from calim_helpers import runner
    from calim_helpers.params import load_params

    params = load_params(args.params_file, args.param)
    out = Path(args.out)
    for exp in args.experiments:
        exp_path = Path(exp).resolve()
        if not exp_path.is_dir():
            print(f"calim run: {exp}: experiment folder not found", file=sys.stderr)
            return 2
        if exp_path in out.resolve().parents or exp_path == out.resolve():
            print(f"calim run: --out {out} lies inside the input {exp}; choose another folder",
                  file=sys.stderr)
            return 2
    names = [Path(e).resolve().name for e in args.experiments]
    if len(set(names)) != len(names):
        print("calim run: two experiments have the same folder name", file=sys.stderr)
        return 2
    runs = runner.run_experiments([Path(e) for e in args.experiments], out, params)
    problems = [line for r in runs for line in r.problems()]
    print(f"\nResults: {out.resolve()}")
    for r in runs:
        print(f"  {r.name}: {out.resolve() / r.name} (notebooks/ holds the run record)")
    if len(runs) > 1:
        print(f"  comparison: {out.resolve() / 'comparison'}")
    for line in problems:
        print(f"  {line}")
    return 1 if any(r.failed for r in runs) else 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``calim`` command."""
    p = argparse.ArgumentParser(prog="calim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"calim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo-data", help="write the synthetic demo experiment")
    d.add_argument("out", help="folder to create the experiment in")
    d.add_argument("--name", default="DEMO", help="experiment name (default: DEMO)")
    d.add_argument("--full-size", action="store_true",
                   help="1500 x 512 x 688 frames per session, streamed to disk")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing demo")
    d.set_defaults(func=_cmd_demo_data)

    s = sub.add_parser("sessions", help="list the sessions found in experiment folders")
    s.add_argument("experiments", nargs="+")
    s.set_defaults(func=_cmd_sessions)

    r = sub.add_parser("run", help="run the pipeline on experiment folders")
    r.add_argument("experiments", nargs="+", help="experiment folders")
    r.add_argument("--out", required=True, help="output folder (mirrors the input tree)")
    r.add_argument("-f", "--params-file", help="YAML file with the parameters to change "
                   "(every key is documented in params/default.yaml)")
    r.add_argument("-p", "--param", nargs=2, action="append", default=[],
                   metavar=("KEY", "VALUE"), help="set one parameter, e.g. -p downsample.time 5")
    r.set_defaults(func=_cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calim`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CalimInputError as exc:
        print(f"calim: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
