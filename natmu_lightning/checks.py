"""Argument checks shared by the modules: one wording for every bad number or choice.

Each check raises ``ValueError`` naming the argument, what it must be and the value given,
e.g. ``lr must be a positive number, got 0.0``; booleans never pass as numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

Options = TypeVar("Options")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(name: str, value: Any) -> None:
    """``value`` is a finite number > 0.

    Example:
        >>> check_positive("lr", 0.0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a positive number, got 0.0
    """
    if not (_is_number(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
    """``value`` is a finite number >= 0."""
    if not (_is_number(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
    meaning: str = "",
) -> None:
    """``value`` is a finite number in ``[low, high]`` (open at an end with ``low_open`` /
    ``high_open``); ``meaning`` (e.g. "the weight of the remaining-set term") is added to the
    message.

    Example:
        >>> check_in_range("alpha", None, 0.0, 1.0)
        Traceback (most recent call last):
        ...
        ValueError: alpha must lie in [0, 1], got None
    """
    inside = _is_number(value) and (value > low if low_open else value >= low)
    inside = inside and (value < high if high_open else value <= high)
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        note = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must lie in {interval}{note}, got {value!r}")


def check_integer(name: str, value: Any, minimum: int) -> None:
    """``value`` is an ``int`` (not a ``bool``) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``.

    Example:
        >>> check_choice("optimizer", "adam", ("adamw", "sgd"))
        Traceback (most recent call last):
        ...
        ValueError: optimizer must be 'adamw' or 'sgd', got 'adam'
    """
    if value not in choices:
        quoted = [repr(choice) for choice in choices]
        options = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ValueError(f"{name} must be {options}, got {value!r}")


def options_from(name: str, value: Any, default: Options) -> Options:
    """``value`` as options of ``default``'s (frozen dataclass) type: itself, or a mapping of the
    fields that differ from ``default`` (YAML, a dict from Python, a checkpoint's hyperparameters).

    Raises:
        ValueError: neither, or a mapping with a field the options do not have.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Shift:
        ...     delta: float = 0.0
        ...     k: int = 4
        >>> options_from("shift", {"k": 2}, Shift(delta=0.5))
        Shift(delta=0.5, k=2)
    """
    kind = type(default)
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a {kind.__name__} or a mapping of its fields, got {type(value).__name__}")
    known = [field.name for field in dataclasses.fields(kind)]  # type: ignore[arg-type]  # a dataclass type
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{name} has no field {unknown}; its fields: {known}")
    return dataclasses.replace(default, **value)  # type: ignore[type-var]  # a dataclass instance
