"""The project's promises about installation: one dependency list, one test command, a
real package (a wheel holding the defaults and the notebooks)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

from calim_helpers import resources

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """Distribution name of a requirement, normalized (PEP 503), without extras/versions."""
    name = re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for reqs in project["optional-dependencies"].values():
        declared |= {_name(r) for r in reqs if _name(r) != "calim"}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    assert "conda-forge" in env["channels"]
    assert any(d.startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    assert conda == declared, (
        f"only in environment.yml: {sorted(conda - declared)}; "
        f"only in pyproject.toml: {sorted(declared - conda)}"
    )
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(re.match(r"-e \"?\.", p) for p in pip), "environment.yml must install the project"
    # and the same versions (a cap such as matplotlib's must hold for conda users too)
    bounds = {}
    for reqs in [project["dependencies"], *project["optional-dependencies"].values()]:
        bounds |= {_name(r): _bounds(r) for r in reqs if _name(r) != "calim"}
    conda_bounds = {_name(d): _bounds(d) for d in env["dependencies"]
                    if isinstance(d, str) and _name(d) in declared}
    assert conda_bounds == bounds


def _bounds(requirement: str) -> set[str]:
    """The version bounds of a requirement, e.g. {'>=3.8', '<3.11'}, extras and markers left out."""
    spec = re.sub(r"^[A-Za-z0-9_.\-]+(\[[^\]]*\])?", "", requirement.split(";")[0])
    return {b.replace(" ", "") for b in spec.split(",") if b.strip()}


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, flags=re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert commands == ["make demo", "make test"], commands
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    runs = [ln for ln in ci if not ln.startswith(("set ", "cd "))]
    assert runs == ["make test"], runs


def test_makefile_targets_exist():
    text = (ROOT / "Makefile").read_text()
    for target in ("demo:", "test:", "lab:"):
        assert re.search(rf"^{target}", text, flags=re.M), target


def test_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["calim"] == "calim_helpers.cli:main"


# ----------------------------------------------------------------------------- a real package


def test_the_links_into_the_package_are_relative_and_resolve():
    for link, target in ((ROOT / "params" / "default.yaml", "../calim_helpers/data/default.yaml"),
                         (ROOT / "calim_helpers" / "notebooks", "../notebooks")):
        assert link.is_symlink(), f"{link.relative_to(ROOT)} must be a symlink"
        assert os.readlink(link) == target  # relative: git stores it, any checkout resolves it
        assert link.exists()


def test_resources_find_the_defaults_and_the_notebooks():
    assert resources.defaults_file().is_file()
    assert resources.defaults_file().read_bytes() == (ROOT / "params" / "default.yaml").read_bytes()
    names = {p.name for p in resources.notebook_dir().glob("*.py")}
    assert names == {p.name for p in (ROOT / "notebooks").glob("*.py")}
    assert "01_load.py" in names


def test_pytest_does_not_import_the_notebooks_through_the_link():
    # --doctest-modules would import (= run) calim_helpers/notebooks/*.py
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "calim_helpers" in opts["testpaths"]
    assert "--ignore=calim_helpers/notebooks" in opts["addopts"].split()


def test_the_wheel_holds_the_defaults_notebooks_and_subpackages(tmp_path):
    # Build from a clean copy: a stale build/ in the work tree would leak old files.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("calim_helpers", "notebooks"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
    assert (src / "calim_helpers" / "notebooks").is_symlink()
    out = tmp_path / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("calim-*.whl")
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        packaged = z.read("calim_helpers/data/default.yaml")

    def regular(name):
        return name in infos and stat.S_ISREG(infos[name].external_attr >> 16)

    assert regular("calim_helpers/data/default.yaml")
    assert packaged == (ROOT / "params" / "default.yaml").read_bytes()
    assert regular("calim_helpers/notebooks/01_load.py")
    for nb in (ROOT / "notebooks").glob("*.py"):
        assert regular(f"calim_helpers/notebooks/{nb.name}"), nb.name
    for module in (ROOT / "calim_helpers").rglob("*.py"):
        rel = module.relative_to(ROOT).as_posix()
        if not rel.startswith("calim_helpers/notebooks/"):
            assert regular(rel), f"{rel} is missing from the wheel"
    assert not any(n.startswith(("notebooks/", "params/", "tests/")) for n in infos)
