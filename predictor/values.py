"""Parsers of setting values (flags and environment variables): one message shape for every bound.

Each raises ValueError with a message that says the bound and what was given; settings.py turns it
into argparse's error (flag) or an exit naming the variable.
"""

from __future__ import annotations

from typing import Any, Callable


def number(
    kind: Callable[[str], float], low: float, high: float | None = None, *, unit: str = "", above: bool = False
) -> Callable[[str], Any]:
    """A parser for a number of ``kind`` in [low, high] (``above``: low itself excluded); one message shape."""

    def parse(value: str) -> Any:
        number = kind(value)
        if (number > low if above else number >= low) and (high is None or number <= high):
            return number
        if high is None:
            bound = f"{'>' if above else '>='} {low}"
        elif above:
            bound = f"> {low} and <= {high}"
        else:
            bound = f"between {low} and {high}{unit}"
        raise ValueError(f"must be {bound} (got {number if kind is int else value})")

    parse.__name__ = kind.__name__
    return parse


def or_auto(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, or None for "auto"."""

    def parse_auto(value: str) -> Any:
        try:
            return None if value == "auto" else parse(value)
        except ValueError as exc:  # "must be >= 1 (got 0)" -> "must be auto or >= 1 (got 0)"
            text = str(exc)
            bound = text.removeprefix("must be ") if text.startswith("must be ") else f"a number (got {value!r})"
            raise ValueError(f"must be auto or {bound}") from None

    return parse_auto


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false (got {value!r})")


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)} (got {value!r})")
        return value

    parse.__name__ = "choice"
    return parse
