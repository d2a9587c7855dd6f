"""Run parameters: ``params/default.yaml``, a user file and ``key value`` overrides, validated.

The defaults file is the one place where every parameter is documented. A user file
holds only the keys it changes; ``-p a.b value`` sets one (the value is read as YAML,
so ``5`` is an int and ``0.5`` a float).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from calim_helpers.errors import CalimInputError

__all__ = ["CHOICES", "DEFAULTS_FILE", "load_params", "merge_params"]

DEFAULTS_FILE = Path(__file__).resolve().parents[1] / "params" / "default.yaml"

# Parameters whose value must be one of a few names.
CHOICES = {
    "normalize": ("dff", "session", "zscore"),
    "registration.method": ("rigid", "piecewise"),
    "denoise.method": ("none", "gaussian", "median", "temporal_gaussian"),
    "rois.source": ("expert", "auto", "auto_if_missing"),
}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalimInputError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as exc:
        raise CalimInputError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CalimInputError(f"{path}: a parameter file must be a mapping of keys")
    return data


def _check_type(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
        value = float(value) if ok else value
    elif default is None:
        ok = value is None or isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise CalimInputError(
            f"parameter {key!r} must be of type {type(default).__name__} "
            f"(default {default!r}), got {value!r}")
    return value


def merge_params(base: Mapping[str, Any], update: Mapping[str, Any], /,
                 prefix: str = "") -> dict[str, Any]:
    """Return ``base`` updated by ``update``, refusing unknown keys and wrong types."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        full = f"{prefix}{key}"
        if key not in out:
            known = ", ".join(f"{prefix}{k}" for k in out)
            raise CalimInputError(f"unknown parameter {full!r} (known here: {known})")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise CalimInputError(f"parameter {full!r} must be a mapping, got {value!r}")
            out[key] = merge_params(out[key], value, prefix=f"{full}.")
        else:
            out[key] = _check_type(full, value, out[key])
            if full == "sessions" and not all(isinstance(v, str) for v in out[key]):
                raise CalimInputError(
                    f"parameter 'sessions' must list session ids as quoted strings, e.g. "
                    f"['230404_5'] (YAML reads 230404_5 unquoted as the number 2304045), "
                    f"got {out[key]!r}")
            if full in CHOICES and out[key] not in CHOICES[full]:
                raise CalimInputError(
                    f"parameter {full!r} must be one of {CHOICES[full]}, got {out[key]!r}")
    return out


def load_params(
    path: str | os.PathLike | None = None,
    /,
    overrides: Iterable[tuple[str, str]] = (),
    *,
    defaults: str | os.PathLike = DEFAULTS_FILE,
) -> dict[str, Any]:
    """Return the defaults updated by a user file, then by ``(dotted.key, value)`` pairs.

    Parameters
    ----------
    path : path-like, optional
        A YAML file with the keys to change. Default is None.
    overrides : iterable of (str, str), optional
        ``("downsample.time", "5")`` pairs; values are parsed as YAML. Default is none.
    defaults : path-like, optional
        The documented defaults. Default is ``params/default.yaml``.

    Returns
    -------
    dict
        The complete, validated parameter tree.

    Raises
    ------
    CalimInputError
        Unknown key, wrong type, unreadable file (the message names the key or file).
    """
    params = _read_yaml(Path(defaults))
    if path is not None:
        params = merge_params(params, _read_yaml(Path(path)))
    for dotted, text in overrides:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        update: dict[str, Any] = {}
        node = update
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        params = merge_params(params, update)
    return params
