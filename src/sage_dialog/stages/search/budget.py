"""The signal that a seed's request or token budget ran out (shared by every search strategy)."""

from __future__ import annotations


class BudgetExhausted(Exception):
    """Raised inside a seed's search when its budget is spent; the seed stops with ``stopped: budget``."""
