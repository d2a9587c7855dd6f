"""The ``calim`` command: demo data, the sessions of an experiment, and the pipeline run.

``calim --help`` shows :data:`DESCRIPTION` and :data:`EXAMPLES`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

from calim_helpers import __version__
from calim_helpers.errors import CalimInputError, CalimParameterError, CalimWarning

DESCRIPTION = """\
CALIM: drift-corrected, normalized calcium-imaging traces, statistics and figures from
Micro-Manager stacks and Fiji ROI sets. An experiment is a folder of date folders
(dd-mm-yy) holding session folders (<yymmdd>_<n>)."""

EXAMPLES = """\
examples:
  calim demo-data demo                  a small synthetic experiment in demo/DEMO
  calim sessions demo/DEMO              what was found in it, and what is missing
  calim run demo/DEMO --out out         the whole pipeline; results under out/DEMO/
  calim run A B --out out -p arpls.lam 100   two conditions, compared; another lambda
  calim run A --out out -p sessions 230404_5,230404_9   two sessions of A only
  calim run A --out out --workers 4     four sessions at once (default: one per core)
  calim run A --out out --scheduler tcp://head:8786   on a running dask cluster

Every parameter, its default and its meaning: params/default.yaml (installed as
calim_helpers/data/default.yaml)."""


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
                                     seed=args.seed, difficulty=args.difficulty,
                                     neuropil_strength=args.neuropil_strength,
                                     n_frames=args.frames)
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


def _session_frames(experiments: list[Path], params: dict) -> dict[str, int]:
    """Native frame count of each selected session that opens (metadata only, no pixels)."""
    from calim_helpers import io
    from calim_helpers.workflow import Experiment

    frames = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalimWarning)  # the run reports them, once
        for exp_dir in experiments:
            for s in Experiment.open(exp_dir, exp_dir, params["sessions"]).sessions:
                try:
                    movie = io.open_movie(s, channel=params["load"]["channel"])
                except CalimInputError:
                    continue  # reported with its reason when the run reaches it
                frames[f"{s.experiment}/{s.id}"] = movie.sizes["time"]
                movie.close()
    return frames


def _setup_logging(verbose: bool) -> None:
    """Progress records of ``calim`` (and of the notebooks' kernels) to stderr."""
    import logging

    logger = logging.getLogger("calim")
    for old in [h for h in logger.handlers if getattr(h, "calim_cli", False)]:
        logger.removeHandler(old)  # an earlier call's stderr may be gone (redirected, closed)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.calim_cli = True
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _cmd_run(args: argparse.Namespace) -> int:
    from calim_helpers.params import check_against_sessions, load_params
    from calim_helpers.workflow import papermill

    overrides = list(args.param) + ([("compute.resume", "false")] if args.force else [])
    if args.workers is not None:
        overrides.append(("compute.workers", args.workers))
    if args.scheduler is not None:
        overrides.append(("compute.scheduler", args.scheduler))
    try:
        params = load_params(args.params_file, overrides)
    except CalimParameterError as exc:
        print(f"calim run: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    experiments = [Path(e) for e in args.experiments]
    for exp in experiments:
        exp_path = exp.resolve()
        if not exp_path.is_dir():
            print(f"calim run: {exp}: experiment folder not found", file=sys.stderr)
            return 2
        if exp_path in out.resolve().parents or exp_path == out.resolve():
            print(f"calim run: --out {out} lies inside the input {exp}; choose another folder",
                  file=sys.stderr)
            return 2
    names = [e.resolve().name for e in experiments]
    if len(set(names)) != len(names):
        print("calim run: two experiments have the same folder name", file=sys.stderr)
        return 2
    try:
        short = check_against_sessions(params, _session_frames(experiments, params))
    except CalimParameterError as exc:
        print(f"calim run: {exc}", file=sys.stderr)
        return 2
    except CalimInputError as exc:  # e.g. a session named in `sessions` does not exist
        print(f"calim run: {exc}", file=sys.stderr)
        return 2
    for session, why in short.items():
        print(f"calim run: {session} is left out, movie too short: {why}", file=sys.stderr)
    _setup_logging(not args.quiet)
    runs = papermill.run_experiments(experiments, out, params, command=["calim", *args.argv])
    problems = [line for r in runs for line in r.problems()]
    produced = [r for r in runs if r.produced]
    if produced:
        print(f"\nResults: {out.resolve()}")
        for r in produced:
            print(f"  {r.name}: {out.resolve() / r.name}")
        first = out.resolve() / produced[-1].name / "notebooks" / "05_aggregate.html"
        if len(runs) > 1 and (out / "comparison").exists():
            print(f"  comparison: {out.resolve() / 'comparison'}")
        if first.exists():
            print(f"Open first: {first}")
    else:
        print("\nNo results were produced.")
    for line in problems:
        print(f"  {line}")
    warned = [line for r in runs for line in r.warnings()]
    if warned:
        print("Warnings (also in each experiment's run_record.json):")
        for line in warned:
            print(f"  {line}")
    return 1 if any(r.failed for r in runs) else 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``calim`` command."""
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="calim", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=raw)
    p.add_argument("--version", action="version", version=f"calim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo-data", help="write the synthetic demo experiment",
                       description="Write a synthetic experiment in the lab's layout "
                       "(2 dates x 2 sessions, Micro-Manager stacks, Fiji ROI sets) and its "
                       "ground truth in OUT/<name>_truth.")
    d.add_argument("out", help="folder to create the experiment in")
    d.add_argument("--name", default="DEMO", help="experiment name (default: DEMO)")
    d.add_argument("--full-size", action="store_true",
                   help="1500 x 512 x 688 frames per session, streamed to disk")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--difficulty", choices=("default", "hard"), default="default",
                   help="hard: dim, touching and rarely firing cells, out-of-focus cells and "
                   "neurites, local neuropil, 15%% of expert ROIs too large or too small "
                   "(default: default)")
    d.add_argument("--neuropil-strength", type=float, default=1.0, metavar="X",
                   help="neuropil level and fluctuations, x the default (default: 1)")
    d.add_argument("--frames", type=int, metavar="N",
                   help="native frames per session, e.g. 40 for a short movie (default: 600, "
                   "1500 with --full-size)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing demo")
    d.set_defaults(func=_cmd_demo_data)

    s = sub.add_parser("sessions", help="list the sessions found in experiment folders",
                       description="List each session found: its date, stack files and ROI "
                       "set, or why it cannot be used.")
    s.add_argument("experiments", nargs="+", help="experiment folders")
    s.set_defaults(func=_cmd_sessions)

    r = sub.add_parser("run", help="run the pipeline on experiment folders",
                       description="Run the notebooks 01_load ... 05_aggregate with papermill "
                       "on each experiment; outputs mirror the input tree under OUT. "
                       "Parameters are checked before any work starts.",
                       epilog=EXAMPLES, formatter_class=raw)
    r.add_argument("experiments", nargs="+", help="experiment folders")
    r.add_argument("--out", required=True, help="output folder (mirrors the input tree)")
    r.add_argument("-f", "--params-file", help="YAML file with the parameters to change "
                   "(every key is documented in params/default.yaml)")
    r.add_argument("-p", "--param", nargs=2, action="append", default=[],
                   metavar=("KEY", "VALUE"), help="set one parameter, e.g. -p downsample.time 5")
    r.add_argument("--force", action="store_true",
                   help="recompute every step of every session, even those an earlier run "
                   "into the same --out completed with the same inputs and parameters")
    r.add_argument("--workers", metavar="N", help="sessions at once: dask worker processes "
                   "started on this machine for the run (default: compute.workers, auto = one "
                   "per core; 1 = no cluster, one core)")
    r.add_argument("--scheduler", metavar="ADDRESS", help="send the sessions to a running "
                   "dask cluster instead, e.g. tcp://head-node:8786 (its workers must see the "
                   "same files)")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="no progress lines, only warnings and the final summary")
    r.set_defaults(func=_cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calim`` console script."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except CalimInputError as exc:
        print(f"calim: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
