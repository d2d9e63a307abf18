"""The engine: one worker thread owns the model; the event loop hands it work and awaits futures.

Generation never runs on the event loop, so health probes and /metrics answer while the GPU works.
Requests run one at a time here; the scheduler seam is ``_next_batch`` (batching comes later).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable

from .errors import GenerationFailed, NotReady
from .sampling import GenerationRequest

log = logging.getLogger("predictor")

RunFn = Callable[[GenerationRequest], list[str]]


@dataclass
class _Job:
    request: GenerationRequest
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Engine:
    """A queue in front of a single worker thread that calls ``run`` for each request."""

    def __init__(self, run: RunFn) -> None:
        self._run = run
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="engine", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued work, then end the worker thread."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    async def submit(self, request: GenerationRequest) -> list[str]:
        """Queue ``request`` and wait for its texts. Cancelling the caller drops it if not started."""
        if self._stopped:
            raise NotReady("the server is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(request, future, loop))
        return await future

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.future.cancelled():  # the client went away while it waited
                continue
            try:
                result = self._run(job.request)
            except Exception:  # one bad request never kills the worker
                log.exception("generation failed")
                _settle(job, exception=GenerationFailed("generation failed; see the server log"))
            else:
                _settle(job, result=result)


def _settle(job: _Job, *, result: list[str] | None = None, exception: BaseException | None = None) -> None:
    def apply() -> None:
        if job.future.done():  # cancelled meanwhile
            return
        if exception is not None:
            job.future.set_exception(exception)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
