"""Checks of plain Python arguments (counts, seeds, tolerances): one ValueError sentence that
names the argument and echoes the value (docs/design.md §8).

Imports nothing of phasediff, so every layer may use it except ``processes/``, which keeps
its own checks (docs/design.md §9). Bools are refused where a number is expected: ``True`` is
an ``int`` to Python but never a meaningful count or scale.
"""

from __future__ import annotations

import math
import numbers


def is_int(value: object) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number (int, float, NumPy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: object, name: str, low: int = 1, high: int | None = None) -> int:
    """``int(value)`` for an integer in [low, high) (no upper bound when high is None), else
    ``ValueError("{name} must be an integer ≥ {low}, got {value!r}.")`` (``in [low, high)``
    when bounded)."""
    number = int(value) if is_int(value) else None  # type: ignore[call-overload]
    if number is None or number < low or (high is not None and number >= high):
        valid = f"≥ {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be an integer {valid}, got {value!r}.")
    return number


def check_positive(value: object, name: str) -> float:
    """``float(value)`` for a finite real number > 0, else
    ``ValueError("{name} must be a finite number > 0, got {value!r}.")``."""
    if not is_real(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type,operator]
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)  # type: ignore[arg-type]


__all__ = ["check_int", "check_positive", "is_int", "is_real"]
