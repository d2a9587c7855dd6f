"""Run one step over every session of an experiment: fan-out, failure isolation, status.

Each session goes through the step on its own: a session that fails is reported
(session, step, reason) in the returned status table and in
``OUT/<experiment>/status/<step>.csv``, and the other sessions still complete. A
session whose input (the previous step's store) is missing is reported ``skipped``.
Progress is reported through :mod:`logging` (logger ``calim.workflow``), one record
per finished session.

Resuming: when a session's step completes, a marker
``<session folder>/.calim/<step>.json`` records its fingerprint -- a SHA-256 over the
step's parameter sections (of ``outputs``, the load step takes only ``movie``), the
CALIM version, the identity (name, size, modification
time) of the input files it reads and the fingerprint of the step before it -- and its
status row. With ``compute.resume`` (the default), a later run skips the session's step
when the fingerprint is unchanged and its outputs exist; a changed parameter changes
that step's fingerprint and, through the chain, every later step's. A marker is written
last, after every output of the step is in place, so a run killed at any moment leaves
no marker for unfinished work, and the next run redoes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import dask
import pandas as pd
from threadpoolctl import threadpool_limits

from calim_helpers import __version__, io
from calim_helpers.errors import CalimInputError, CalimWarning
from calim_helpers.workflow import ahead, cluster
from calim_helpers.workflow.experiment import STORES, Experiment
from calim_helpers.workflow.steps import ANALYSIS_TABLES, STEPS, Skip

__all__ = ["STATUS_COLUMNS", "run_step"]

log = logging.getLogger("calim.workflow")

#: The first columns of every status table; the step's summary columns follow.
STATUS_COLUMNS = ("session", "status", "seconds", "reason", "cached", "warnings")

#: How long to wait for a dask cluster named in ``compute.scheduler`` to answer.
CONNECT_TIMEOUT = "20s"

# the stores a step and the later ones write: removed before a step runs on a session
_STORES_FROM = {"load": ("load", "traces", "result"), "rois": ("traces", "result"),
                "arpls": ("result",), "analysis": ()}
_ORDER = tuple(ahead.STEP_SECTIONS)  # the steps in order (STEPS holds the same, tested)
# the files each step writes in a session's folder (beside its store), as glob patterns
_FILES = {"load": ("shifts.csv", "{s}_shifts.png", "{s}_registration.png",
                   "{s}_corrected.ome.tif"),
          "rois": ("{s}_rois.png", "ROIs_auto.zip"),
          "arpls": ("{s}_mask*.png", "{s}_rois.pdf"),
          "analysis": ("{s}_raster.png", "{s}_correlation.png", "{s}_clusters.png",
                       "{s}_summary.png", "{s}_qc.png", "{s}.nwb")}
_UPSTREAM = dict(zip(_ORDER[1:], _ORDER[:-1], strict=True))  # the step before each
# sections of which a step uses a few keys: only those are part of its fingerprint (turning
# the NWB file on must not re-run the load step, which writes only the corrected movie)
_KEYS_USED = {("load", "outputs"): ("movie",)}


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
        submitted whole), ``workers`` (with ``"threads"``: the cores the step's chunk
        work uses in this process, shared by the sessions running at once),
        ``parallel_sessions`` (sessions at once in this process) and ``resume`` (skip
        sessions whose step is already done with the same inputs and parameters).
    **sections
        The parameter sections the step takes (see its body in
        :mod:`calim_helpers.workflow.steps`), passed on unchanged.

    Returns
    -------
    pandas.DataFrame
        One row per session: ``session``, ``status`` (ok / skipped / failed),
        ``seconds``, ``reason``, ``cached`` (done by an earlier run), ``warnings`` (the
        warnings the session raised, `` | ``-separated), then the step's summary
        columns. Also written to ``OUT/<experiment>/status/<step>.csv``.
    """
    if step not in STEPS:
        raise ValueError(f"step must be one of {tuple(STEPS)}, got {step!r}")
    scheduler = str(compute["scheduler"])
    n_parallel = int(compute["parallel_sessions"])
    resume = bool(compute["resume"])
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
        how = "done earlier (unchanged)" if row.get("cached") else f"in {row['seconds']:.1f} s"
        log.log(level, "%s %s [%d/%d] %s: %s %s%s", experiment.name, step, done, n,
                row["session"], row["status"], how,
                f" - {row['reason']}" if row["reason"] else "")

    log.info("%s %s: %d session(s)", experiment.name, step, n)
    if "://" in scheduler:
        with _cluster_client(scheduler) as client:
            # keyed by step, session and parameters: a session that `calim run` sent ahead
            # of this notebook (workflow.ahead) is taken as it runs or finished, not redone
            futures = {client.submit(ahead.run_session_task, step, experiment, s, sections,
                                     resume, key=ahead.task_key(step, experiment, s, sections,
                                                                resume)): i
                       for i, s in enumerate(sessions)}
            for future, i in futures.items():  # in session order; they run concurrently
                try:
                    row = future.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker killed over its memory
                    row = {"session": sessions[i].id, "status": "failed", "cached": False,
                           "seconds": 0.0, "warnings": "",
                           "reason": f"on the dask cluster: {type(exc).__name__}: {exc}"}
                report(i, row)
    else:
        if scheduler not in ("threads", "synchronous"):
            raise CalimInputError(
                f"compute.scheduler must be 'threads', 'synchronous' or a dask cluster "
                f"address such as 'tcp://host:8786', got {scheduler!r}")
        # compute.workers is the number of cores used, here as threads of this process
        threads = max(1, cluster.resolve_workers(compute["workers"]) // min(n_parallel, n or 1))
        # dask's configuration and BLAS's limit are global to the process: set once for
        # the sessions run at once
        with dask.config.set(scheduler=scheduler, num_workers=threads), \
                threadpool_limits(limits=threads), ThreadPoolExecutor(n_parallel) as pool:
            futures = {pool.submit(run_session, step, experiment, s, sections,
                                   resume=resume): i
                       for i, s in enumerate(sessions)}
            for future in as_completed(futures):
                report(futures[future], future.result())
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(STATUS_COLUMNS))
    first = list(STATUS_COLUMNS)
    table = table[first + [c for c in table.columns if c not in first]]
    io.write_text(experiment.root / "status" / f"{step}.csv", table.to_csv(index=False))
    return table


def run_session(step: str, experiment: Experiment, session: io.Session,
                sections: Mapping[str, Any], *, resume: bool = True,
                echo_warnings: bool = True) -> dict[str, Any]:
    """One session through one step: a status row. Never raises (runs on cluster workers).

    On a dask.distributed worker the step's chunk work (and BLAS) uses that worker's
    threads (one on the local cluster's workers), in the worker's process; elsewhere it
    uses dask's configuration as the caller set it (:func:`run_step`: ``compute.workers``
    threads).

    The warnings the step raises are recorded in the row and, with ``echo_warnings``,
    raised again (so they also show where the step runs; a cluster worker only records
    them). With ``parallel_sessions > 1`` on threads, a warning may
    be recorded with a session running at the same time.
    """
    t0 = time.perf_counter()
    row: dict[str, Any] = {"session": session.id}
    fingerprint = step_fingerprint(step, experiment, session, sections)
    if resume and fingerprint is not None:
        done = _read_marker(experiment, session, step)
        if done is not None and done.get("fingerprint") == fingerprint and outputs_exist(
                experiment, session, step):
            return done["row"] | {"seconds": 0.0, "cached": True}
    clear_from(experiment, session, step)
    cluster.large_blocks_to_os()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with _on_worker_threads():
                row |= {"status": "ok", "reason": ""} | STEPS[step](experiment, session,
                                                                    **sections)
        except Skip as exc:
            row |= {"status": "skipped", "reason": str(exc)}
        except CalimInputError as exc:
            row |= {"status": "failed", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one session's failure must not stop others
            where = traceback.extract_tb(exc.__traceback__)[-1]
            row |= {"status": "failed",
                    "reason": f"{type(exc).__name__}: {exc} (in {where.name}, "
                              f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno})"}
    cluster.give_back_memory()
    if step == "load" and row["status"] == "ok":
        cluster.import_in_background("calim_helpers.detection")  # for the rois step
    caught, glyphs = _missing_glyphs(caught)
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if glyphs:
        messages.append(f"CalimWarning: {glyphs}")
    for w in caught if echo_warnings else ():
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if glyphs and echo_warnings:
        warnings.warn(glyphs, CalimWarning, stacklevel=2)
    row["warnings"] = " | ".join(messages)
    row["cached"] = False
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if row["status"] == "ok" and fingerprint is not None:
        _write_marker(experiment, session, step, fingerprint, row)
    return row


#: matplotlib's warning for a character its fonts lack, one per character and font list
_GLYPH = re.compile(r"Glyph (\d+) \(.*\) missing from font\(s\) (.+)\.$")


def _missing_glyphs(caught: list[warnings.WarningMessage], /
                    ) -> tuple[list[warnings.WarningMessage], str]:
    """Return the warnings but matplotlib's missing-glyph ones, and one message for those.

    A ROI or experiment named in a script the fonts lack (Chinese, Japanese, Korean, ...)
    otherwise gives one warning per character in every status row and the run summary.
    """
    rest, chars, fonts = [], {}, {}
    for w in caught:
        found = _GLYPH.match(str(w.message))
        if found is None:
            rest.append(w)
        else:
            chars[chr(int(found[1]))] = None
            fonts[found[2]] = None
    if not chars:
        return rest, ""
    return rest, (f"{len(chars)} character(s) ({' '.join(chars)}) of figure texts (ROI, "
                  f"session or experiment names) are in no font matplotlib uses "
                  f"({', '.join(fonts)}) and show as empty boxes in the figures; install "
                  f"a font that has them (e.g. Noto Sans CJK) and add it to matplotlib's "
                  f"font.sans-serif list, or rename")


def _worker_threads() -> int | None:
    """Threads of the dask.distributed worker running this code (None: not on a worker)."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _on_worker_threads() -> Iterator[None]:
    """On a dask.distributed worker: compute chunks in this process with its threads.

    A session sent to a worker computes its chunks with that many threads (one on the
    local cluster's single-threaded workers) and BLAS with as many, so that N workers use
    N cores rather than N x cores threads competing for them. Elsewhere: nothing.
    """
    n = _worker_threads()
    if n is None:
        yield
        return
    with dask.config.set(scheduler="threads", num_workers=n), threadpool_limits(limits=n):
        yield


def _file_identity(path: Any) -> list[Any] | None:
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return [str(path), None]
    return [Path(path).name, st.st_size, st.st_mtime_ns]


def step_fingerprint(step: str, experiment: Experiment, session: io.Session,
                     sections: Mapping[str, Any]) -> str | None:
    """SHA-256 identifying a session's step: parameters, version, inputs, the step before.

    None when the step before it has no completed marker (nothing to compare with).
    """
    used = {k: ({key: sections[k][key] for key in _KEYS_USED[step, k]}
                if (step, k) in _KEYS_USED else sections[k]) for k in sorted(sections)}
    content: dict[str, Any] = {"step": step, "version": __version__, "sections": used}
    if step == "load":
        content["inputs"] = [_file_identity(f) for f in (*session.stack_files,
                                                         session.metadata_file)]
    else:
        before = _read_marker(experiment, session, _UPSTREAM[step])
        if before is None:
            return None
        content["upstream"] = before["fingerprint"]
    if step == "rois":
        content["roi_file"] = _file_identity(session.roi_file)
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _marker(experiment: Experiment, session: io.Session, step: str) -> Path:
    return experiment.session_dir(session) / ".calim" / f"{step}.json"


def _read_marker(experiment: Experiment, session: io.Session, step: str) -> dict | None:
    try:
        return json.loads(_marker(experiment, session, step).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(experiment: Experiment, session: io.Session, step: str, fingerprint: str,
                  row: Mapping[str, Any]) -> None:
    safe = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
            if k not in ("seconds", "cached")}
    io.write_text(_marker(experiment, session, step),
                  json.dumps({"fingerprint": fingerprint, "row": safe}, default=str))


def outputs_exist(experiment: Experiment, session: io.Session, step: str) -> bool:
    """Whether the main output of ``step`` for ``session`` is there (store or tables)."""
    if step == "analysis":
        return experiment.file(session, "features.csv").exists()
    return experiment.has(session, STORES[step])


def clear_from(experiment: Experiment, session: io.Session, step: str) -> None:
    """Remove what this step and the later ones wrote for ``session`` in an earlier run.

    A session that fails or is skipped now must not pass stale results of a previous
    run (possibly with other parameters) on to the next steps and the experiment tables.
    """
    for later in _ORDER[_ORDER.index(step):]:  # markers first: never a marker without outputs
        _marker(experiment, session, later).unlink(missing_ok=True)
    for kind in _STORES_FROM[step]:
        shutil.rmtree(experiment.path(session, kind), ignore_errors=True)
    for kind in ANALYSIS_TABLES:
        experiment.file(session, f"{kind}.csv").unlink(missing_ok=True)
    folder = experiment.session_dir(session)
    for later in _ORDER[_ORDER.index(step):]:
        for pattern in _FILES[later]:
            for path in folder.glob(pattern.format(s=session.name)):
                path.unlink(missing_ok=True)
    if folder.exists():  # temporary files of a run that was killed while writing
        for part in folder.glob(".*.part-*"):
            shutil.rmtree(part) if part.is_dir() else part.unlink(missing_ok=True)


@contextlib.contextmanager
def _cluster_client(address: str):
    """Yield a dask.distributed client of the running cluster at ``address``."""
    from distributed import Client

    try:
        client = Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise CalimInputError(f"compute.scheduler: no dask cluster at {address} ({exc})"
                              ) from None
    try:
        yield client
    finally:
        client.close()
