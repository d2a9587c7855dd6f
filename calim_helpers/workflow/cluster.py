"""Where the sessions run: a dask.distributed cluster on this machine, or one already running.

``calim run`` processes the sessions of an experiment in parallel on dask.distributed
workers, each session whole on one worker (:func:`calim_helpers.workflow.runner.run_step`
submits them). By default it starts a :class:`distributed.LocalCluster` with one
single-threaded worker process per core (``compute.workers: auto``) for the length of
the run, each with a bounded memory (``compute.worker_memory``), and gives its address
to the notebooks. With ``compute.scheduler`` set to a cluster's address
(``calim run --scheduler tcp://host:8786``) the sessions go to that cluster instead;
its workers must see the same input and output paths.

A session is deterministic whatever worker computes it, so the tables are
byte-identical for any number of workers and on any scheduler.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["cluster_for_run", "give_back_memory", "import_in_background", "import_steps",
           "large_blocks_to_os", "local_cluster", "machine_cores", "on_workers",
           "resolve_workers", "warm_compiled"]

log = logging.getLogger("calim.run")


def machine_cores() -> int:
    """Return the number of cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: Any, /) -> int:
    """Return the worker count that ``compute.workers`` asks for.

    Examples
    --------
    >>> resolve_workers(3)
    3
    >>> resolve_workers("auto") == machine_cores()
    True
    """
    if workers == "auto":
        return machine_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"compute.workers must be 'auto' or an integer >= 1, got {workers!r}")
    return workers


def warm_compiled() -> None:
    """Compile (or load from numba's disk cache) the compiled loops once, in this process.

    Run on one worker as a local cluster starts (:func:`cluster_for_run`): the others
    then load them from the cache instead of compiling them at the same time. A session
    that reaches another worker before the cache is written (only on a run whose loops
    are not cached yet) compiles what it needs itself; numba writes its cache files
    under temporary names, renamed once complete.
    """
    import numpy as np
    import xarray as xr

    from calim_helpers import baseline, registration

    rng = np.random.default_rng(0)
    traces = 100.0 + rng.normal(size=(2, 40))
    baseline.arpls(traces, lam=10.0)  # also noise.noise_sigma
    baseline.arpls(traces, lam=10.0, max_iter=1)  # and the re-fit of fits not converged
    for dtype in (np.uint16, np.float32):  # Micro-Manager stacks; the denoised movie
        frames = xr.DataArray(np.zeros((1, 4, 4), dtype), dims=("time", "y", "x"))
        registration.apply_shifts(frames, np.full((1, 2), 0.5)).compute()
        registration.estimate_shifts(frames, np.zeros((4, 4)))  # the binning and high-pass


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_MMAP_THRESHOLD = 16 << 20  # bytes


@functools.cache
def large_blocks_to_os() -> bool:
    """Make this process give freed blocks of 16 MB or more back to the system at once.

    glibc's malloc serves blocks up to a threshold that grows to 32 MB from its heaps,
    where freed memory stays with the process: the chunks of a movie (tens of MB,
    allocated and freed over and over by dask's threads) then leave the process about
    100 MB larger than what it uses at any time. Fixing the threshold maps larger blocks
    separately, whose pages are then mapped afresh at each allocation. A full-size load
    step on one thread (``run_session``, alternating runs): no fixed threshold, peak
    594 MB, 17.3-17.8 s; 16 MB, 535-542 MB, median 15.9 s (5 runs); 1 MB, 519 MB, median
    19.8 s (7 runs). ``calim run`` on 2 full-size sessions, 2 workers (3 alternating runs):
    median 55.2 s at 16 MB against 57.5 s at 1 MB, process tree 1386-1477 MB against
    1390-1433 MB; with ``--workers 1`` (the kernel computes, 2 threads) 67.4 s and a
    1141 MB kernel against 70.9 s and 1024 MB. Once per process; False where it does not
    apply.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False


def give_back_memory() -> None:
    """Collect garbage and return the free pages of the heap to the system (glibc).

    Called after each step of a session
    (:func:`calim_helpers.workflow.runner.run_session`): a worker then waits for the next
    step about 40 MB smaller (a full-size session's analysis step: 418 -> 379 MB), while
    the next notebook's kernel starts beside it.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def import_in_background(name: str, /) -> None:
    """Import module ``name`` in a thread of this process, unless it is imported already.

    Called once a session's load step is done
    (:func:`calim_helpers.workflow.runner.run_session`): the rois step's automatic
    detection (scikit-image, about 20 MB) is then imported while the process waits for
    the next notebook, not held during the load step, the run's peak of memory. A step
    that needs the module meanwhile waits for the import (Python's per-module lock).
    """
    if name not in sys.modules:
        threading.Thread(target=importlib.import_module, args=(name,),
                         name="calim-import", daemon=True).start()


@contextlib.contextmanager
def local_cluster(n_workers: int, /, *, memory_limit: str | int = "auto") -> Iterator[str]:
    """Start a dask.distributed cluster of ``n_workers`` processes; yield its address.

    Each worker is one process with one thread (a session at a time; the session's own
    chunk work uses dask's threads inside it) and at most ``memory_limit`` of memory
    (``"auto"``: the machine's memory divided among the workers; or e.g. ``"3GB"``).
    The cluster listens on the loopback interface only and is closed on exit. It has no
    dashboard, so its workers do not sample their threads' stacks for one (a full-size
    session's load step on 2 workers: 16.4-17.3 s instead of 17.3-18.3 s).
    """
    import dask
    from distributed import LocalCluster

    # sessions queued in the scheduler go to a worker only when it is free (at dask's
    # default saturation of 1.1 a single-threaded worker takes two, one of them waiting
    # there while another worker may become free first)
    with dask.config.set({"distributed.worker.profile.enabled": False,  # read by nannies
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               memory_limit=memory_limit, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@contextlib.contextmanager
def cluster_for_run(compute: dict[str, Any], n_sessions: int, /) -> Iterator[dict[str, Any]]:
    """Yield the ``compute`` section the notebooks of one run get.

    With ``scheduler: threads`` and more than one worker for more than one session, a
    local cluster (:func:`local_cluster`) is started for the run and its address is
    put in ``scheduler``; otherwise ``compute`` is yielded unchanged (an address given
    by the user, ``synchronous``, or a single worker: the sessions run in the kernel).
    """
    if compute["scheduler"] != "threads" or not on_workers(compute, n_sessions):
        yield dict(compute)
        return
    n = min(resolve_workers(compute["workers"]), max(n_sessions, 1))
    log.info("starting %d dask worker(s), memory limit %s each", n, compute["worker_memory"])
    with local_cluster(n, memory_limit=compute["worker_memory"]) as address:
        # the notebooks start meanwhile: a session sent before the warm-up has ended
        # waits for its worker (the first kernel's setup overlaps the 1.3-1.9 s it takes)
        warm = threading.Thread(target=_warm_or_warn, args=(address, n), name="calim-warm",
                                daemon=True)
        warm.start()
        try:
            yield dict(compute) | {"scheduler": address}
        finally:
            warm.join(timeout=_WARM_TIMEOUT_S)


def on_workers(compute: dict[str, Any], n_sessions: int, /) -> bool:
    """Whether a run's steps run on dask workers (its own local cluster or the user's)."""
    if "://" in str(compute["scheduler"]):
        return True
    return (compute["scheduler"] == "threads"
            and min(resolve_workers(compute["workers"]), max(n_sessions, 1)) > 1)


_WARM_TIMEOUT_S = 600.0  # compiling every loop with an empty numba cache: 21 s here


def _warm_or_warn(address: str, n_workers: int, /) -> None:
    """:func:`_warm_one_worker`, its failure logged (the sessions then warm themselves)."""
    try:
        _warm_one_worker(address, n_workers)
    except Exception as exc:  # noqa: BLE001 - an optimisation: the run goes on without it
        log.warning("warming the dask workers failed (%s: %s); each worker compiles or "
                    "loads the compiled loops itself", type(exc).__name__, exc)


def _warm_one_worker(address: str, n_workers: int, /) -> None:
    """Run :func:`warm_compiled` on one worker of the cluster at ``address``, then return.

    The others load the loops from numba's cache afterwards instead of compiling them at
    the same time; meanwhile they import the steps' modules
    (:func:`import_steps`), which they would otherwise do when their first session
    arrives. The process that started the cluster never imports numba. Runs in a thread
    beside the notebooks (:func:`cluster_for_run`); a session sent meanwhile waits
    for its worker. Both run outside dask's task scheduling (``Client.run``): as a task,
    the warm-up made the scheduler send the first sessions to the other workers, all of
    them to one worker when there were two.
    """
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.wait_for_workers(n_workers)
        names = sorted(client.scheduler_info()["workers"])
        warm = threading.Thread(target=client.run, args=(warm_compiled,),
                                kwargs={"workers": names[:1]}, name="calim-warm-first",
                                daemon=True)
        warm.start()
        if names[1:]:
            client.run(import_steps, workers=names[1:])
        warm.join()


def import_steps() -> None:
    """Import the modules a session's steps use (the steps, xarray, zarr, scipy)."""
    import calim_helpers.workflow.runner  # noqa: F401 - imports the steps
