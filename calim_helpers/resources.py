"""Files installed with the package: the parameter defaults and the notebooks.

Found with :mod:`importlib.resources`, so they are the same in a source checkout, an
editable install and a regular ``pip install``. In the repository the notebooks live at
the top level (``notebooks/*.py``) and ``calim_helpers/notebooks`` links to them; a wheel
holds real copies.

>>> from calim_helpers import resources
>>> resources.defaults_file().name
'default.yaml'
>>> (resources.notebook_dir() / "01_load.py").is_file()
True
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["defaults_file", "notebook_dir"]


def _package_path(*parts: str) -> Path:
    resource = files("calim_helpers").joinpath(*parts)
    if not isinstance(resource, Path):  # e.g. imported from a zip file
        raise RuntimeError(
            f"calim_helpers/{'/'.join(parts)} is not on the file system ({resource!r}); "
            f"install calim as a regular package (pip install calim)")
    return resource


def defaults_file() -> Path:
    """Return the packaged parameter defaults, ``calim_helpers/data/default.yaml``.

    Returns
    -------
    pathlib.Path
        The documented defaults of every parameter.
    """
    return _package_path("data", "default.yaml")


def notebook_dir() -> Path:
    """Return the folder of the pipeline's notebooks (jupytext ``NN_name.py`` sources).

    Returns
    -------
    pathlib.Path
        ``calim_helpers/notebooks``, holding ``01_load.py`` and the others.
    """
    return _package_path("notebooks")
