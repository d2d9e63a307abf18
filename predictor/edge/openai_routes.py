"""OpenAI-compatible routes under KServe's ``/openai/v1`` prefix, on the one engine.

KServe's own OpenAI routes need vLLM, which this image does not ship. Errors come in OpenAI's
error format (web.error_body picks it by path). A stream starts with the first generated piece, so
errors before it are ordinary error responses; one after it is a last ``data: {"error": ...}``
event, and every stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from predictor.core import Completion, GenerationRequest, TokenLogprob
from predictor.edge.serving import Serving, serving
from predictor.protocols import logprobs, seed
from predictor.protocols import openai as oa
from predictor.protocols.sse import HEADERS, event, failure_event, started


async def list_models(model: Serving) -> JSONResponse:
    return JSONResponse(oa.models(model.name, model.created))


async def get_model(model: Serving, model_id: str) -> JSONResponse:
    return JSONResponse(oa.model(serving(model, model_id).name, model.created))


async def completions(model: Serving, request: Request) -> JSONResponse | StreamingResponse:
    """``POST /openai/v1/completions``: parse, tokenize, translate (openai.py), generate, answer."""
    body = seed.decode_body(await request.body(), request.headers.get("content-type"))
    req = oa.parse(body, model.settings.limits)
    serving(model, req.model)
    oa.check_vocabulary(req, model.vocabulary())
    generations = oa.requests(req, *await model.encode(oa.prompts_of(req)), model.settings.limits)
    if req.stream:
        return await _stream(model, req, generations)
    results = await model.generate(generations)
    return JSONResponse(oa.response(oa.Ids(model.name), req, generations, results))


async def _stream(
    model: Serving, req: oa.CompletionRequest, generations: Sequence[GenerationRequest]
) -> StreamingResponse:
    ids, width = oa.Ids(model.name), (req.n or 1)
    include_usage = req.stream_options is not None and req.stream_options.include_usage
    events = await started(model.stream(generations))

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        extra = {"usage": usage} if include_usage else {}
        return event({**ids.header(), "choices": choices, **extra})

    async def body() -> AsyncIterator[bytes]:
        tokens = _StreamedLogprobs(generations, req.logprobs is not None)
        try:
            if req.echo and req.logprobs is None:  # with logprobs, when the prefill has scored the prompt
                yield chunk(
                    [oa.choice(p * width + j, g.prompt, None) for p, g in enumerate(generations) for j in range(width)]
                )
            generated = 0
            async for prompt, (kind, index, value) in events:
                if kind == "prompt_logprobs":
                    scored = logprobs.render(value)
                    yield chunk(
                        [oa.choice(prompt * width + j, generations[prompt].prompt, None, scored) for j in range(width)]
                    )
                elif kind == "logprobs":
                    tokens.add(prompt, index, value)
                elif kind == "text":
                    scored = tokens.take(prompt, index)
                    yield chunk([oa.choice(i, value, None, scored) for i in _choices(req, prompt, index)])
                else:
                    finals, count = _finals(req, prompt, value, tokens)
                    generated += count
                    yield chunk(finals)
            if include_usage:
                prompt_tokens = sum(len(g.input_ids) for g in generations)
                yield event({**ids.header(), "choices": [], "usage": oa.usage(prompt_tokens, generated)})
        except Exception as exc:
            yield failure_event(exc, oa.error)
        yield event("[DONE]")

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)


def _choices(req: oa.CompletionRequest, prompt: int, sequence: int) -> list[int]:
    """The choice indexes one generated sequence feeds (several when greedy copies it ``n`` times)."""
    width, copies = req.n or 1, oa.copies(req)
    return [prompt * width + sequence * copies + copy for copy in range(copies)]


def _finals(
    req: oa.CompletionRequest, prompt: int, completions: list[Completion], tokens: _StreamedLogprobs
) -> tuple[list[dict], int]:
    """The last chunk's choices for one prompt (empty text, the finish reason, logprobs not yet sent),
    and its tokens."""
    choices, count = [], 0
    for sequence, completion in enumerate(completions):
        scored = tokens.take(prompt, sequence)
        for index in _choices(req, prompt, sequence):
            choices.append(oa.choice(index, "", oa.finish_reason(completion), scored))
            count += completion.generated_tokens
    return choices, count


class _StreamedLogprobs:
    """Tokens' logprobs that arrived before their text (engine "logprobs" events), per sequence; each
    text chunk takes them, with offsets that continue from the chunk before."""

    def __init__(self, generations: Sequence[GenerationRequest], wanted: bool) -> None:
        self.prompts, self.wanted = [g.prompt for g in generations], wanted
        self.pending: dict[tuple[int, int], list[TokenLogprob]] = {}
        self.offsets: dict[tuple[int, int], int] = {}

    def add(self, prompt: int, sequence: int, entries: Sequence[TokenLogprob]) -> None:
        self.pending.setdefault((prompt, sequence), []).extend(entries)

    def take(self, prompt: int, sequence: int) -> dict[str, Any] | None:
        entries = self.pending.pop((prompt, sequence), None)
        if entries is None:  # with logprobs asked, a chunk whose tokens came earlier: an empty object
            return logprobs.render(()) if self.wanted else None
        offset = self.offsets.get((prompt, sequence), len(self.prompts[prompt]))
        self.offsets[(prompt, sequence)] = offset + sum(len(entry.text) for entry in entries)
        return logprobs.render(entries, offset)
