"""Kernels started ahead: the next notebook's kernel starts while the current one runs.

A notebook's kernel takes about 1 s to start and 2-3 s more to import the helpers (numpy,
dask, xarray, pandas, matplotlib), a fixed cost paid five times per experiment.
:class:`NextKernel` starts the kernel of the next notebook in a background thread, and
has it import the helpers (silently: no output, no execution count), while the current
notebook runs. When the steps run on dask workers, ``calim run`` starts it only once the
current notebook's step cell has run
(:func:`calim_helpers.workflow.papermill.execute_notebook`), so that its 200 MB are not
taken while the workers hold a session's chunks; when the kernels compute the steps
themselves, at once. The notebook then
executes in that kernel exactly as in a new one: its cells, outputs and execution counts
are the same; only the import cell returns at once.

papermill executes a notebook on a kernel started beforehand through the engine
registered here (``"calim-prestarted"``), which hands papermill's notebook client the
kernel manager and has it shut the kernel down afterwards, as for its own kernels.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["COMPUTE_IMPORTS", "ENGINE", "KERNEL_ARGUMENTS", "NextKernel", "preload_for",
           "register_engine"]

log = logging.getLogger("calim.run")

#: The papermill engine that runs a notebook on a kernel started beforehand.
ENGINE = "calim-prestarted"
#: Kernel command-line arguments: the kernel's own log is not ours (its warning about
#: the loopback transport, and the interrupt a kernel that held a dask client gets at
#: shutdown, harmless but logged as an error).
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=CRITICAL",)
#: What a kernel imports before its notebook starts: the modules the notebooks use.
PRELOAD = ("import calim_helpers.workflow.runner, calim_helpers.workflow.steps, "
           "calim_helpers.workflow.views, calim_helpers.plots")
#: Imported too, by notebook, when the kernel itself computes its step (no dask cluster):
#: numba, which the compiled loops otherwise import when first called (84 MB a kernel on
#: a cluster run does without), and what a step imports when first called: the rois
#: step's automatic detection (scikit-image, 20 MB), the analysis step's scipy.signal for
#: the events' peaks and pynwb for the NWB file (0.31 s and 0.26 s once the helpers are
#: imported; 22 and 20 MB). Each kernel runs one notebook: what its step does not use is
#: not imported (listed by running each step in a fresh process).
COMPUTE_IMPORTS: dict[str, tuple[str, ...]] = {
    "01_load": ("numba",),
    "02_rois": ("calim_helpers.detection", "numba"),
    "03_arpls": ("numba",),
    "04_analysis": ("scipy.signal", "calim_helpers.nwb", "numba"),
    "05_aggregate": (),
}


def preload_for(notebook: str, /, *, compute: bool) -> str:
    """Return what the kernel of ``notebook`` imports before it starts.

    :data:`PRELOAD`, and with ``compute`` (the kernel computes the step itself) that
    notebook's :data:`COMPUTE_IMPORTS`; numba is optional (skipped if not installed).

    Examples
    --------
    >>> preload_for("05_aggregate", compute=True) == PRELOAD
    True
    >>> print(preload_for("03_arpls", compute=True).split(chr(10))[1:])
    ['try:', '    import numba', 'except ImportError:', '    pass']
    """
    extra = COMPUTE_IMPORTS[notebook] if compute else ()
    required = [m for m in extra if m != "numba"]
    code = PRELOAD + "".join(f", {m}" for m in required)
    if "numba" in extra:
        code += "\ntry:\n    import numba\nexcept ImportError:\n    pass"
    return code


_TIMEOUT_S = 120.0


def _start(cwd: Path, preload: str = PRELOAD) -> Any:
    """Start a python3 kernel in ``cwd``, run ``preload`` (imports) in it; its manager."""
    from jupyter_client import KernelManager

    # nbclient talks to the kernel with the asynchronous client
    km = KernelManager(kernel_name="python3",
                       client_class="jupyter_client.asynchronous.AsyncKernelClient")
    km.start_kernel(cwd=str(cwd), extra_arguments=list(KERNEL_ARGUMENTS))
    try:
        kc = km.blocking_client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=_TIMEOUT_S)
            kc.execute_interactive(preload, silent=True, store_history=False,
                                   timeout=_TIMEOUT_S)
        finally:
            kc.stop_channels()
    except BaseException:
        _shutdown(km)
        raise
    return km


def _shutdown(km: Any) -> None:
    with contextlib.suppress(Exception):
        km.shutdown_kernel(now=True)
        km.cleanup_resources()


class NextKernel:
    """One kernel started ahead in a folder, taken by the next notebook run there.

    Use::

        with NextKernel() as ahead:
            ahead.prepare(folder)   # starts now, in the background
            ...                     # the current notebook runs
            km = ahead.take(folder) # the started kernel (waiting for it), or None
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="calim-kernel")
        self._next: tuple[Path, Future] | None = None

    def prepare(self, cwd: Path, /, preload: str = PRELOAD) -> None:
        """Start a kernel in ``cwd`` in the background (replacing any not taken).

        ``preload`` is what it imports before its notebook starts (:func:`preload_for`).
        """
        # imported here first: jupyter_client imported by two threads at once fails
        import jupyter_client  # noqa: F401
        import papermill  # noqa: F401

        self.discard()
        self._next = (Path(cwd), self._pool.submit(_start, Path(cwd), preload))

    def take(self, cwd: Path, /) -> Any | None:
        """Return the kernel started in ``cwd`` (waiting for it), or None if there is none.

        None also when it failed to start: the notebook then starts its own kernel.
        """
        if self._next is None or self._next[0] != Path(cwd):
            self.discard()
            return None
        future = self._next[1]
        self._next = None
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - the notebook starts its own kernel
            log.debug("kernel started ahead failed (%s); starting one for the notebook", exc)
            return None

    def discard(self) -> None:
        """Shut down the kernel started ahead, if any was not taken."""
        if self._next is not None:
            future = self._next[1]
            self._next = None
            future.add_done_callback(lambda f: f.exception() or _shutdown(f.result()))

    def close(self) -> None:
        """Discard the kernel not taken; wait for the background thread."""
        self.discard()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> NextKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def register_engine() -> None:
    """Register :data:`ENGINE` with papermill (once; papermill is imported here)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class Prestarted(NBClientEngine):
        """papermill's nbclient engine on the kernel ``km`` started beforehand."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, *, km, log_output=False,
                                     stdout_file=None, stderr_file=None, start_timeout=60,
                                     execution_timeout=None, **kwargs):
            for unused in ("input_path", "timeout", "startup_timeout"):
                kwargs.pop(unused, None)
            client = PapermillNotebookClient(
                nb_man, km=km, kernel_name=kernel_name, log=logger, log_output=log_output,
                stdout_file=stdout_file, stderr_file=stderr_file,
                startup_timeout=start_timeout, timeout=execution_timeout, **kwargs)
            # the kernel is not the client's own, so it would leave it running
            return client.execute(cleanup_kc=True)

    papermill_engines.register(ENGINE, Prestarted)
