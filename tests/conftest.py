"""Shared test set-up: the nbval data, and ONE end-to-end ``calim run`` for every test
that needs a whole run (outputs, executed notebooks, ground-truth recovery)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest


def pytest_configure(config):
    """Before nbval re-runs tests/notebooks/*.ipynb, write the data they were run on."""
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
    """
    from _untidy import make_untidy

    from calim_helpers import demo
    from calim_helpers.cli import main

    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    experiment = demo.write_demo_experiment(data, seed=0)
    other = demo.write_demo_experiment(data, name="OTHER", n_frames=200, frame_shape=(48, 64),
                                       seed=4)
    untidy = make_untidy(other)
    before = tree_digest(data)
    out = root / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        options = ["-q", "-p", "figures.dpi", "50", "-p", "figures.per_roi", "false",
                   "-p", "nwb.species", "Mus musculus"]
        code = main(["run", str(experiment), str(other), "--out", str(out), *options])
    return SimpleNamespace(code=code, data=data, before=before, out=out, untidy=untidy,
                           options=options,
                           stdout=stdout.getvalue(), stderr=stderr.getvalue(),
                           experiment=experiment, other=other, truth=data / "DEMO_truth",
                           root=out / experiment.name)


def pytest_collection_modifyitems(config, items):
    """nbval: 00_explore reads what notebooks 01-05 wrote, so it runs after them."""
    explore = [i for i in items if i.nodeid.startswith("tests/notebooks/00_explore.ipynb")]
    if explore:
        items[:] = [i for i in items if i not in explore] + explore
