"""Loops compiled with numba where it is installed, plain Python where it is not.

numba is a dependency of CALIM, but the numerical modules keep a numpy path (or run the
same loop uncompiled) so that they stay importable and testable without it.

numba itself (with LLVM, 84 MB of resident memory) is imported only when a compiled loop
is first called: a notebook kernel or the ``calim run`` process that sends the work to
dask workers never pays for it.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HAVE_NUMBA", "jit", "lazy_intrinsic"]

try:
    HAVE_NUMBA = importlib.util.find_spec("numba") is not None
except ValueError:  # pragma: no cover - a "numba" module without a spec
    HAVE_NUMBA = False

_LOCK = threading.RLock()


class _Lazy:
    """A function numba compiles when it is first called (see :func:`jit`)."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self._options = options
        self._dispatcher: Any = None

    def dispatcher(self) -> Any:
        """Return the numba dispatcher of this function (numba imported, nothing compiled).

        Every lazy function among the module's globals is made a dispatcher first: a
        compiled caller finds its compiled callees there when numba compiles it.
        """
        with _LOCK:
            if self._dispatcher is None:
                try:
                    from numba import njit
                except ImportError as exc:  # installed, but not importable here
                    raise RuntimeError(
                        f"numba is installed but cannot be imported ({exc}); install a "
                        "numba that matches this numpy (pip install -U numba), or "
                        "uninstall it to run the numpy code instead") from exc

                try:
                    self._dispatcher = njit(cache=True, **self._options)(self.py_func)
                except RuntimeError:  # pragma: no cover - no writable cache locator
                    self._dispatcher = njit(cache=False, **self._options)(self.py_func)
                names = self.py_func.__globals__
                for name, value in list(names.items()):
                    if isinstance(value, _Lazy):
                        names[name] = value.dispatcher()
                    elif isinstance(value, _LazyIntrinsic):
                        names[name] = value.make()
            return self._dispatcher

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.dispatcher()(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by reference, as a module-level function is
        return _module_attribute, (self.__module__, self.__qualname__)


def _module_attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


class _LazyIntrinsic:
    """A numba intrinsic made when numba is imported (see :func:`lazy_intrinsic`)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        functools.update_wrapper(self, make)
        self._make = make
        self._made: Any = None

    def make(self) -> Any:
        with _LOCK:
            if self._made is None:
                self._made = self._make()
            return self._made


def lazy_intrinsic(make: Callable[[], Any], /) -> Any:
    """Wrap ``make``, which defines a numba intrinsic, until numba is imported.

    ``make`` imports numba (``numba.extending.intrinsic``, llvmlite) and returns the
    intrinsic; compiled callers in the same module find it among their globals, as they
    find the other :func:`jit` functions. Without numba, define a plain Python
    equivalent instead.
    """
    return _LazyIntrinsic(make)


def jit(fn: Callable[..., Any] | None = None, /, *, inline: bool = False) -> Any:
    """Compile ``fn`` with numba (cached on disk, GIL released); leave it as is without numba.

    The function is compiled (or loaded from numba's disk cache) when it is first
    called; numba is imported then. Where no cache folder is writable (a read-only
    installation and home folder, as on some cluster nodes; numba's ``NUMBA_CACHE_DIR``
    chooses another) it is compiled in memory only, instead of failing. ``inline=True``
    inlines it into compiled callers. Use as ``@jit`` or ``@jit(inline=True)``.
    """
    if fn is None:
        return lambda f: jit(f, inline=inline)
    if not HAVE_NUMBA:
        return fn
    return _Lazy(fn, {"nogil": True, "error_model": "numpy",
                      "inline": "always" if inline else "never"})
