"""The notebooks' contract: thin, parameterized from default.yaml, references in sync.

The nbval references in tests/notebooks/ are re-executed by ``pytest --nbval-lax`` (see
pyproject.toml); these tests check that they were produced from the current sources.
The executed notebooks of a whole ``calim run`` are checked in test_cli.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

from calim_helpers.params import load_params
from calim_helpers.resources import notebook_dir
from calim_helpers.workflow.papermill import NOTEBOOKS, RUN_PARAMETERS

REF_DIR = Path(__file__).resolve().parent / "notebooks"
ALL = ("00_explore", *NOTEBOOKS)
# the exploration notebook's own choices (not pipeline parameters)
EXPLORE = {"session", "roi", "refit_lam", "refit_cutoff_s", "event_threshold",
           "event_prominence"}


def _code_cells(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"
            and "injected-parameters" not in c.metadata.get("tags", [])]


def _parameters(nb) -> dict[str, object]:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    values = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.AnnAssign), f"parameters cell: {ast.unparse(node)}"
        assert ast.unparse(node.annotation) in ("str", "int", "float", "bool", "list", "dict")
        values[node.target.id] = ast.literal_eval(node.value)
    for line in cell.source.splitlines():
        assert "#" in line, f"parameter without its comment: {line!r}"
    return values


def test_notebooks_are_numbered_in_the_order_they_run():
    assert [int(n[:2]) for n in NOTEBOOKS] == list(range(1, len(NOTEBOOKS) + 1))
    assert sorted(p.stem for p in notebook_dir().glob("*.py")) == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_parameters_default_to_the_packaged_default_yaml(name):
    values = _parameters(jupytext.read(notebook_dir() / f"{name}.py"))
    defaults = load_params()
    for key, value in values.items():
        if key in RUN_PARAMETERS or (name == "00_explore" and key in EXPLORE):
            continue
        assert key in defaults, f"{name}: parameter {key!r} is not in default.yaml"
        assert value == defaults[key], f"{name}: {key} = {value!r}, default.yaml {defaults[key]!r}"
    assert values["experiment_dir"] == "../demo/DEMO" and values["out_dir"] == "../out"


@pytest.mark.parametrize("name", ALL)
def test_notebooks_stay_thin(name):
    source = (notebook_dir() / f"{name}.py").read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        assert not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.For | ast.While), (
            f"{name}.py: {type(node).__name__} at line {node.lineno} belongs in calim_helpers")
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(isinstance(n, ast.ImportFrom) and n.module.startswith("calim_helpers")
               for n in imports), f"{name}: notebooks import only calim_helpers"
    nb = jupytext.read(notebook_dir() / f"{name}.py")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert _code_cells(nb)[-1].startswith("# NBVAL_CHECK_OUTPUT")


@pytest.mark.parametrize("name", ALL)
def test_reference_is_in_sync_with_source(name):
    ref = REF_DIR / f"{name}.ipynb"
    assert ref.exists(), f"{ref} missing: run `make nbval-refs`"
    source = jupytext.read(notebook_dir() / f"{name}.py")
    reference = nbformat.read(ref, 4)
    assert _code_cells(reference) == _code_cells(source), (
        f"{ref.name} has drifted from notebooks/{name}.py: run `make nbval-refs`")
    checked = [c for c in reference.cells if "NBVAL_CHECK_OUTPUT" in c.get("source", "")]
    assert checked and checked[-1].outputs, f"{ref.name}: the summary cell has no output"


def test_notebooks_run_unedited_on_the_demo_layout(tmp_path):
    """As in JupyterLab after `make demo`: defaults ../demo/DEMO and ../out, no parameters.

    00_explore then runs unedited on what the others wrote. (The one-session views are
    tested in-process in test_views.py.)
    """
    from calim_helpers import demo
    from calim_helpers.workflow.papermill import execute_notebook

    # one session (the one 00_explore opens by default): every session's path through the
    # notebooks is run by test_cli.py's end-to-end run
    demo.write_demo_experiment(tmp_path / "demo", n_frames=100, frame_shape=(40, 48), seed=2,
                               sessions=["230404_5"])
    nb_dir = tmp_path / "notebooks"
    for name in NOTEBOOKS:
        error = execute_notebook(name, {}, nb_dir / f"{name}.ipynb", source_dir=tmp_path,
                                 html=False)
        assert error == "", f"{name}: {error}"
    assert (tmp_path / "out" / "DEMO" / "results_norm.csv").exists()
    assert (tmp_path / "out" / "DEMO" / "heatmap.pdf").exists()
    error = execute_notebook("00_explore", {}, nb_dir / "00_explore.ipynb",
                             source_dir=tmp_path, html=False)
    assert error == "", f"00_explore: {error}"
    nb = nbformat.read(nb_dir / "00_explore.ipynb", 4)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data",
                                                                                       {})]
    assert len(images) >= 3, "00_explore: ROI map, re-fit and events figures"
