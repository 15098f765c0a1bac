"""Metric names that changed, and how to read files written before the change."""

from __future__ import annotations

from typing import Any

RENAMED_KEYS = {"retain_acc": "remain_acc"}
"""Old metric names, each still written (and logged) beside its new name, with the same value,
through release 0.2 and removed after it: ``retain_acc`` (logged ``retain/acc``) is the
paper's "remaining" accuracy, now ``remain_acc`` (``remain/acc``) like every other use of
the word in this package."""


def current_names(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with every key of :data:`RENAMED_KEYS` also under its new name, for files
    written before the rename (a metrics file, a record, a benchmark's results).

    Example:
        >>> current_names({"retain_acc": 99.0})
        {'retain_acc': 99.0, 'remain_acc': 99.0}
    """
    renamed = {new: metrics[old] for old, new in RENAMED_KEYS.items() if old in metrics and new not in metrics}
    return {**metrics, **renamed}
