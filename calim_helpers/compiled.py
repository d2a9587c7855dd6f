"""Loops compiled with numba where it is installed, plain Python where it is not.

numba is a dependency of CALIM, but the numerical modules keep a numpy path (or run the
same loop uncompiled) so that they stay importable and testable without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency
    njit = None

__all__ = ["HAVE_NUMBA", "jit"]

HAVE_NUMBA = njit is not None


def jit(fn: Callable[..., Any] | None = None, /, *, inline: bool = False) -> Any:
    """Compile ``fn`` with numba (cached on disk, GIL released); leave it as is without numba.

    Where no cache folder is writable (a read-only installation and home folder, as on
    some cluster nodes; numba's ``NUMBA_CACHE_DIR`` chooses another) it is compiled in
    memory only, instead of failing. ``inline=True`` inlines it into compiled callers.
    Use as ``@jit`` or ``@jit(inline=True)``.
    """
    if fn is None:
        return lambda f: jit(f, inline=inline)
    if njit is None:  # pragma: no cover
        return fn
    options = {"nogil": True, "error_model": "numpy", "inline": "always" if inline else "never"}
    try:
        return njit(cache=True, **options)(fn)
    except RuntimeError:  # pragma: no cover - numba found no writable cache locator
        return njit(cache=False, **options)(fn)
