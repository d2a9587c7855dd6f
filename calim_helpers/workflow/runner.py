"""Run one step over every session of an experiment: fan-out, failure isolation, status.

Each session goes through the step on its own: a session that fails is reported
(session, step, reason) in the returned status table and in
``OUT/<experiment>/status/<step>.csv``, and the other sessions still complete. A
session whose input (the previous step's store) is missing is reported ``skipped``.
Progress is reported through :mod:`logging` (logger ``calim.workflow``), one record
per finished session.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import dask
import pandas as pd

from calim_helpers import io
from calim_helpers.errors import CalimInputError
from calim_helpers.workflow.experiment import Experiment
from calim_helpers.workflow.steps import ANALYSIS_TABLES, STEPS, Skip

__all__ = ["STATUS_COLUMNS", "run_step"]

log = logging.getLogger("calim.workflow")

#: The first columns of every status table; the step's summary columns follow.
STATUS_COLUMNS = ("session", "status", "seconds", "reason")

#: How long to wait for a dask cluster named in ``compute.scheduler`` to answer.
CONNECT_TIMEOUT = "20s"

# the stores a step and the later ones write: removed before a step runs on a session
_STORES_FROM = {"load": ("load", "traces", "result"), "rois": ("traces", "result"),
                "arpls": ("result",), "analysis": ()}


def run_step(step: str, experiment: Experiment, /, *, compute: Mapping[str, Any],
             **sections: Any) -> pd.DataFrame:
    """Run one pipeline step on every selected session, isolating failures.

    Parameters
    ----------
    step : {"load", "rois", "arpls", "analysis"}
        Which step (:data:`calim_helpers.workflow.steps.STEPS`).
    experiment : Experiment
        The sessions and the output root.
    compute : mapping
        The ``compute`` parameter section: ``scheduler`` (``"threads"``,
        ``"synchronous"`` or a running dask cluster's address, to which each session is
        submitted whole) and ``parallel_sessions`` (sessions at once on this machine).
    **sections
        The parameter sections the step takes (see its body in
        :mod:`calim_helpers.workflow.steps`), passed on unchanged.

    Returns
    -------
    pandas.DataFrame
        One row per session: ``session``, ``status`` (ok / skipped / failed),
        ``seconds``, ``reason``, then the step's summary columns. Also written to
        ``OUT/<experiment>/status/<step>.csv``.
    """
    if step not in STEPS:
        raise ValueError(f"step must be one of {tuple(STEPS)}, got {step!r}")
    scheduler = str(compute["scheduler"])
    n_parallel = int(compute["parallel_sessions"])
    if n_parallel < 1:
        raise CalimInputError(f"compute.parallel_sessions must be >= 1, got {n_parallel}")
    sessions = experiment.sessions
    n = len(sessions)
    rows: list[dict[str, Any]] = [{} for _ in sessions]
    done = 0

    def report(i: int, row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        rows[i] = row
        level = logging.WARNING if row["status"] == "failed" else logging.INFO
        log.log(level, "%s %s [%d/%d] %s: %s in %.1f s%s", experiment.name, step, done, n,
                row["session"], row["status"], row["seconds"],
                f" - {row['reason']}" if row["reason"] else "")

    log.info("%s %s: %d session(s)", experiment.name, step, n)
    if "://" in scheduler:
        with _cluster_client(scheduler) as client:
            futures = {client.submit(run_session, step, experiment, s, sections, pure=False): i
                       for i, s in enumerate(sessions)}
            for future, i in futures.items():  # in session order; they run concurrently
                report(i, future.result())
    else:
        if scheduler not in ("threads", "synchronous"):
            raise CalimInputError(
                f"compute.scheduler must be 'threads', 'synchronous' or a dask cluster "
                f"address such as 'tcp://host:8786', got {scheduler!r}")
        with ThreadPoolExecutor(max_workers=n_parallel) as pool:
            futures = {pool.submit(run_session, step, experiment, s, sections, scheduler): i
                       for i, s in enumerate(sessions)}
            for future in as_completed(futures):
                report(futures[future], future.result())
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(STATUS_COLUMNS))
    first = list(STATUS_COLUMNS)
    table = table[first + [c for c in table.columns if c not in first]]
    io.write_text(experiment.root / "status" / f"{step}.csv", table.to_csv(index=False))
    return table


def run_session(step: str, experiment: Experiment, session: io.Session,
                sections: Mapping[str, Any], scheduler: str = "threads") -> dict[str, Any]:
    """One session through one step: a status row. Never raises (runs on cluster workers)."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {"session": session.id}
    clear_from(experiment, session, step)
    try:
        with dask.config.set(scheduler=scheduler):  # chunk work stays in this process
            row |= {"status": "ok", "reason": ""} | STEPS[step](experiment, session, **sections)
    except Skip as exc:
        row |= {"status": "skipped", "reason": str(exc)}
    except CalimInputError as exc:
        row |= {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one session's failure must not stop others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        row |= {"status": "failed",
                "reason": f"{type(exc).__name__}: {exc} (in {where.name}, "
                          f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno})"}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def clear_from(experiment: Experiment, session: io.Session, step: str) -> None:
    """Remove what this step and the later ones wrote for ``session`` in an earlier run.

    A session that fails or is skipped now must not pass stale results of a previous
    run (possibly with other parameters) on to the next steps and the experiment tables.
    """
    for kind in _STORES_FROM[step]:
        shutil.rmtree(experiment.path(session, kind), ignore_errors=True)
    for kind in ANALYSIS_TABLES:
        experiment.file(session, f"{kind}.csv").unlink(missing_ok=True)


@contextlib.contextmanager
def _cluster_client(address: str):
    """Yield a dask.distributed client of the running cluster at ``address``."""
    try:
        from distributed import Client
    except ImportError:
        raise CalimInputError(
            f"compute.scheduler {address!r} is a dask cluster address, which needs "
            "dask.distributed: pip install 'calim[cluster]'") from None
    try:
        client = Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise CalimInputError(f"compute.scheduler: no dask cluster at {address} ({exc})"
                              ) from None
    try:
        yield client
    finally:
        client.close()
