"""The one exception type for user errors.

The CLI prints a :class:`UserError` as a single ``error: …`` line on stderr and
exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: bad path, bad value, incompatible file."""

    exit_code = 2
