"""``calim run``: the notebooks 01-05 executed with papermill, once per experiment.

Each notebook handles all sessions of its experiment (see :mod:`calim_helpers.pipeline`).
The executed notebooks are the run record: ``OUT/<experiment>/notebooks/NN_name.ipynb``,
each rendered to HTML beside it. When several experiments are given, the last one's
``04_aggregate`` also compares them all (``OUT/comparison/``).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from calim_helpers import io, pipeline

__all__ = ["NOTEBOOKS", "NOTEBOOK_DIR", "ExperimentRun", "run_experiments"]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# 05_analysis runs before 04_aggregate, which summarizes its tables too.
NOTEBOOKS = ("01_load", "02_rois", "03_arpls", "05_analysis", "04_aggregate")
STEP_OF = {"01_load": "load", "02_rois": "rois", "03_arpls": "arpls", "05_analysis": "analysis"}
_PROGRESS = re.compile(r"^\[[^\]]+\] ")


@dataclass
class ExperimentRun:
    """What happened to one experiment: notebook failures and per-session statuses."""

    name: str
    failed_notebook: str = ""
    error: str = ""
    statuses: dict[str, pd.DataFrame] = field(default_factory=dict)

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

    @property
    def failed(self) -> bool:
        """Whether a notebook or a session failed."""
        return bool(self.failed_notebook) or any(
            (t["status"] == "failed").any() for t in self.statuses.values())


class _ProgressFilter(logging.Filter):
    """Let through only the notebooks' own progress lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return any(_PROGRESS.match(line) for line in str(record.getMessage()).splitlines())


def _progress_logging(echo: Callable[[str], None]) -> logging.Handler:
    class _Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            for line in str(record.getMessage()).splitlines():
                if _PROGRESS.match(line):
                    echo("  " + line)

    handler = _Echo()
    handler.addFilter(_ProgressFilter())
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def _render_html(notebook_path: Path) -> Path:
    import nbconvert
    import nbformat

    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook_path, 4))
    return io.write_text(notebook_path.with_suffix(".html"), body)


def _notebook_source(name: str, tmp: Path) -> Path:
    """Generate the notebook from its jupytext source ``notebooks/<name>.py``."""
    import jupytext

    src = NOTEBOOK_DIR / f"{name}.py"
    nb = jupytext.read(src)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp / f"{name}.ipynb"
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
) -> str:
    """Execute one notebook with papermill; return "" or the failure (cell and error).

    Only the parameters the notebook declares are passed. The executed notebook is
    written atomically to ``output`` and (``html=True``) rendered to HTML beside it, also
    on failure.
    """
    import papermill as pm

    src = _notebook_source(name, source_dir)
    declared = pm.inspect_notebook(str(src))
    values = {k: v for k, v in params.items() if k in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = io.atomic_path(output).with_suffix(".ipynb")
    error = ""
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=values, kernel_name="python3",
                            progress_bar=False, log_output=True, cwd=str(output.parent),
                            # the kernel's own warnings (loopback transport) are not ours
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except pm.PapermillExecutionError as exc:
        error = (f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}".strip())
    except Exception as exc:  # noqa: BLE001 - a dead kernel fails this experiment, not the run
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if tmp.exists():
            io.commit(tmp, output)
            if html:
                _render_html(output)
    return error


def run_experiments(
    experiments: Sequence[Path],
    out_dir: Path,
    params: Mapping[str, Any],
    /,
    *,
    echo: Callable[[str], None] = print,
) -> list[ExperimentRun]:
    """Run the notebooks on each experiment; compare the experiments when there are several.

    Before the notebooks, ``OUT/<experiment>/run_record.json`` records the whole
    parameter tree, package versions and input checksums.

    Parameters
    ----------
    experiments : sequence of pathlib.Path
        Experiment folders.
    out_dir : pathlib.Path
        Output root.
    params : mapping
        The validated parameter tree (:func:`calim_helpers.params.load_params`).
    echo : callable, optional
        Receives progress lines. Default is :func:`print`.

    Returns
    -------
    list of ExperimentRun
    """
    handler = _progress_logging(echo)
    runs = []
    done: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="calim-nb-") as tmp:
            for k, exp_dir in enumerate(experiments):
                exp_dir = Path(exp_dir).resolve()
                run = ExperimentRun(exp_dir.name)
                runs.append(run)
                values = dict(params) | {"experiment_dir": str(exp_dir),
                                         "out_dir": str(out_dir.resolve())}
                last = k == len(experiments) - 1
                try:
                    pipeline.run_record(pipeline.Experiment.open(exp_dir, out_dir, params.get(
                        "sessions", [])), params)
                except Exception as exc:  # noqa: BLE001 - reported like a failed notebook
                    run.failed_notebook, run.error = "run_record", f"{type(exc).__name__}: {exc}"
                    echo(f"  {exp_dir.name}: cannot start: {run.error}")
                    continue
                for name in NOTEBOOKS:
                    if name == "04_aggregate":
                        values["compare"] = list(done) if last else []
                    echo(f"{exp_dir.name}: {name} ...")
                    output = out_dir / exp_dir.name / "notebooks" / f"{name}.ipynb"
                    error = execute_notebook(name, values, output, source_dir=Path(tmp))
                    step = STEP_OF.get(name)
                    status = out_dir / exp_dir.name / "status" / f"{step}.csv"
                    if step and status.exists():
                        run.statuses[step] = pd.read_csv(status, keep_default_na=False)
                    if error:
                        run.failed_notebook, run.error = f"{name}.ipynb", error
                        echo(f"  {exp_dir.name}: notebook {name}.ipynb failed at {error} "
                             f"(see {output.with_suffix('.html')})")
                        break
                else:
                    done.append(exp_dir.name)
    finally:
        logging.getLogger("papermill").removeHandler(handler)
    return runs
