"""Run parameters: the packaged defaults, a user file and ``key value`` overrides, validated.

The defaults file (``calim_helpers/data/default.yaml``, which ``params/default.yaml`` links
to) is the one place where every parameter, its default and its meaning are written. A
user file holds only the keys it changes; ``-p a.b value`` sets one. Values are read as
YAML (``5`` is an int; ``0.5``, ``1e-5`` and, for a float parameter, ``100`` are floats),
except ``sessions``, whose value is comma-separated session ids (``230404_5,230404_9``).

Before any work starts, the complete tree is checked against :data:`SCHEMA` (JSON Schema:
type, range, choices; no default is repeated there) and the cross-checks between keys;
:func:`check_against_sessions` adds the checks that need the sessions' frame counts. A
refusal is a :class:`~calim_helpers.errors.CalimParameterError` whose message is one line
naming the key, the value given and what is allowed. Only the first problem is reported,
in the order of the keys in the defaults file.

>>> from calim_helpers.params import load_params
>>> p = load_params(None, [("arpls.lam", "100"), ("sessions", "230404_5, 230404_9")])
>>> p["arpls"]["lam"], p["sessions"]
(100.0, ['230404_5', '230404_9'])
>>> load_params(None, [("arpls.lam", "-5")])
Traceback (most recent call last):
...
calim_helpers.errors.CalimParameterError: parameter arpls.lam = -5: must be > 0
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from calim_helpers import resources
from calim_helpers.errors import CalimInputError, CalimParameterError

__all__ = [
    "DEFAULTS_FILE",
    "SCHEMA",
    "check_against_sessions",
    "too_short",
    "defaults",
    "load_params",
    "merge_params",
    "validate_params",
]

DEFAULTS_FILE: Path = resources.defaults_file()

# A session is at least this many downsampled frames (arPLS needs second differences).
MIN_DOWNSAMPLED_FRAMES = 3

# ----------------------------------------------------------------------------- the schema
# Type, range and choices of every key (JSON Schema 2020-12). Defaults live only in the
# defaults file; every key there must be here and vice versa. "x-messages" gives the
# sentence for a refusal that a bound or a type cannot say ("must be odd").

_MESSAGES = "x-messages"
SESSION_ID = r"^([0-9]{2}-[0-9]{2}-[0-9]{2}_)?[0-9]{6}_[0-9]+$"
_MEMORY = r"^(auto|[0-9]+(\.[0-9]+)? ?([kMGT]i?B))$"
_SCHEDULER = (r"^(threads|synchronous"  # or a dask address: tcp://host:port, tls://[::1]:8786
              r"|[a-z][a-z0-9+.-]*://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5})$")


def _int(*, ge: int | None = None, le: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    if ge is not None:
        schema["minimum"] = ge
    if le is not None:
        schema["maximum"] = le
    return schema


def _number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None, null: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["number", "null"] if null else "number"}
    for keyword, bound in (("exclusiveMinimum", gt), ("minimum", ge),
                           ("exclusiveMaximum", lt), ("maximum", le)):
        if bound is not None:
            schema[keyword] = bound
    return schema


def _choice(*names: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(names)}


def _section(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


_BOOL: dict[str, Any] = {"type": "boolean"}
_TEXT: dict[str, Any] = {"type": ["string", "null"]}
_TEXTS: dict[str, Any] = {"anyOf": [{"type": "null"}, {"type": "string"},
                                    {"type": "array", "items": {"type": "string"}}],
                          "x-messages": {"anyOf": "must be text, a list of text, or null"}}

SCHEMA: dict[str, Any] = _section(
    sessions={
        "type": "array",
        "items": {"type": "string", "pattern": SESSION_ID, _MESSAGES: {
            "type": "session ids must be quoted text, e.g. ['230404_5'] (YAML reads 230404_5 "
                    "unquoted as the number 2304045)",
            "pattern": "{item!r} is not a session id: <yymmdd>_<n> (e.g. 230404_5) or "
                       "<dd-mm-yy>_<yymmdd>_<n> (e.g. 04-04-23_230404_5)"}},
        _MESSAGES: {"type": "must be a list of quoted session ids, e.g. ['230404_5'], "
                            "or [] for all"}},
    compute=_section(
        workers={"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}],
                 _MESSAGES: {"anyOf": "must be auto or an integer >= 1"}},
        worker_memory={"type": "string", "pattern": _MEMORY, _MESSAGES: {
            "pattern": "must be auto or a size such as 3GB, 1500MB or 2.5GiB"}},
        scheduler={"type": "string", "pattern": _SCHEDULER, _MESSAGES: {
            "pattern": "must be threads, synchronous or a dask cluster address such as "
                       "tcp://host:8786"}},
        parallel_sessions=_int(ge=1),
        resume=_BOOL),
    load=_section(chunk_time=_int(ge=1), channel={"type": ["integer", "null"], "minimum": 0}),
    registration=_section(
        enabled=_BOOL,
        method=_choice("rigid", "piecewise"),
        template_frames=_int(ge=1),
        upsample_factor=_int(ge=1),
        bin_px=_int(ge=1),
        max_shift_px=_number(gt=0, null=True),
        grid={"type": "array", "items": _int(ge=1), "minItems": 2, "maxItems": 2, _MESSAGES: {
            "minItems": "must be two integers [rows, columns]",
            "maxItems": "must be two integers [rows, columns]"}}),
    denoise=_section(
        method=_choice("none", "gaussian", "median", "temporal_gaussian"),
        sigma_px=_number(ge=0),
        sigma_frames=_number(ge=0),
        size=_int(ge=1) | {"not": {"multipleOf": 2}, _MESSAGES: {
            "not": "must be odd (the window is centred on its pixel)"}}),
    downsample=_section(time=_int(ge=1), y=_int(ge=1), x=_int(ge=1)),
    rois=_section(source=_choice("expert", "auto", "auto_if_missing")),
    detection=_section(
        method=_choice("morphology", "correlation"),
        diameter_um=_number(gt=0),
        diameter_range={"type": "array", "items": _number(gt=0), "minItems": 2,
                        "maxItems": 2, _MESSAGES: {
                            "minItems": "must be two numbers [smallest, largest]",
                            "maxItems": "must be two numbers [smallest, largest]"}},
        iou_threshold=_number(gt=0, le=1)),
    background=_section(fraction=_number(gt=0, le=1), seed=_int(ge=0)),
    neuropil=_section(
        method=_choice("none", "annulus", "fitted", "demix"),
        coefficient=_number(ge=0, le=1),
        inner_um=_number(ge=0),
        width_um=_number(gt=0),
        min_pixels=_int(ge=1),
        quiet_fraction=_number(gt=0, le=1),
        fit_degree=_int(ge=0)),
    arpls=_section(lam=_number(gt=0), cutoff_s=_number(gt=0, null=True), tol=_number(gt=0),
                   max_iter=_int(ge=1)),
    normalize=_choice("dff", "session", "zscore"),
    trim_start=_int(ge=0),
    events=_section(threshold=_number(ge=0), prominence=_number(ge=0),
                    min_duration_s=_number(ge=0), merge_gap_s=_number(ge=0),
                    min_amplitude=_number(ge=0)),
    synchrony=_section(bin_frames=_int(ge=1), n_shuffles=_int(ge=1),
                       alpha=_number(gt=0, lt=1), cluster_threshold=_number(gt=0, le=2)),
    qc=_section(snr_threshold=_number(ge=0)),
    heatmap=_section(vmin=_number(), vmax=_number()),
    statistics=_section(unit=_choice("session", "cell")),
    outputs=_section(nwb=_BOOL, movie=_choice("downsampled", "native", "none"), nwb_movie=_BOOL),
    nwb=_section(
        **{k: _TEXT for k in ("subject_id", "species", "sex", "age", "subject_description",
                              "lab", "institution", "indicator", "location",
                              "experiment_description", "pharmacology", "protocol",
                              "surgery", "virus", "strain", "genotype", "weight", "device",
                              "device_description", "device_model", "device_manufacturer")},
        experimenter=_TEXTS, keywords=_TEXTS, related_publications=_TEXTS,
        excitation_lambda_nm=_number(gt=0, null=True),
        emission_lambda_nm=_number(gt=0, null=True)),
    figures=_section(per_roi=_BOOL, per_roi_pdf=_BOOL, dpi=_int(ge=20, le=1200)),
)


def _is_int(checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(checker: Any, value: Any) -> bool:
    return _is_int(checker, value) or isinstance(value, float) and math.isfinite(value)


# JSON Schema counts 2.0 as an integer and NaN as a number; a parameter may not.
_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_int, "number": _is_number}),
)
_VALIDATOR = _Validator(SCHEMA)


# ----------------------------------------------------------------------------- messages

_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "text",
               "boolean": "true or false", "array": "a list", "object": "a mapping",
               "null": "null"}
_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
           ("exclusiveMaximum", "<"))


def _show(value: Any) -> str:
    """Return a value as the user wrote it in YAML, on one line."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{_show(k)}: {_show(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _dotted(path: Iterable[Any]) -> str:
    return " ".join(".".join(str(p) for p in path).split())  # one line, whatever the keys


def _unknown(key: str, value: Any, known: list[str]) -> str:
    section, _, name = key.rpartition(".")
    near = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    hint = f"; did you mean {section + '.' if section else ''}{near[0]}?" if near else ""
    where = f"the keys of {section} are" if section else "the top-level keys are"
    return f"unknown parameter {key!r} = {_show(value)}: {where} {', '.join(map(str, known))}{hint}"


def _allowed(error: Any) -> str:
    """Return what the failing schema node allows, the end of 'must be ...'."""
    schema = error.schema
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if error.validator == "type":
        if "number" in types and isinstance(error.instance, float):
            return "a finite number" + (" or null" if "null" in types else "")
        return " or ".join(_TYPE_NAMES[t] for t in types)
    if error.validator == "enum":
        return "one of " + ", ".join(map(str, schema["enum"]))
    bounds = " and ".join(f"{op} {schema[kw]}" for kw, op in _BOUNDS if kw in schema)
    if bounds:
        return ("null or " if "null" in types else "") + bounds
    return ""


def _message(error: Any, tree: Mapping[str, Any]) -> str:
    """One line for one jsonschema error: ``parameter KEY = VALUE: must be ...``."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = next(k for k in error.instance if k not in error.schema["properties"])
        return _unknown(_dotted([*path, extra]), error.instance[extra],
                        list(error.schema["properties"]))
    if error.validator == "required":
        missing = next(k for k in error.schema["required"] if k not in error.instance)
        return f"parameter {_dotted([*path, missing])} is missing"
    item = None
    if path and isinstance(path[-1], int):  # a list's entry: report the whole list
        item, path = error.instance, path[:-1]
    value: Any = tree
    for part in path:
        value = value[part]
    custom = error.schema.get(_MESSAGES, {}).get(error.validator)
    if custom:
        what = custom.format(item=item)
    elif _allowed(error):
        what = ("each entry must be " if item is not None else "must be ") + _allowed(error)
    else:  # not reached with SCHEMA; still one line
        what = " ".join(error.message.split())
    return f"parameter {_dotted(path)} = {_show(value)}: {what}"


def _position(tree: Any, path: Iterable[Any]) -> tuple[int, ...]:
    """Where a path comes in the tree (the defaults file's order)."""
    out = []
    node = tree
    for part in path:
        out.append(list(node).index(part) if isinstance(node, Mapping) else int(part))
        node = node[part]
    return tuple(out)


def _as_floats(schema: Mapping[str, Any], value: Any) -> Any:
    """Ints given for float parameters, as floats (``-p arpls.lam 100`` -> 100.0)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _as_floats(props.get(k, {}), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_floats(schema.get("items", {}), v) for v in value]
    types = schema.get("type", [])
    if "number" in ([types] if isinstance(types, str) else types) and _is_int(None, value):
        return float(value)
    return value


def _cross_check(params: Mapping[str, Any]) -> None:
    """Check keys against each other, once types and ranges are right."""
    vmin, vmax = params["heatmap"]["vmin"], params["heatmap"]["vmax"]
    if not vmin < vmax:
        raise CalimParameterError(
            f"parameter heatmap.vmin = {_show(vmin)}: must be < heatmap.vmax = {_show(vmax)}")
    low, high = params["detection"]["diameter_range"]
    if not low <= high:
        raise CalimParameterError(
            f"parameter detection.diameter_range = {_show([low, high])}: must be "
            "[smallest, largest] with smallest <= largest")
    outputs = params["outputs"]
    if outputs["nwb_movie"] and not (outputs["nwb"] and outputs["movie"] != "none"):
        raise CalimParameterError(
            "parameter outputs.nwb_movie = true: needs outputs.nwb = true and "
            f"outputs.movie = downsampled or native (got {_show(outputs['nwb'])} and "
            f"{_show(outputs['movie'])})")


# ----------------------------------------------------------------------------- public API


def validate_params(params: Mapping[str, Any], /) -> dict[str, Any]:
    """Check a complete parameter tree; return it with ints made floats where floats are due.

    Parameters
    ----------
    params : mapping
        Every key of the defaults file (as :func:`load_params` builds it).

    Returns
    -------
    dict
        A new tree; ``params`` is not modified.

    Raises
    ------
    CalimParameterError
        The first problem in the defaults file's key order, on one line, e.g.
        ``parameter normalize = 'max': must be one of dff, session, zscore``.
    """
    errors = list(_VALIDATOR.iter_errors(params))
    if errors:
        first = min(errors, key=lambda e: (_position(params, e.absolute_path),
                                           e.validator != "type", str(e.validator)))
        raise CalimParameterError(_message(first, params))
    out = _as_floats(SCHEMA, copy.deepcopy(dict(params)))
    _cross_check(out)
    return out


def merge_params(base: Mapping[str, Any], update: Mapping[str, Any], /,
                 prefix: str = "") -> dict[str, Any]:
    """Return ``base`` updated by ``update``, key by key; neither is modified.

    Only the structure is checked here (unknown keys, a value for a whole section);
    :func:`validate_params` checks the values of the result.

    Parameters
    ----------
    base : mapping
        The complete tree (the defaults, or the defaults already updated).
    update : mapping
        Some of its keys, nested the same way.
    prefix : str, optional
        Dotted path of ``base`` within the whole tree, for messages. Default is "".

    Returns
    -------
    dict
        The merged tree.

    Raises
    ------
    CalimParameterError
        ``update`` holds a key that ``base`` has not, or a plain value for a section.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        full = f"{prefix}{key}"
        if key not in out:
            raise CalimParameterError(_unknown(_dotted([full]), value, list(out)))
        if isinstance(out[key], dict):
            if value is None:  # "arpls:" with every line below commented out
                continue
            if not isinstance(value, Mapping):
                first = next(iter(out[key]), "KEY")
                raise CalimParameterError(
                    f"parameter {full} = {_show(value)}: must be a mapping of "
                    f"{', '.join(map(str, out[key]))} (set one with -p {full}.{first} VALUE)")
            out[key] = merge_params(out[key], value, prefix=f"{full}.")
        elif isinstance(value, Mapping) and value:  # "-p arpls.lam.x 1"
            sub, sub_value = next(iter(value.items()))
            raise CalimParameterError(
                f"unknown parameter {_dotted([full, sub])!r} = {_show(sub_value)}: "
                f"{full} is a value, not a section")
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading YAML 1.2 exponent floats (``1e-5``, ``1.0e5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader
    except FileNotFoundError:
        raise CalimInputError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CalimInputError(f"{path}: not valid YAML{line} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CalimInputError(f"{path}: a parameter file must be a mapping of keys")
    return data


def _session_ids(text: str) -> list[str]:
    """``230404_5,230404_9``, ``['230404_5']`` or ``""`` as a list of session ids."""
    ids = (part.strip().strip("'\"").strip() for part in text.strip().strip("[]").split(","))
    return [i for i in ids if i]


def _override(dotted: str, text: Any) -> dict[str, Any]:
    """One ``-p KEY VALUE`` as a nested update; the value is read as YAML."""
    if not isinstance(text, str):  # already a value (called from Python)
        value = text
    elif dotted == "sessions":  # session ids are text, never YAML numbers
        value = _session_ids(text)
    else:
        try:
            value = yaml.load(text, Loader=_Loader)  # a SafeLoader
        except yaml.YAMLError:
            value = text
    update: dict[str, Any] = {}
    node = update
    parts = str(dotted).split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return update


def load_params(
    path: str | os.PathLike | None = None,
    /,
    overrides: Iterable[tuple[str, Any]] = (),
    *,
    defaults: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Return the defaults updated by a user file, then by ``(dotted.key, value)`` pairs.

    Parameters
    ----------
    path : path-like, optional
        A YAML file with the keys to change. Default is None.
    overrides : iterable of (str, str), optional
        ``("downsample.time", "5")`` pairs, applied in order; values are read as YAML,
        except for ``sessions``: comma-separated ids (``"230404_5,230404_9"``; brackets
        and quotes are ignored). Default is none.
    defaults : path-like, optional
        The documented defaults. Default is None: :data:`DEFAULTS_FILE`, the packaged
        ``calim_helpers/data/default.yaml``.

    Returns
    -------
    dict
        The complete, validated parameter tree (float parameters as floats).

    Raises
    ------
    CalimParameterError
        Unknown key, wrong type, value out of range or not among the choices,
        contradictory keys (the one-line message names the key, the value and what is
        allowed).
    CalimInputError
        A parameter file is missing, not YAML or not a mapping.
    """
    params = _read_yaml(Path(DEFAULTS_FILE if defaults is None else defaults))
    if path is not None:
        params = merge_params(params, _read_yaml(Path(path)))
    for dotted, text in overrides:
        params = merge_params(params, _override(dotted, text))
    return validate_params(params)


def defaults() -> dict[str, Any]:
    """Return the validated default parameters (the packaged defaults file).

    Returns
    -------
    dict
        The complete parameter tree.
    """
    return load_params()


def too_short(n_frames: int, downsample_time: int, /) -> str | None:
    """Say why a session of ``n_frames`` native frames is too short, or return ``None``.

    A session needs ``MIN_DOWNSAMPLED_FRAMES`` (3) downsampled frames: arPLS fits second
    differences, so at ``downsample.time = 10`` the minimum is 30 native frames.

    Examples
    --------
    >>> too_short(1500, 10) is None
    True
    >>> too_short(20, 10)
    '20 frames, 2 after downsampling; at least 3 are needed, i.e. >= 30 native frames at downsample.time = 10 (use downsample.time <= 6 for it)'
    """  # noqa: E501
    step = int(downsample_time)
    n_down = int(n_frames) // step
    if n_down >= MIN_DOWNSAMPLED_FRAMES:
        return None
    largest = int(n_frames) // MIN_DOWNSAMPLED_FRAMES
    advice = (f"use downsample.time <= {largest} for it" if largest >= 1 else
              "it cannot be processed")
    return (f"{n_frames} frames, {n_down} after downsampling; at least "
            f"{MIN_DOWNSAMPLED_FRAMES} are needed, i.e. >= {MIN_DOWNSAMPLED_FRAMES * step} "
            f"native frames at downsample.time = {step} ({advice})")


def check_against_sessions(params: Mapping[str, Any], n_frames: Mapping[str, int], /
                           ) -> dict[str, str]:
    """Find the sessions too short for the parameters; refuse parameters no session fits.

    Call it once the sessions are found and before any heavy work. A session too short
    for ``downsample.time`` (fewer than ``MIN_DOWNSAMPLED_FRAMES`` downsampled frames,
    :func:`too_short`) is left out of the run with its reason and the others go on; the
    load step skips it with the same reason. A template longer than a session
    (``registration.template_frames``) is not refused: it is clipped.

    Parameters
    ----------
    params : mapping
        A validated parameter tree (:func:`load_params`).
    n_frames : mapping of str to int
        Session id -> native frame count. Empty: nothing to check.

    Returns
    -------
    dict of str to str
        Session id -> why it is left out, for the sessions too short to process.

    Raises
    ------
    CalimParameterError
        When every session is too short for ``downsample.time`` (the message names the
        shortest, ties by id, and the native frame count needed), or ``trim_start``
        leaves no downsampled frame of a session that is long enough.

    Examples
    --------
    >>> p = load_params()
    >>> check_against_sessions(p, {"230404_5": 1500, "230404_9": 80})
    {}
    >>> check_against_sessions(p, {"230404_5": 1500, "230404_9": 25})  # doctest: +ELLIPSIS
    {'230404_9': '25 frames, 2 after downsampling; at least 3 are needed, ...'}
    >>> check_against_sessions(p, {"230404_9": 25})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    calim_helpers.errors.CalimParameterError: parameter downsample.time = 10: session 230404_9 ...
    """
    step = int(params["downsample"]["time"])
    short = {str(s): why for s, n in sorted(n_frames.items())
             if (why := too_short(int(n), step)) is not None}
    if n_frames and len(short) == len(n_frames):
        session, frames = min(((str(s), int(n)) for s, n in n_frames.items()),
                              key=lambda sn: (sn[1], sn[0]))
        raise CalimParameterError(
            f"parameter downsample.time = {step}: session {session} has "
            f"{too_short(frames, step)}; no session is long enough")
    trim = int(params["trim_start"])
    for session, frames in sorted(n_frames.items(), key=lambda sn: (sn[1], sn[0])):
        if session in short:
            continue
        n_down = int(frames) // step
        if trim >= n_down:
            raise CalimParameterError(
                f"parameter trim_start = {trim}: must be < {n_down}, the downsampled frames "
                f"of session {session} (the shortest, at downsample.time = {step})")
        break
    return short
