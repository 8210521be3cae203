"""Errors a person can act on.

A :class:`UserError` is bad input or a bad option: the CLI prints its lines (one per problem, each
naming file, record and field) and exits with code 2, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """Bad input that the user can fix. ``problems`` are the lines to print, one per problem."""

    exit_code = 2

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def where(path: object, record: object | None = None, field: str | None = None) -> str:
    """Format a location: ``file``, ``file: record 3``, ``file: record 3: field turns[2].role``."""
    out = str(path)
    if record is not None:
        out += f": record {record}"
    if field:
        out += f": field {field}"
    return out
