"""Graceful shutdown: on SIGTERM stop taking work, let in-flight requests finish, then exit 0.

Left alone, uvicorn closes its listening socket at the first SIGTERM: probes and the requests that
still arrive while Kubernetes removes the pod from its endpoints get "connection refused". Instead,
this keeps serving while it drains: readiness answers 503 (the model is no longer ready), new
inference requests get a 503 envelope, and once the requests in flight are done (or
--drain_timeout_seconds passed) uvicorn's own handler takes over and exits cleanly.

uvicorn installs its signal handlers when it starts serving, after main() has run, so ours is put
in place from the application's lifespan start-up (on the main thread, after uvicorn's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, Callable

log = logging.getLogger("predictor")


class Lifecycle:
    """Draining state shared by the HTTP layer (web.py) and the signal handler."""

    def __init__(self, model: Any, drain_timeout: float) -> None:
        self.model = model
        self.drain_timeout = drain_timeout
        self.draining = False
        self.active = 0  # inference requests in flight (web.Tracker counts them)

    def engine_failure(self) -> str | None:
        """Why the model's engine failed for good, or None (the Tracker answers 503 at once then)."""
        return self.model.engine_failure()

    def lifespan(self, original: Callable) -> Callable:
        """Wrap the app's lifespan so that start-up installs the SIGTERM handler."""

        @contextlib.asynccontextmanager
        async def lifespan(app):
            self.install()
            async with original(app) as state:
                yield state

        return lifespan

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        uvicorn_exit = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.draining:  # a second SIGTERM changes nothing: the drain already has its deadline
                return
            self.draining = True
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain(uvicorn_exit, signum)))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _drain(self, uvicorn_exit: Any, signum: int) -> None:
        self.model.ready = False  # readiness probes now answer 503
        log.info("SIGTERM: draining %d in-flight request(s), at most %.0f s", self.active, self.drain_timeout)
        deadline = time.monotonic() + self.drain_timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.active:
            log.warning("drain timeout: %d request(s) still in flight; stopping anyway", self.active)
        else:
            log.info("drained; stopping the server")
        if callable(uvicorn_exit):
            uvicorn_exit(signum, None)
        else:  # nobody else handles SIGTERM: exit the way it asks for
            signal.signal(signal.SIGTERM, uvicorn_exit)
            signal.raise_signal(signum)
