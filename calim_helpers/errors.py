"""Exceptions and warnings raised by CALIM.

Every error about a user's input derives from :class:`CalimInputError`, a
:class:`ValueError`, and names the file (or parameter) and the problem.
Suspicious but computable input warns with :class:`CalimWarning`.
"""

from __future__ import annotations

__all__ = ["CalimInputError", "CalimWarning"]


class CalimInputError(ValueError):
    """An input file, folder or ROI cannot be used; the message says why."""


class CalimWarning(UserWarning):
    """Input is usable but suspicious (for example, a dropped partial block)."""
