"""Regenerate the nbval regression references in tests/notebooks/ from notebooks/*.py.

Usage (from the repository root)::

    .venv/bin/python tools/regenerate_nbval.py      # or: make nbval-refs

Writes the tiny deterministic demo experiment to ``tests/notebooks/_data/`` (see
``tests/conftest.py``, which writes the same data before nbval runs), executes notebooks
01-05, then 00_explore, on it with the default parameters (papermill, kernel started in
tests/notebooks/ so the injected paths are relative), and keeps only the outputs that
nbval compares (cells marked ``# NBVAL_CHECK_OUTPUT``), so the references stay small and
readable in diffs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from nbval_data import DATA_DIR, OUT_DIR, REF_DIR, write_tiny_experiment  # noqa: E402

from calim_helpers.params import load_params  # noqa: E402
from calim_helpers.workflow.papermill import NOTEBOOKS, execute_notebook  # noqa: E402


def _strip(path: Path) -> None:
    nb = nbformat.read(path, 4)
    for k, cell in enumerate(nb.cells):
        cell.id = f"cell-{k}"  # stable ids: references change only when their content does
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
            cell.outputs = []  # nbval --nbval-lax compares only the marked cells
        cell.metadata.pop("execution", None)
        cell.metadata.get("papermill", {}).clear()
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, path)


def main() -> None:
    """Write the tiny data, execute the notebooks, store the stripped references."""
    exp = write_tiny_experiment(fresh=True)
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    params = load_params() | {"experiment_dir": str(exp.relative_to(REF_DIR)),
                              "out_dir": str(OUT_DIR.relative_to(REF_DIR)), "compare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (*NOTEBOOKS, "00_explore"):  # explore reads what the others wrote
            out = REF_DIR / f"{name}.ipynb"
            error = execute_notebook(name, params, out, source_dir=Path(tmp), html=False)
            if error:
                sys.exit(f"{name} failed: {error}")
            _strip(out)
            print(f"wrote {out.relative_to(ROOT)}")
    print(f"data: {DATA_DIR.relative_to(ROOT)} (not committed; tests/conftest.py rebuilds it)")


if __name__ == "__main__":
    main()
