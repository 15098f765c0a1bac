"""One-number summaries of a model against Retrain: the average gap and tug-of-war."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: The keys averaged by :func:`avg_gap` (TA, RA, FA, MIA).
AVG_GAP_KEYS = ("test_acc", "remain_acc", "forget_acc", "mia_entropy")
#: The accuracies multiplied by :func:`tug_of_war`.
TUG_OF_WAR_KEYS = ("forget_acc", "remain_acc", "test_acc")


def _get(d: Mapping, key: str, name: str) -> float:
    if key not in d:
        raise ValueError(f"{name} is missing the key {key!r} (has {sorted(map(str, d))})")
    return float(d[key])


def avg_gap(
    metrics: Mapping[str, float],
    reference: Mapping[str, float],
    keys: Sequence[str] = AVG_GAP_KEYS,
) -> float:
    """Avg. Gap: mean of ``|metrics[k] - reference[k]|`` over ``keys``, in points.

    With the default keys this is the paper's mean over (TA, RA, FA, MIA) of the
    distance to Retrain (``reference``).

    Args:
        metrics: the method's values (percent).
        reference: Retrain's values (percent).
        keys: which entries to average.

    Returns:
        The average absolute gap.

    Raises:
        ValueError: if a key is missing from either mapping, or ``keys`` is empty.

    Example:
        >>> rt = {"test_acc": 93.34, "remain_acc": 99.94, "forget_acc": 94.08, "mia_entropy": 83.88}
        >>> avg_gap(rt, rt)
        0.0
        >>> m = {"test_acc": 92.34, "remain_acc": 99.94, "forget_acc": 97.08, "mia_entropy": 83.88}
        >>> round(avg_gap(m, rt), 6)
        1.0
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("keys must not be empty")
    gaps = [abs(_get(metrics, k, "metrics") - _get(reference, k, "reference")) for k in keys]
    return sum(gaps) / len(gaps)


def tug_of_war(
    metrics: Mapping[str, float],
    reference: Mapping[str, float],
    keys: Sequence[str] = TUG_OF_WAR_KEYS,
) -> float:
    """Tug-of-war score: ``prod_k (1 - |metrics[k] - reference[k]| / 100)``.

    Over forget, remaining and test accuracy (percent) by default; 1.0 means identical
    to the reference (Retrain).

    Args:
        metrics: the method's accuracies (percent).
        reference: Retrain's accuracies (percent).
        keys: which entries to multiply.

    Raises:
        ValueError: if a key is missing from either mapping, or ``keys`` is empty.

    Example:
        >>> rt = {"forget_acc": 90.0, "remain_acc": 100.0, "test_acc": 90.0}
        >>> tug_of_war(rt, rt)
        1.0
        >>> round(tug_of_war({"forget_acc": 80.0, "remain_acc": 90.0, "test_acc": 90.0}, rt), 6)
        0.81
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("keys must not be empty")
    out = 1.0
    for k in keys:
        out *= 1.0 - abs(_get(metrics, k, "metrics") - _get(reference, k, "reference")) / 100.0
    return out


COLLAPSE_FRACTION = 0.8
"""A run has collapsed when its test or remaining accuracy falls below this fraction of the
original model's."""
COLLAPSE_KEYS = ("test_acc", "remain_acc")
FINITE_KEYS = ("forget_acc", "remain_acc", "test_acc")
"""The metrics that must be finite: others (a loss attack on a one-sample forget set, a
reference-free target on a tiny test set) are undefined by design on small sets."""


def collapse_reason(
    metrics: Mapping[str, object], original: Mapping[str, object] | None, fraction: float = COLLAPSE_FRACTION
) -> str | None:
    """Why a run has collapsed rather than unlearned, or ``None`` when it has not.

    A run has collapsed when an accuracy (:data:`FINITE_KEYS`) is not finite, or when its test or remaining
    accuracy falls below ``fraction`` of the original model's (``original``: the original's
    metrics, e.g. the unlearning record's ``metrics_before``; without them only the first
    test applies). Such a run has destroyed the model, not removed the forget set, and is not
    ranked beside runs that unlearned.

    Example:
        >>> original = {"test_acc": 90.0, "remain_acc": 100.0}
        >>> collapse_reason({"test_acc": 85.0, "remain_acc": 99.0, "forget_acc": 80.0}, original) is None
        True
        >>> collapse_reason({"test_acc": 10.0, "remain_acc": 99.0}, original)
        "test_acc 10.00 is below 80% of the original's 90.00"
        >>> collapse_reason({"test_acc": float("nan"), "remain_acc": 99.0}, original)
        'metrics not finite: test_acc'
    """
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    broken = [k for k in FINITE_KEYS if k in numbers and not math.isfinite(numbers[k])]
    if broken:
        return f"metrics not finite: {', '.join(broken)}"
    reasons = []
    for key in COLLAPSE_KEYS:
        before = (original or {}).get(key)
        if key in numbers and isinstance(before, (int, float)) and numbers[key] < fraction * float(before):
            reasons.append(f"{key} {numbers[key]:.2f} is below {fraction:.0%} of the original's {float(before):.2f}")
    return "; ".join(reasons) or None
