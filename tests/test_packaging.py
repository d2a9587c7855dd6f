"""The project's promises about installation: one dependency list, one test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

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
