"""The one way a failed batch is narrowed down: run it together, and if that raises, each part alone.

A request that makes a batch fail (a bad value deep in generation, an injected fault) must fail on
its own; the requests that happened to share its batch are run again and succeed. Beam searches
(runner.Runner), requests joining the continuous batch (engine/worker.py) and a failed decode step
(continuous.ContinuousBatch.advance_each) all narrow down through here.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence, TypeVar

log = logging.getLogger("predictor")

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


Fatal = Callable[[BaseException], bool]


def each_alone(
    items: Sequence[Item], run: Callable[[Item], Outcome], fatal: Fatal | None = None
) -> list[Outcome | Exception]:
    """``run(item)`` for each item, its exception in its place when it raises (a ``fatal`` one is raised)."""
    outcomes: list[Outcome | Exception] = []
    for item in items:
        try:
            outcomes.append(run(item))
        except Exception as exc:  # noqa: BLE001 - this item fails alone; the caller reports it
            if fatal is not None and fatal(exc):
                raise
            outcomes.append(exc)
    return outcomes


def together_or_alone(
    items: Sequence[Item], run: Callable[[Sequence[Item]], Outcome], warning: str, fatal: Fatal | None = None
) -> list[tuple[list[Item], Outcome | Exception]]:
    """``run(items)``; if it raises, ``run([item])`` for each item. Returns each group run and its outcome.

    ``warning`` is logged (with the count and the error) before the items run one by one. An error
    that ``fatal`` names (one every later step would hit too) is raised at once, never retried.
    """
    try:
        return [(list(items), run(items))]
    except Exception as exc:
        if fatal is not None and fatal(exc):
            raise
        if len(items) == 1:
            return [(list(items), exc)]
        log.warning(warning, len(items), exc)
    return list(zip(([item] for item in items), each_alone(items, lambda item: run([item]), fatal), strict=True))
