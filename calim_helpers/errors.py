"""Exceptions and warnings raised by CALIM.

Every error about a user's input derives from :class:`CalimInputError`, a
:class:`ValueError`, and names the file (or parameter) and the problem.
Suspicious but computable input warns with :class:`CalimWarning`.
"""

from __future__ import annotations

__all__ = ["CalimInputError", "CalimParameterError", "CalimWarning"]


class CalimInputError(ValueError):
    """An input file, folder or ROI cannot be used; the message says why."""


class CalimParameterError(CalimInputError):
    """A run parameter is unknown or not allowed.

    The message is one line naming the dotted key, the value given and what is allowed,
    e.g. ``parameter arpls.lam = -5: must be > 0``.
    """


class CalimWarning(UserWarning):
    """Input is usable but suspicious (for example, a dropped partial block)."""
