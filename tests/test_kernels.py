"""Kernels started ahead (calim_helpers.workflow.kernels): same notebook, same outputs."""

from __future__ import annotations

import nbformat
import papermill as pm

from calim_helpers.workflow import kernels


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    preloaded = "import sys\n'calim_helpers.workflow.steps' in sys.modules"
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.getcwd())"),
                nbformat.v4.new_code_cell(preloaded), nbformat.v4.new_code_cell("6 * 7")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _outputs(nb):
    return [(c["execution_count"], [o.get("text") or o.get("data", {}).get("text/plain")
                                    for o in c["outputs"]]) for c in nb.cells]


def test_a_notebook_runs_on_the_kernel_started_ahead_as_on_a_new_one(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    src = _notebook(tmp_path / "nb.ipynb")
    kernels.register_engine()
    with kernels.NextKernel() as ahead:
        ahead.prepare(folder)
        km = ahead.take(folder)
        assert km is not None and km.is_alive()
        early = pm.execute_notebook(str(src), str(tmp_path / "a.ipynb"), kernel_name="python3",
                                    progress_bar=False, engine_name=kernels.ENGINE, km=km)
        assert not km.is_alive()  # shut down afterwards, like papermill's own kernels
    fresh = pm.execute_notebook(str(src), str(tmp_path / "b.ipynb"), kernel_name="python3",
                                progress_bar=False, cwd=str(folder))
    a, b = _outputs(early), _outputs(fresh)
    assert a[0] == b[0] == (1, [f"{folder}\n"])  # same folder, same execution counts
    assert a[2] == b[2] == (3, ["42"])
    assert a[1] == (2, ["True"]) and b[1] == (2, ["False"])  # only the imports differ


def test_a_kernel_not_taken_is_shut_down(tmp_path, monkeypatch):
    stopped = []
    shutdown = kernels._shutdown
    monkeypatch.setattr(kernels, "_shutdown", lambda km: (stopped.append(km), shutdown(km)))
    with kernels.NextKernel() as ahead:
        ahead.prepare(tmp_path)
        assert ahead.take(tmp_path / "elsewhere") is None  # another folder: not this kernel
        ahead.prepare(tmp_path)
    assert len(stopped) == 2 and not any(km.is_alive() for km in stopped)


def test_a_kernel_that_fails_to_start_leaves_the_notebook_its_own(tmp_path, monkeypatch):
    def fail(cwd):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(kernels, "_start", fail)
    with kernels.NextKernel() as ahead:
        ahead.prepare(tmp_path)
        assert ahead.take(tmp_path) is None


def test_the_preload_imports_what_the_notebooks_import():
    from calim_helpers import resources

    preload = kernels.PRELOAD
    for source in sorted(resources.notebook_dir().glob("0[1-5]_*.py")):
        for line in source.read_text().splitlines():
            if line.startswith("from calim_helpers.workflow import "):
                for name in line.split(" import ")[1].split(","):
                    assert f"calim_helpers.workflow.{name.strip()}" in preload, (source, name)


def test_each_notebook_has_its_preload_and_each_preload_runs(tmp_path):
    """Every notebook of a run has its compute imports; each preload is code that runs in
    a fresh interpreter (numba optional) and imports the modules it names."""
    import subprocess
    import sys

    from calim_helpers.workflow.papermill import NOTEBOOKS

    assert tuple(kernels.COMPUTE_IMPORTS) == NOTEBOOKS
    for name in NOTEBOOKS:
        for compute in (False, True):
            code = kernels.preload_for(name, compute=compute)
            assert code.startswith(kernels.PRELOAD)
            wanted = kernels.COMPUTE_IMPORTS[name] if compute else ()
            check = "import sys\n" + "".join(
                f"assert {m!r} in sys.modules, {m!r}\n" for m in wanted)
            assert ("numba" in code) == ("numba" in wanted)
            if name in ("04_analysis", "05_aggregate"):  # one of each kind, in a subprocess
                subprocess.run([sys.executable, "-c", code + "\n" + check], check=True,
                               cwd=tmp_path, timeout=120)


def _tagged_notebook(path, mark, *, tagged):
    nb = nbformat.v4.new_notebook()
    seen = f"import pathlib\nprint(pathlib.Path({str(mark)!r}).exists())"
    step = nbformat.v4.new_code_cell("x = 6 * 7")
    if tagged:
        step.metadata["tags"] = ["step"]
    nb.cells = [nbformat.v4.new_code_cell(seen), step, nbformat.v4.new_code_cell(seen)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_the_next_kernel_is_started_once_the_step_cell_has_run(tmp_path, monkeypatch):
    """execute_notebook calls after_step between the step cell and the next one, or
    before the first cell of a notebook without a step cell."""
    from calim_helpers.workflow import papermill as calim_pm

    for tagged, expected in ((True, ["False\n", "True\n"]), (False, ["True\n", "True\n"])):
        mark = tmp_path / f"started-{tagged}"
        src = _tagged_notebook(tmp_path / f"nb-{tagged}.ipynb", mark, tagged=tagged)
        monkeypatch.setattr(calim_pm, "notebook_from_source", lambda name, folder, s=src: s)
        out = tmp_path / f"out-{tagged}" / "nb.ipynb"
        error = calim_pm.execute_notebook("nb", {}, out, source_dir=tmp_path, html=False,
                                          after_step=mark.touch)
        assert error == ""
        cells = nbformat.read(out, as_version=4).cells
        assert [cells[0].outputs[0]["text"], cells[2].outputs[0]["text"]] == expected
