"""Whether the engine can still serve: its thread runs, no step is stuck, no device error.

A failure is final (latched): the requests it caught already got 503, and the way back is a new
process. Liveness answers 503 from then on (edge/routes.py), so Kubernetes restarts the pod after
the chart's liveness probe fails ``failureThreshold`` times (15 s x 4: about a minute).
An out-of-memory step is not a failure: the worker frees memory and serves on.
"""

from __future__ import annotations

import threading
import time


class Health:
    """Written by the worker thread (beat, idle, fail); read by the watchdog and the event loop."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.changed = threading.Event()  # set on failure (and on stop): wakes the watchdog at once
        self._busy_since: float | None = None  # when the step under way began; None while waiting for work
        self._failure: str | None = None
        self._lock = threading.Lock()

    def beat(self) -> None:
        """A step begins (or a long one, such as a beam search, made progress)."""
        self._busy_since = time.monotonic()

    def idle(self) -> None:
        """Waiting for work: however long that takes, nothing is stuck."""
        self._busy_since = None

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def fail(self, reason: str) -> bool:
        """Latch the first failure; True if this call latched it."""
        with self._lock:
            if self._failure is not None:
                return False
            self._failure = reason
        self.changed.set()
        return True

    def failure(self, thread_alive: bool) -> str | None:
        """Why the engine failed, or None. A dead thread or a step past the stall bound latch now."""
        if self._failure is None:
            since = self._busy_since
            if not thread_alive:
                self.fail("the engine thread died")
            elif since is not None and time.monotonic() - since > self.stall_s:
                self.fail(f"a generation step has run for more than --engine_stall_seconds ({self.stall_s:g} s)")
        return self._failure
