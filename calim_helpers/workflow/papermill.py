"""``calim run``: the notebooks executed with papermill, once per experiment.

Each notebook handles all selected sessions of its experiment; they run in the order
of their numbers (:data:`NOTEBOOKS`). The executed notebooks are the run record:
``OUT/<experiment>/notebooks/NN_name.ipynb``, each rendered to HTML beside it. When
several experiments are given, the last one's ``05_aggregate`` also compares them all
(``OUT/comparison/``). A comparison left by an earlier run is removed when this run redid
the tables of one of its experiments without comparing them again
(:func:`stale_comparison`).

What the kernels write to stderr -- the ``calim`` log records and warnings -- is
forwarded line by line to the ``calim.kernel`` logger of this process, so progress
shows in the terminal while the notebooks run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calim_helpers import io, resources
from calim_helpers.errors import CalimWarning
from calim_helpers.workflow import kernels
from calim_helpers.workflow.ahead import STEP_SECTIONS, sessions_ahead
from calim_helpers.workflow.cluster import cluster_for_run, on_workers
from calim_helpers.workflow.experiment import COMPARISON_CELLS, COMPARISON_OUTPUTS, Experiment
from calim_helpers.workflow.record import experiment_warnings, finish_record, run_record

__all__ = ["COMPARISON_OUTPUTS", "NOTEBOOKS", "STEP_OF", "ExperimentRun", "execute_notebook",
           "remove_comparison", "run_experiments", "stale_comparison"]

log = logging.getLogger("calim.run")
kernel_log = logging.getLogger("calim.kernel")

#: The notebooks ``calim run`` executes, in order.
NOTEBOOKS = ("01_load", "02_rois", "03_arpls", "04_analysis", "05_aggregate")
#: The per-session step each notebook runs (its status table: ``status/<step>.csv``): the
#: first four notebooks run the steps in order; the last works on the whole experiment.
STEP_OF = dict(zip(NOTEBOOKS[:-1], STEP_SECTIONS, strict=True))
#: The tag of a notebook's cell that runs its step on every session.
STEP_TAG = "step"
#: Parameters that are not in ``default.yaml``: where the data is and what to compare.
RUN_PARAMETERS = ("experiment_dir", "out_dir", "compare")


@dataclass
class ExperimentRun:
    """What happened to one experiment: notebook failures and per-session statuses."""

    name: str
    failed_notebook: str = ""
    error: str = ""
    statuses: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: Warnings raised while finding the sessions (e.g. a session without a ROI set).
    discovery: list[str] = field(default_factory=list)
    #: ``(step, warning)`` raised by the steps that work on the whole experiment.
    experiment_warnings: list[tuple[str, str]] = field(default_factory=list)
    #: Warnings about outputs beyond the experiment's own, after the run (e.g. a stale
    #: ``OUT/comparison/`` removed).
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line per failed or skipped session and step, and a failed notebook."""
        lines = []
        for step, table in self.statuses.items():
            for r in table.itertuples():
                if r.status != "ok":
                    lines.append(f"{r.status}: {self.name} {r.session} at step '{step}': "
                                 f"{r.reason}")
        if self.failed_notebook:
            lines.append(f"failed: {self.name} notebook {self.failed_notebook}: {self.error}")
        return lines

    def warnings(self) -> list[str]:
        """Each distinct warning once, with the sessions and step that raised it."""
        where: dict[tuple[str, str], list[str]] = {}
        for step, table in self.statuses.items():
            if "warnings" not in table:
                continue
            for r in table.itertuples():
                for w in str(r.warnings or "").split(" | "):
                    if w:
                        where.setdefault((step, w), []).append(str(r.session))
        return ([f"{self.name} {', '.join(dict.fromkeys(sessions))} at step '{step}': {w}"
                 for (step, w), sessions in where.items()]
                + [f"{self.name} {w}" for w in self.other_warnings()])

    def other_warnings(self) -> list[str]:
        """Return the warnings no session's step raised, each with where it arose."""
        return list(dict.fromkeys(
            [f"finding the sessions: {w}" for w in self.discovery]
            + [f"at step '{step}': {w}" for step, w in self.experiment_warnings]
            + [f"after the run: {w}" for w in self.notes]))

    @property
    def failed(self) -> bool:
        """Whether a notebook or a session failed."""
        return bool(self.failed_notebook) or any(
            (t["status"] == "failed").any() for t in self.statuses.values())

    produced: bool = False
    """Whether the experiment's tables were written (``experiment.zarr`` exists)."""


class _LineForwarder:
    """A file-like sink for a kernel's stderr: each complete line becomes a log record."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                kernel_log.info("%s%s", self.prefix, line.rstrip())
        return len(text)

    def flush(self) -> None:
        """Emit a trailing partial line."""
        if self._buffer.strip():
            kernel_log.info("%s%s", self.prefix, self._buffer.rstrip())
        self._buffer = ""


@functools.cache
def _html_exporter() -> Any:
    """One HTML exporter for the run: its templates are compiled once, not per notebook."""
    import nbconvert

    return nbconvert.HTMLExporter()


def _render_html(notebook_path: Path) -> Path:
    import nbformat

    body, _ = _html_exporter().from_notebook_node(nbformat.read(notebook_path, 4))
    return io.write_text(notebook_path.with_suffix(".html"), body)


def notebook_from_source(name: str, folder: Path, /) -> Path:
    """Write ``<folder>/<name>.ipynb`` from the packaged jupytext source ``<name>.py``."""
    import jupytext

    nb = jupytext.read(resources.notebook_dir() / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / f"{name}.ipynb"
    jupytext.write(nb, path)
    return path


def execute_notebook(
    name: str,
    params: Mapping[str, Any],
    output: Path,
    /,
    *,
    source_dir: Path,
    html: bool = True,
    prefix: str = "",
    kernel: Any | None = None,
    after_step: Callable[[], Any] | None = None,
) -> str:
    """Execute one notebook with papermill; return "" or the failure (cell and error).

    Parameters
    ----------
    name : str
        Notebook name, e.g. ``"03_arpls"`` (its source is ``notebooks/<name>.py``).
    params : mapping
        Parameter values; only those the notebook declares are passed.
    output : pathlib.Path
        The executed notebook, written atomically (also on failure).
    source_dir : pathlib.Path
        A scratch folder for the generated ``.ipynb``.
    html : bool, optional
        Also render the executed notebook to HTML beside it. Default is True.
    prefix : str, optional
        Put before each forwarded line of the kernel's stderr. Default is "".
    kernel : jupyter_client.KernelManager, optional
        A kernel already started in ``output.parent`` (:class:`~calim_helpers.workflow.
        kernels.NextKernel`); it is shut down afterwards. Default is None: papermill
        starts one.
    after_step : callable, optional
        Called with no argument once the notebook's cell tagged :data:`STEP_TAG` (the
        one that runs its step on every session) has run (also when it failed), or
        before the notebook runs when it has none. ``calim run`` starts the next
        notebook's kernel then, so that it does not take memory while the step's work
        does. Default is None.
    """
    import nbformat
    import papermill as pm

    src = notebook_from_source(name, source_dir)
    hooks: dict[str, Any] = {}
    if after_step is not None:
        cells = nbformat.read(src, as_version=4).cells
        if any(STEP_TAG in c.get("metadata", {}).get("tags", []) for c in cells):
            def after_cell(cell: Any, **_: Any) -> None:
                if STEP_TAG in cell.get("metadata", {}).get("tags", []):
                    after_step()

            hooks = {"on_cell_executed": after_cell}
        else:
            after_step()
    declared = pm.inspect_notebook(str(src))
    values = {k: v for k, v in params.items() if k in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = io.atomic_path(output).with_suffix(".ipynb")
    error = ""
    sink = _LineForwarder(prefix)
    try:
        engine = {}
        if kernel is not None:
            kernels.register_engine()
            engine = {"engine_name": kernels.ENGINE, "km": kernel}
        pm.execute_notebook(str(src), str(tmp), parameters=values, kernel_name="python3",
                            progress_bar=False, log_output=False, stderr_file=sink,
                            cwd=str(output.parent),
                            extra_arguments=list(kernels.KERNEL_ARGUMENTS),
                            # its cells are done; a graceful shutdown waits 0.2 s more
                            shutdown_kernel="immediate", **engine, **hooks)
    except pm.PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}".strip()
    except Exception as exc:  # noqa: BLE001 - a dead kernel fails this experiment, not the run
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sink.flush()
        if tmp.exists():
            io.commit(tmp, output)
            if html:
                _render_html(output)
    return error


def _session_inputs(experiment: Experiment, /) -> list[Any]:
    """Identify every selected session's inputs by file name, size and mtime."""
    def identity(path: Path | None) -> Any:
        if path is None:
            return None
        st = Path(path).stat()
        return [Path(path).name, st.st_size, st.st_mtime_ns]

    return [[s.id, s.problem, [identity(f) for f in s.stack_files],
             identity(s.metadata_file), identity(s.roi_file)] for s in experiment.sessions]


def notebook_fingerprint(name: str, values: Mapping[str, Any], inputs: list[Any], /) -> str:
    """Return the SHA-256 of what a notebook's execution depends on.

    That is its source, every parameter value passed, the package version and the
    sessions' input files (:func:`_session_inputs`).
    """
    from calim_helpers import __version__

    source = (resources.notebook_dir() / f"{name}.py").read_bytes()
    # where the outputs are and how the work is spread do not change them
    values = {k: v for k, v in values.items() if k not in ("out_dir", "compute")}
    text = json.dumps({"notebook": hashlib.sha256(source).hexdigest(), "values": values,
                       "inputs": inputs, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _nb_marker(root: Path, name: str) -> Path:
    return root / ".calim" / f"notebook_{name}.json"


#: What 05_aggregate writes under OUT/<experiment>/ (checked before reusing it).
AGGREGATE_OUTPUTS = ("results_raw.csv", "results_norm.csv", "results_long.csv", "hist_cum.csv",
                     "heatmap.pdf", "hist_cum.pdf", "experiment.zarr", "events.csv",
                     "features.csv", "network_events.csv")


def _reusable(experiment: Experiment, name: str, fingerprint: str) -> pd.DataFrame | None:
    """Return the status table of a reusable earlier execution of notebook ``name``.

    Reusable: same fingerprint, its executed notebook and HTML there, no session failed
    (a failure may be transient), and every output it wrote still there (each
    completed session's outputs of its step; the experiment tables of 05_aggregate).
    Otherwise None.
    """
    root = experiment.root
    output = root / "notebooks" / f"{name}.ipynb"
    try:
        marker = json.loads(_nb_marker(root, name).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("fingerprint") != fingerprint or not output.exists() or \
            not output.with_suffix(".html").exists():
        return None
    step = STEP_OF.get(name)
    if step is None:
        return (pd.DataFrame() if all((root / f).exists() for f in AGGREGATE_OUTPUTS)
                else None)
    status = root / "status" / f"{step}.csv"
    if not status.exists():
        return None
    table = pd.read_csv(status, keep_default_na=False)
    if (table["status"] == "failed").any():
        return None  # a failure may be transient: try again
    ok = set(table.loc[table["status"] == "ok", "session"].astype(str))
    # imported only here: the steps' modules (0.6 s, ~30 MB) stay out of this process
    # unless a run into the same folder is resumed
    from calim_helpers.workflow.runner import outputs_exist

    if not all(outputs_exist(experiment, s, step) for s in experiment.sessions if s.id in ok):
        return None  # an output was deleted since: run the notebook (its step redoes it)
    return table.assign(cached=True, seconds=0.0)


@dataclass
class _RunState:
    """What the notebooks of one ``calim run`` share."""

    bar: Any  # the progress bar, one step per notebook
    ahead: kernels.NextKernel
    scratch: Path  # where the notebooks' .ipynb are generated
    resume: bool
    # dask workers do the steps: the next kernel starts after the step cell, without numba;
    # else the kernels do: it starts at once, with numba (cluster.on_workers)
    on_workers: bool
    executed: bool = False  # once a notebook runs, every later one runs (its inputs may change)
    # the experiments whose 05_aggregate was executed (their tables rewritten, or tried)
    aggregated: list[str] = field(default_factory=list)
    compared: bool = False  # a 05_aggregate with experiments to compare ran without error

    def start_next(self, folder: Path, notebook: str, /) -> Callable[[], Any] | None:
        """Start the kernel of ``notebook`` in ``folder`` now, or return what starts it."""
        preload = kernels.preload_for(notebook, compute=not self.on_workers)
        if self.on_workers:
            return functools.partial(self.ahead.prepare, folder, preload=preload)
        self.ahead.prepare(folder, preload=preload)
        return None


def _run_notebooks(state: _RunState, run: ExperimentRun, experiment: Experiment, root: Path,
                   values: dict[str, Any], /, *, compare: list[str], then: Path | None) -> bool:
    """Execute, or reuse, the notebooks of one experiment in order; False if one failed.

    ``compare`` is passed to ``05_aggregate``; ``then`` is the notebook folder of the
    next experiment, where the kernel after this experiment's last notebook starts.
    """
    label = root.name  # the experiment's name
    inputs = _session_inputs(experiment)
    for name in NOTEBOOKS:
        if name == "05_aggregate":
            values["compare"] = compare
        state.bar.set_postfix_str(f"{label} {name}")
        output = root / "notebooks" / f"{name}.ipynb"
        step = STEP_OF.get(name)
        fingerprint = notebook_fingerprint(name, values, inputs)
        reused = None
        if state.resume and not state.executed:
            reused = _reusable(experiment, name, fingerprint)
        if reused is not None:
            log.info("%s: %s unchanged since the last run, not re-executed", label, name)
            if step:
                io.write_text(root / "status" / f"{step}.csv", reused.to_csv(index=False))
                run.statuses[step] = reused
            state.bar.update(1)
            continue
        log.info("%s: %s", label, name)
        _nb_marker(root, name).unlink(missing_ok=True)
        state.executed = True
        if name == "05_aggregate":
            state.aggregated.append(label)
        kernel = state.ahead.take(output.parent.resolve())
        following = output.parent.resolve() if name != NOTEBOOKS[-1] else then
        ahead = None
        if following is not None:  # every later notebook runs, too: start its kernel
            following.mkdir(parents=True, exist_ok=True)
            ahead = state.start_next(following,
                                     NOTEBOOKS[(NOTEBOOKS.index(name) + 1) % len(NOTEBOOKS)])
        error = execute_notebook(name, values, output, source_dir=state.scratch, prefix="  ",
                                 kernel=kernel, after_step=ahead)
        state.bar.update(1)
        status = root / "status" / f"{step}.csv"
        if step and status.exists():
            run.statuses[step] = pd.read_csv(status, keep_default_na=False)
        if error:
            run.failed_notebook, run.error = f"{name}.ipynb", error
            log.error("%s: notebook %s.ipynb failed at %s (see %s)", label, name, error,
                      output.with_suffix(".html"))
            state.bar.update(len(NOTEBOOKS) - 1 - NOTEBOOKS.index(name))
            return False
        io.write_text(_nb_marker(root, name), json.dumps({"fingerprint": fingerprint}))
        if name == "05_aggregate" and compare:
            state.compared = True
    return True


def stale_comparison(covered: Sequence[str], aggregated: Sequence[str], /, *,
                     rebuilt: bool) -> list[str]:
    """Return the experiments of a comparison whose tables a run redid without it.

    Parameters
    ----------
    covered : sequence of str
        The experiments the existing ``OUT/comparison/`` compares.
    aggregated : sequence of str
        The experiments whose ``05_aggregate`` the run executed (their tables rewritten).
    rebuilt : bool
        Whether the run wrote the comparison again (executed a ``05_aggregate`` with
        experiments to compare, without error).

    Returns
    -------
    list of str
        The experiments of ``covered`` that are in ``aggregated``, in the order of
        ``covered``: when not empty, the comparison holds their old results and is stale.
        Empty when it was rebuilt.
    """
    if rebuilt:
        return []
    redone = set(aggregated)
    return [name for name in dict.fromkeys(covered) if name in redone]


def _compared_experiments(folder: Path, /) -> list[str]:
    """Return the experiments ``folder``'s cell table covers; [] if unreadable."""
    try:
        cells = pd.read_csv(folder / COMPARISON_CELLS, usecols=["experiment"],
                            dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return []
    return list(dict.fromkeys(cells["experiment"]))


def remove_comparison(folder: Path, /) -> list[Path]:
    """Delete the files a comparison wrote in ``folder``, then ``folder`` if it is empty.

    Only :data:`COMPARISON_OUTPUTS` are deleted: anything else put there is kept, and
    so is the folder. Returns the files deleted.
    """
    removed = []
    for name in COMPARISON_OUTPUTS:
        path = Path(folder) / name
        if path.is_file():
            path.unlink()
            removed.append(path)
    with contextlib.suppress(OSError):  # not empty: something else is kept there
        Path(folder).rmdir()
    return removed


def _drop_stale_comparison(out_dir: Path, runs: Sequence[ExperimentRun], state: _RunState,
                           /) -> None:
    """Remove ``OUT/comparison/`` if this run redid one of its experiments' tables alone.

    The warning goes to the log and to the first such experiment's :class:`ExperimentRun`
    (and its ``run_record.json``).
    """
    folder = Path(out_dir) / "comparison"
    if not folder.is_dir():
        return
    covered = _compared_experiments(folder)
    redone = stale_comparison(covered, state.aggregated, rebuilt=state.compared)
    if not redone:
        return
    remove_comparison(folder)
    whose = (f"{redone[0]}'s tables were" if len(redone) == 1
             else f"the tables of {', '.join(redone)} were")
    note = (f"{folder} compared experiments {', '.join(covered)} and was removed because "
            f"{whose} redone (it held their earlier results); give the experiments together "
            f"to one `calim run --out {out_dir}` to compare them again")
    log.warning("%s", note)
    run = next((r for r in runs if r.name == redone[0]), runs[-1])
    run.notes.append(note)
    finish_record(Path(out_dir) / run.name, run.statuses, notebook_error=run.error,
                  other_warnings=run.other_warnings())


def _sessions_ahead(compute: Mapping[str, Any], exp_dir: Path, values: Mapping[str, Any], /
                    ) -> contextlib.AbstractContextManager:
    """Send the sessions through their steps ahead of the notebooks, on dask workers.

    :func:`calim_helpers.workflow.ahead.sessions_ahead`; without workers, nothing.
    """
    if "://" not in str(compute["scheduler"]):
        return contextlib.nullcontext()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)  # said when it was first opened
            # the notebooks' view of it: the output folder as they get it (resolved)
            experiment = Experiment.open(exp_dir, values["out_dir"], values["sessions"])
    except Exception as exc:  # noqa: BLE001 - an optimisation: the notebooks run the steps
        log.warning("%s: sessions not sent ahead of the notebooks (%s: %s)", exp_dir.name,
                    type(exc).__name__, exc)
        return contextlib.nullcontext()
    return sessions_ahead(str(compute["scheduler"]), experiment, values,
                          bool(compute["resume"]))


def run_experiments(
    experiments: Sequence[Path],
    out_dir: Path,
    params: Mapping[str, Any],
    /,
    *,
    command: list[str] | None = None,
) -> list[ExperimentRun]:
    """Run the notebooks on each experiment; compare the experiments when there are several.

    Before the notebooks, ``OUT/<experiment>/run_record.json`` records the command, the
    whole parameter tree, package versions and input checksums; after them, the
    per-session timings and warnings (:mod:`calim_helpers.workflow.record`).

    Parameters
    ----------
    experiments : sequence of pathlib.Path
        Experiment folders.
    out_dir : pathlib.Path
        Output root.
    params : mapping
        The validated parameter tree (:func:`calim_helpers.params.load_params`).
    command : list of str, optional
        The command line, for the run record. Default is ``sys.argv``.

    Returns
    -------
    list of ExperimentRun
    """
    from tqdm.auto import tqdm

    runs = []
    done: list[str] = []
    resume = bool(params["compute"]["resume"])
    bar = tqdm(total=len(experiments) * len(NOTEBOOKS), desc="calim run", unit="notebook",
               disable=None, leave=False)
    n_sessions = 0
    for exp_dir in experiments:
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore", CalimWarning)  # said once, below
            n_sessions = max(n_sessions, len(Experiment.open(Path(exp_dir), out_dir,
                                                             params["sessions"]).sessions))
    try:
        with tempfile.TemporaryDirectory(prefix="calim-nb-") as tmp, \
                kernels.NextKernel() as ahead:
            folders = [Path(out_dir).resolve() / Path(e).resolve().name / "notebooks"
                       for e in experiments]
            workers = on_workers(params["compute"], n_sessions)
            if folders and not (resume and _nb_marker(folders[0].parent, NOTEBOOKS[0]).exists()):
                folders[0].mkdir(parents=True, exist_ok=True)  # the first kernel starts now
                ahead.prepare(folders[0],
                              preload=kernels.preload_for(NOTEBOOKS[0], compute=not workers))
            state = _RunState(bar, ahead, Path(tmp), resume, workers)
            with cluster_for_run(params["compute"], n_sessions) as compute:
                for k, exp_dir in enumerate(experiments):
                    exp_dir = Path(exp_dir).resolve()
                    run = ExperimentRun(exp_dir.name)
                    runs.append(run)
                    values = dict(params) | {"experiment_dir": str(exp_dir), "compute": compute,
                                             "out_dir": str(Path(out_dir).resolve())}
                    last = k == len(experiments) - 1
                    try:
                        with warnings.catch_warnings(record=True) as found:
                            warnings.simplefilter("always", CalimWarning)
                            experiment = Experiment.open(exp_dir, out_dir, params["sessions"])
                        run.discovery = list(dict.fromkeys(
                            f"{w.category.__name__}: {w.message}" for w in found
                            if issubclass(w.category, CalimWarning)))
                        for line in run.discovery:
                            log.warning("%s: %s", exp_dir.name, line)
                        run_record(experiment, params, command=command)
                    except Exception as exc:  # noqa: BLE001 - reported like a failed notebook
                        run.failed_notebook = "run_record"
                        run.error = f"{type(exc).__name__}: {exc}"
                        log.error("%s: cannot start: %s", exp_dir.name, run.error)
                        bar.update(len(NOTEBOOKS))
                        continue
                    root = Path(out_dir) / exp_dir.name
                    with _sessions_ahead(compute, exp_dir, values):
                        finished = _run_notebooks(state, run, experiment, root, values,
                                                  compare=list(done) if last else [],
                                                  then=None if last else folders[k + 1])
                    if finished:
                        done.append(exp_dir.name)
                    run.produced = (Path(out_dir) / exp_dir.name / "experiment.zarr").exists()
                    run.experiment_warnings = experiment_warnings(root)
                    finish_record(root, run.statuses, notebook_error=run.error,
                                  other_warnings=run.other_warnings())
            _drop_stale_comparison(Path(out_dir), runs, state)
    finally:
        bar.close()
    return runs
