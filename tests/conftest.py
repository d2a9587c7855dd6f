"""Shared test set-up: the nbval data, and ONE end-to-end ``calim run`` for every test
that needs a whole run (outputs, executed notebooks, ground-truth recovery)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest


def pytest_configure(config):
    """Before nbval re-runs tests/notebooks/*.ipynb, write the data they were run on.

    Once, in the process that starts pytest-xdist's workers (or in the only process);
    the workers read it.
    """
    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        return
    if getattr(config.option, "nbval_lax", False) or getattr(config.option, "nbval", False):
        from nbval_data import OUT_DIR, write_tiny_experiment

        write_tiny_experiment(fresh=True)
        shutil.rmtree(OUT_DIR, ignore_errors=True)


@pytest.fixture
def without_numba(monkeypatch):
    """Import a module of calim_helpers afresh with numba blocked: ``without_numba(mod)``.

    ``import numba`` then raises ImportError; calim_helpers.compiled is imported again
    for it (and put back afterwards), so its loops stay plain Python.
    """
    import importlib.util
    import sys

    import calim_helpers

    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "calim_helpers.compiled")
    monkeypatch.setattr(calim_helpers, "compiled", calim_helpers.compiled)

    def load(module):
        spec = importlib.util.spec_from_file_location(f"{module.__name__}_without_numba",
                                                      module.__file__)
        plain = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, plain)
        spec.loader.exec_module(plain)
        return plain

    return load


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def e2e(tmp_path_factory):
    """``calim run DEMO OTHER --out OUT`` with every default but the PNG resolution, no
    per-ROI PNGs (test_cli checks those on a smaller run) and the NWB files' species (as
    a lab sharing its data would set it).

    DEMO is the default demo experiment (4 sessions of 600 x 96 x 128 frames with ground
    truth in DEMO_truth; one session moves); OTHER a tiny second condition, so that the
    comparison across experiments runs too, made untidy as labs' folders are
    (tests/_untidy.py: a line ROI, a ROI half outside, a MAX projection, Micro-Manager 2.0
    names, a plain ImageJ TIFF and a movie too short to process). ``stdout`` and
    ``stderr`` hold what the run printed.

    Made once per test session: with pytest-xdist, the first worker that needs it makes
    it in the workers' shared temporary folder while the others wait for it (a file
    lock), and all read the same run.
    """
    import fcntl
    import json

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # each worker's basetemp is a folder of the shared one
    root = shared / "e2e"
    with open(shared / "e2e.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        done = shared / "e2e.json"
        if not done.exists():
            done.write_text(json.dumps(_e2e_run(root)))
        made = json.loads(done.read_text())
    data, out = root / "data", root / "out"
    experiment, other = data / made["experiment"], data / made["other"]
    return SimpleNamespace(code=made["code"], data=data, before=made["before"], out=out,
                           untidy=made["untidy"], options=made["options"],
                           stdout=made["stdout"], stderr=made["stderr"],
                           experiment=experiment, other=other, truth=data / "DEMO_truth",
                           root=out / experiment.name)


def _e2e_run(root: Path) -> dict:
    """Write the experiments of :func:`e2e` under ``root``, run them; what the run said."""
    from _untidy import make_untidy

    from calim_helpers import demo
    from calim_helpers.cli import main

    data = root / "data"
    experiment = demo.write_demo_experiment(data, seed=0)
    other = demo.write_demo_experiment(data, name="OTHER", n_frames=200, frame_shape=(48, 64),
                                       seed=4)
    untidy = make_untidy(other)
    before = tree_digest(data)
    out = root / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    options = ["-q", "-p", "figures.dpi", "50", "-p", "figures.per_roi", "false",
               "-p", "nwb.species", "Mus musculus"]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["run", str(experiment), str(other), "--out", str(out), *options])
    return {"code": code, "before": before, "untidy": {k: str(v) for k, v in untidy.items()},
            "options": options, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "experiment": experiment.name, "other": other.name}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist: send each test module (and the notebooks' cells, together) to one worker.

    A module's fixtures are then made once; nbval's notebooks run one after the other
    in one kernel per notebook, in the order of :func:`pytest_collection_modifyitems`
    (notebook 02 reads what 01 wrote, 00 what 01-05 wrote).
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndNotebooks(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/notebooks/"):
                return "tests/notebooks"
            return super()._split_scope(nodeid)

    return ModulesAndNotebooks(config, log)


def pytest_collection_modifyitems(config, items):
    """nbval: 00_explore reads what notebooks 01-05 wrote, so it runs after them."""
    explore = [i for i in items if i.nodeid.startswith("tests/notebooks/00_explore.ipynb")]
    if explore:
        items[:] = [i for i in items if i not in explore] + explore
