"""Server-sent events: the encoding, fan-in of several generations, and the seed API's ``:stream`` route.

``POST /v1/models/<name>:stream`` takes the ``:predict`` body for one prompt and answers
``text/event-stream``: ``data: {"index": i, "text": piece}`` as sequence i's text grows, then one
``data:`` event with the complete envelope. The response starts with the first piece, so every
error before it (validation, a full queue, a failure in the first step) is an ordinary error
response; an error after it ends the stream with a failed envelope event. A client that
disconnects stops the generation at the next step (web.Tracker cancels the request).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi import Request
from fastapi.responses import StreamingResponse

from predictor import errors
from predictor.errors import BadRequest, NotFound, NotReady, succeeded
from predictor.protocols.seed import envelope_data
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


def serving(model, name: str):
    """``model`` when it is the one named and ready, else the 404 or 503 a client should see."""
    if name != model.name:
        raise NotFound(f"model {name!r} is not served here (this server serves {model.name!r})")
    if not model.ready:
        raise NotReady(f"model {model.name!r} is not loaded yet")
    return model


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


async def seed_stream(model, model_name: str, request: Request) -> StreamingResponse:
    """``POST /v1/models/{model_name}:stream``."""
    model = serving(model, model_name)
    (prepared, *more) = await model.preprocess(await request.body(), dict(request.headers))
    if more:
        raise BadRequest(f"body: a stream carries one prompt (got {len(more) + 1}); use :predict for several")
    if prepared.sampling.num_beams > 1:
        raise BadRequest("num_beams: a stream generates without beam search (num_beams 1); use :predict for "
                         "beam search")
    events = await started(model.stream([prepared]))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for _, (kind, index, value) in events:
                if kind == "text":
                    yield event({"index": index, "text": value})
                elif kind == "done":  # logprobs come in the envelope's details objects
                    message = "; ".join(prepared.notes) or None
                    yield event(succeeded(envelope_data([prepared], [value]), message))
        except Exception as exc:
            yield failure_event(exc, lambda failure: errors.failed(failure.message))

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)
