"""Field checks shared by the config dataclasses: one-line errors naming the field."""

from __future__ import annotations


def check_ints(obj, names, minimum: int = 1) -> None:
    """Raise ValueError unless every attribute in `names` of `obj` is an int >= `minimum` (bools refused)."""
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")


def check_numbers(obj, names, *, positive: bool) -> None:
    """Raise ValueError unless every attribute in `names` is a real number > 0 (`positive`) or >= 0."""
    for name in names:
        v = getattr(obj, name)
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (v > 0 if positive else v >= 0)
        if not ok:
            raise ValueError(f"{name} must be a positive number, got {v!r}" if positive
                             else f"{name} must be a number >= 0, got {v!r}")
