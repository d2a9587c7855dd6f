"""Sessions ahead of the notebooks: each session goes through its steps without waiting.

With the steps on dask workers, each notebook sends every session through its step and
waits for all of them before the next notebook starts: a worker whose session is done
waits for the slowest one, and for the notebook's figures and the next kernel's start,
at every step. ``calim run`` therefore sends each session on to its next step as soon as
its last one is done (:func:`sessions_ahead`), while the notebooks run as usual. The
notebooks' own requests for a session's step carry the same task key
(:func:`task_key`), so the dask scheduler gives them the computation already running or
done instead of starting it again: every step of a session runs once, and the notebooks
show the same status rows and figures.

The parameter sections of a step (:data:`STEP_SECTIONS`) are those its notebook passes
to :func:`calim_helpers.workflow.runner.run_step` (tested); a key is a SHA-256 of the
step, the session, the output folder, those sections and ``resume``, so a request with
other parameters is another task.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["STEP_SECTIONS", "run_session_task", "sessions_ahead", "task_key"]

log = logging.getLogger("calim.run")

#: The parameter sections each step takes, in the order of the steps.
STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "load": ("load", "registration", "denoise", "downsample", "figures", "outputs"),
    "rois": ("rois", "detection", "background", "neuropil", "figures"),
    "arpls": ("arpls", "normalize", "trim_start", "figures"),
    "analysis": ("events", "synchrony", "qc", "heatmap", "figures", "outputs", "nwb"),
}


def task_key(step: str, experiment: Any, session: Any, sections: Mapping[str, Any],
             resume: bool, /) -> str:
    """Return the dask key of a session's step, the same for the same parameters.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> e, s = NS(root="/out/A"), NS(id="04-04-23_230404_5")
    >>> task_key("load", e, s, {"load": {"chunk_time": 50}}, True)[:29]
    'calim-load-04-04-23_230404_5-'
    >>> (task_key("load", e, s, {"load": {"chunk_time": 50}}, True)
    ...  == task_key("load", e, s, {"load": {"chunk_time": 20}}, True))
    False
    """
    content = {"root": str(experiment.root), "session": session.id, "step": step,
               "sections": sections, "resume": bool(resume)}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode())
    return f"calim-{step}-{session.id}-{digest.hexdigest()[:16]}"


def run_session_task(step: str, experiment: Any, session: Any, sections: Mapping[str, Any],
                     resume: bool) -> dict[str, Any]:
    """:func:`calim_helpers.workflow.runner.run_session` on a worker, its warnings recorded.

    Defined here so that the process sending it need not import the steps.
    """
    from calim_helpers.workflow.runner import run_session

    return run_session(step, experiment, session, sections, resume=resume,
                       echo_warnings=False)


def _submit(client: Any, step: str, experiment: Any, session: Any,
            values: Mapping[str, Any], resume: bool) -> Any:
    sections = {name: values[name] for name in STEP_SECTIONS[step]}
    return client.submit(run_session_task, step, experiment, session, sections, resume,
                         key=task_key(step, experiment, session, sections, resume))


@contextlib.contextmanager
def sessions_ahead(address: str, experiment: Any, values: Mapping[str, Any],
                   resume: bool, /) -> Iterator[None]:
    """Send every session of ``experiment`` through all its steps on the cluster at ``address``.

    Each session's first step is sent at once, each later one when the step before it is
    done, from a thread of this process; ``values`` holds the parameter sections (the
    notebooks' parameters). The computations are kept until the context exits (the
    notebooks have taken them by then). Failures are not raised here: the notebooks
    report them, as their status rows always do. If the cluster cannot be reached, the
    notebooks run the steps themselves.
    """
    from distributed import Client, as_completed

    try:
        client = Client(address, set_as_default=False)
    except OSError as exc:  # the notebooks say so, naming the scheduler
        log.debug("no sessions ahead: %s", exc)
        yield
        return
    steps: Sequence[str] = tuple(STEP_SECTIONS)
    stop = threading.Event()
    futures: list[Any] = []

    def chain() -> None:
        try:
            next_of = {}
            for session in experiment.sessions:
                future = _submit(client, steps[0], experiment, session, values, resume)
                futures.append(future)
                next_of[future.key] = (session, 1)
            pending = as_completed(futures[:], loop=client.loop)
            for future in pending:
                session, k = next_of.pop(future.key)
                if stop.is_set() or k == len(steps) or future.status != "finished":
                    continue
                following = _submit(client, steps[k], experiment, session, values, resume)
                futures.append(following)
                next_of[following.key] = (session, k + 1)
                pending.add(following)
        except Exception as exc:  # noqa: BLE001 - an optimisation: the notebooks go on
            if not stop.is_set():
                log.warning("sending the sessions ahead of the notebooks failed (%s: %s)",
                            type(exc).__name__, exc)

    thread = threading.Thread(target=chain, name="calim-ahead", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        client.close()
        thread.join(timeout=30)
