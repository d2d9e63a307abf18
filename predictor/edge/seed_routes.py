"""The seed API's ``:stream`` route: server-sent events of the ``:predict`` body for one prompt.

``POST /v1/models/<name>:stream`` answers ``text/event-stream``: ``data: {"index": i, "text": piece}``
as sequence i's text grows, then one ``data:`` event with the complete envelope. The response starts
with the first piece, so every error before it (validation, a full queue, a failure in the first
step) is an ordinary error response; an error after it ends the stream with a failed envelope event.
A client that disconnects stops the generation at the next step (web.Tracker cancels the request).
"""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from predictor.edge.serving import Serving, serving
from predictor.errors import BadRequest
from predictor.protocols import registry
from predictor.protocols.sse import HEADERS, event, failure_event, started


async def seed_stream(model: Serving, model_name: str, request: Request) -> StreamingResponse:
    """``POST /v1/models/{model_name}:stream``."""
    model = serving(model, model_name)
    (prepared, *more) = await model.preprocess(await request.body(), dict(request.headers))
    if more:
        raise BadRequest(
            f"body: a stream carries one prompt (got {len(more) + 1}); use :predict for several", field="body"
        )
    if prepared.sampling.num_beams > 1:
        raise BadRequest(
            "num_beams: a stream generates without beam search (num_beams 1); use :predict for beam search",
            field="num_beams",
        )
    events = await started(model.stream([prepared]))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for _, item in events:
                data = registry.SEED.stream(prepared, item)
                if data is not None:
                    yield event(data)
        except Exception as exc:
            yield failure_event(exc, registry.SEED.error)

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)
