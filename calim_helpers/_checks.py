"""Argument checks shared by the numerical modules: ``ValueError`` naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_number(name: str, value: Any, *, low: float, strict: bool,
                 high: float | None = None) -> float:
    """Return ``value`` as a float if it is a finite number >= ``low`` (> with ``strict``).

    With ``high``, it must also be <= ``high``.
    """
    real = int | float | np.integer | np.floating
    if isinstance(value, bool) or not isinstance(value, real) or not np.isfinite(value) \
            or value < low or (strict and value == low) or (high is not None and value > high):
        bounds = f"{'>' if strict else '>='} {low:g}" + ("" if high is None else
                                                         f" and <= {high:g}")
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, *, low: int) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_spacing(spacing_um: Any) -> tuple[float, float]:
    """Return a grid spacing ``(dy, dx)`` in µm, both finite and > 0."""
    try:
        dy, dx = (float(v) for v in spacing_um)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_um must be (dy, dx) in µm, got {spacing_um!r}") from None
    if not (np.isfinite(dy) and np.isfinite(dx) and dy > 0 and dx > 0):
        raise ValueError(f"spacing_um must be two finite numbers > 0, got {spacing_um!r}")
    return dy, dx
