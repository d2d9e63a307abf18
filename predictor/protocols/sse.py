"""Server-sent events: the encoding, fan-in of several generations, and a stream's last (failed) event.

Shared by the seed API's ``:stream`` route (edge/seed_routes.py) and OpenAI's ``stream: true``
(edge/openai_routes.py). A stream starts with its first piece (``started``), so errors before it
are ordinary error responses; one after it becomes the stream's last event (``failure_event``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Callable, Sequence

from predictor import errors
from predictor.telemetry import records

log = logging.getLogger("predictor")

#: Proxies (nginx, Istio's Envoy) must pass events on as they come, not buffer the response.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


#: Characters that JSON leaves raw but that str.splitlines() and some SSE clients take for line breaks.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def event(data: Any) -> bytes:
    """One SSE event on one line: JSON escapes newlines and control characters, we the rest."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False).translate(_LINE_BREAKS)
    return f"data: {text}\n\n".encode()


async def merge(streams: Sequence[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """(which stream, item) as the streams produce them; the first error ends all of them."""
    if len(streams) == 1:  # the common case needs no tasks
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Any]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item, None))
            await queue.put((index, None, None))
        except Exception as exc:
            await queue.put((index, None, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is None:
                running -= 1
            else:
                yield index, item
    finally:  # stops the generations still running (engine.stream cancels its job when closed)
        for task in tasks:
            task.cancel()


async def started(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``events`` with its first item already taken, so its errors come before any response."""
    first = await anext(events)

    async def rest() -> AsyncIterator[Any]:
        yield first
        async for item in events:
            yield item

    return rest()


def failure_event(exc: BaseException, render: Callable[[errors.Failure], Any]) -> bytes:
    """The last event of a stream that failed after it started; the request's record gets the status."""
    failure = errors.classify(exc)
    if failure.status >= 500 and not isinstance(exc, errors.PredictorError):
        log.error("a stream failed", exc_info=exc)
    record = records.current()
    if record is not None:
        record.status = failure.status
    return event(render(failure))
