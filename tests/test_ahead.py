"""Sessions sent through their steps ahead of the notebooks (calim_helpers.workflow.ahead)."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from calim_helpers import demo
from calim_helpers.params import load_params
from calim_helpers.workflow import ahead
from calim_helpers.workflow.experiment import Experiment
from calim_helpers.workflow.runner import run_step
from calim_helpers.workflow.steps import STEPS

distributed = pytest.importorskip("distributed")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run_step_calls(source: str) -> dict[str, set[str]]:
    """The step and the parameter sections of each ``runner.run_step`` call of a notebook."""
    calls = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run_step":
            step = node.args[0].value
            calls[step] = {k.arg for k in node.keywords} - {"compute"}
    return calls


def test_the_sections_of_each_step_are_those_its_notebook_passes():
    found = {}
    for path in sorted(NOTEBOOKS.glob("0*.py")):
        found |= _run_step_calls(path.read_text())
    assert found == {step: set(sections) for step, sections in ahead.STEP_SECTIONS.items()}
    assert tuple(STEPS) == tuple(ahead.STEP_SECTIONS)  # the same steps, in the same order


def test_a_task_key_changes_with_each_thing_that_makes_the_step_and_nothing_else():
    exp, other = SimpleNamespace(root=Path("/out/A")), SimpleNamespace(root=Path("/else/A"))
    s1, s2 = SimpleNamespace(id="d_1"), SimpleNamespace(id="d_2")
    base = ("rois", exp, s1, {"rois": {"source": "expert"}, "figures": {"dpi": 100}}, True)
    key = ahead.task_key(*base)
    assert key == ahead.task_key("rois", exp, s1, {"figures": {"dpi": 100},
                                                   "rois": {"source": "expert"}}, True)
    for changed in (("arpls", *base[1:]), (base[0], other, *base[2:]),
                    (*base[:2], s2, *base[3:]),
                    (*base[:3], {"rois": {"source": "auto"}, "figures": {"dpi": 100}}, True),
                    (*base[:4], False)):
        assert ahead.task_key(*changed) != key


def test_sessions_go_through_every_step_before_any_notebook_asks_and_are_done_once(tmp_path):
    exp_dir = demo.write_demo_experiment(tmp_path / "data", n_frames=60, frame_shape=(40, 48),
                                         seed=3)
    out = (tmp_path / "out").resolve()
    p = load_params()
    figures = p["figures"] | {"per_roi": False, "dpi": 30}
    values = dict(p) | {"figures": figures, "outputs": p["outputs"] | {"nwb": False}}
    e = Experiment.open(exp_dir, out, [])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        compute = p["compute"] | {"scheduler": cluster.scheduler_address}
        with ahead.sessions_ahead(cluster.scheduler_address, e, values, True):
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not all(
                    e.file(s, "features.csv").exists() for s in e.sessions):
                time.sleep(0.5)
            assert all(e.file(s, "features.csv").exists() for s in e.sessions)
            for step, sections in ahead.STEP_SECTIONS.items():
                table = run_step(step, e, compute=compute, **{k: values[k] for k in sections})
                # taken from the computations sent ahead: not redone, not "done earlier"
                assert not table["cached"].any(), (step, table)
                assert (table["seconds"] > 0).all()
                assert set(table["status"]) <= {"ok", "skipped"}
