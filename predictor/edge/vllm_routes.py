"""vLLM's routes beside the OpenAI API, under ``/openai``: what vLLM's clients call besides completions.

- ``GET /openai/health``: vLLM's ``/health``, what load generators (GuideLLM) ask before they start:
  200 with an empty body once the model is loaded and its engine serves, else 503 (loading,
  draining, or the engine failed), never a 404. Open without an API key, like the other probes.
- ``POST /openai/tokenize`` and ``/openai/detokenize``: vLLM's shapes (protocols/openai_tokens.py).
  They need a key when keys are on, and are not inference requests (no record, not counted).

Errors come in OpenAI's format, as everywhere under ``/openai/`` (web.error_body, by the registry).
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from predictor.edge.serving import Serving, serving
from predictor.errors import EngineUnhealthy, NotReady
from predictor.protocols import openai_tokens, seed


async def health(model: Serving) -> Response:
    failure = model.engine_failure()
    if failure is not None:
        raise EngineUnhealthy.because(failure)
    if not model.ready:
        raise NotReady(f"model {model.name!r} is not loaded yet")
    return Response(status_code=200)


async def tokenize(model: Serving, request: Request) -> JSONResponse:
    req = openai_tokens.parse_tokenize(await _body(request))
    serving(model, req.model or model.name)
    _, (ids,) = await model.encode([req.prompt])
    strs = await model.token_strs(ids) if req.return_token_strs else None
    return JSONResponse(openai_tokens.tokenized(ids, model.settings.limits.max_length, strs))


async def detokenize(model: Serving, request: Request) -> JSONResponse:
    req = openai_tokens.parse_detokenize(await _body(request))
    serving(model, req.model or model.name)
    openai_tokens.check_vocabulary(req, model.vocabulary())
    (text,), _ = await model.encode([req.tokens])
    return JSONResponse(openai_tokens.detokenized(text))


async def _body(request: Request):
    return seed.decode_body(await request.body(), request.headers.get("content-type"))
