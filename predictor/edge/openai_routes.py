"""OpenAI-compatible routes under KServe's ``/openai/v1`` prefix, on the one engine.

KServe's own OpenAI routes need vLLM, which this image does not ship. Errors come in OpenAI's
error format (web.error_body looks the path up in protocols/registry.py). A stream starts with the first generated piece, so
errors before it are ordinary error responses; one after it is a last ``data: {"error": ...}``
event, and every stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import AsyncIterator, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from predictor.core import GenerationRequest
from predictor.edge.serving import Serving, serving
from predictor.protocols import openai as oa
from predictor.protocols import seed
from predictor.protocols.registry import OPENAI  # this module's protocol: parse, render, stream, errors
from predictor.protocols.sse import HEADERS, event, failure_event, started


async def list_models(model: Serving) -> JSONResponse:
    return JSONResponse(oa.models(model.name, model.created))


async def get_model(model: Serving, model_id: str) -> JSONResponse:
    return JSONResponse(oa.model(serving(model, model_id).name, model.created))


async def completions(model: Serving, request: Request) -> JSONResponse | StreamingResponse:
    """``POST /openai/v1/completions``: parse, tokenize, translate (openai.py), generate, answer."""
    body = seed.decode_body(await request.body(), request.headers.get("content-type"))
    req = OPENAI.parse(body, model.settings.limits)
    serving(model, req.model)
    oa.check_vocabulary(req, model.vocabulary())
    generations = oa.requests(req, *await model.encode(oa.prompts_of(req)), model.settings.limits)
    if req.stream:
        return await _stream(model, req, generations)
    results = await model.generate(generations)
    return JSONResponse(OPENAI.render(oa.Ids(model.name), req, generations, results))


async def _stream(
    model: Serving, req: oa.CompletionRequest, generations: Sequence[GenerationRequest]
) -> StreamingResponse:
    render = OPENAI.stream(oa.Ids(model.name), req, generations)  # every chunk is made there
    events = await started(model.stream(generations))

    async def body() -> AsyncIterator[bytes]:
        try:
            for chunk in render.opening():
                yield event(chunk)
            async for prompt, item in events:
                for chunk in render.render(prompt, item):
                    yield event(chunk)
            for chunk in render.closing():
                yield event(chunk)
        except Exception as exc:
            yield failure_event(exc, OPENAI.error)
        yield event("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)
