"""OpenAI's completions API: the request model, its one translation into GenerationRequests, the responses.

Pure functions; the route is in edge/openai_routes.py. A request is validated once, here, and every
message names OpenAI's own fields (``max_tokens``, ``n``, ``prompt[1]``). What OpenAI's API has and
GPT-J cannot give (``best_of`` > 1, ``suffix``, ``logit_bias``) is refused with a 400 naming the
field rather than silently ignored. ``logprobs`` N (0-5) reports each generated token's logprob and N
alternatives, the token itself always among them (logprobs.py has the shape); with ``echo`` the
prompt's tokens too, and ``max_tokens`` 0 then scores the prompt without generating (what
lm-evaluation-harness sends to score a text).
``prompt`` may be text or token ids, one prompt or a list. Semantics follow https://platform.openai.com/docs/api-reference/completions:
``max_tokens`` 16 by default, ``temperature`` 1 by default and 0 for greedy, no top-k, and
``prompt`` tokens plus ``max_tokens`` must fit the context. vLLM's sampling extensions (``top_k``,
``min_p``, ...) have vLLM's meaning (vllm_sampling.py); any other field is a 400.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from predictor.core import Completion, GenerationRequest, Sampling
from predictor.errors import BadRequest
from predictor.protocols import logprobs, openai_context, seed, structured, vllm_sampling
from predictor.protocols.logprobs import MAX_LOGPROBS
from predictor.protocols.openai_errors import error as error  # its error body, where the routes find it
from predictor.settings import Limits

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: with include_usage, usage on every chunk (openai_stream.py)


class CompletionRequest(vllm_sampling.VllmSampling):
    """The body of ``POST /openai/v1/completions``: OpenAI's fields, and vLLM's extensions (vllm_sampling.py)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)  # 0 only with echo (scoring the prompt)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    echo: bool | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    user: str | None = None  # an end-user id for the caller's own records: accepted, not used
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    # Not available here: a 400 unless absent or at the value that means "off".
    best_of: int | None = None
    suffix: str | None = None
    logit_bias: dict[str, float] | None = None
    response_format: structured.ResponseFormat | None = None  # OpenAI's; one constraint with structured_outputs
    structured_outputs: structured.StructuredOutputs | None = None  # vLLM's

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, str):
            return prompt
        if not isinstance(prompt, list) or not (
            all(isinstance(item, str) for item in prompt)
            or _ids(prompt)
            or all(isinstance(item, list) and _ids(item) for item in prompt)
        ):
            raise ValueError(
                f"must be a string, a list of strings, a list of token ids, or a list of lists of "
                f"token ids (got {seed.kind(prompt)})"
            )
        if not prompt or any(isinstance(item, list) and not item for item in prompt):
            raise ValueError("must hold at least one prompt, and a token-id prompt at least one token")
        return prompt

    # The seed API's own bounds on the same values (seed.py), in OpenAI's field names.
    @field_validator("stop")
    @classmethod
    def _stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        return seed.check_stop(stop)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, temperature: float | None) -> float | None:
        return seed.check_temperature(temperature)


def _ids(items: list) -> bool:
    """A list of token ids (JSON integers; true and false are not ids)."""
    return all(isinstance(item, int) and not isinstance(item, bool) for item in items)


FIELDS = tuple(sorted(CompletionRequest.model_fields, key=vllm_sampling.FIELDS.__contains__))  # OpenAI's first


def parse(body: Any, limits: Limits) -> CompletionRequest:
    """Validate the body, or raise BadRequest naming the field and its bound."""
    if not isinstance(body, dict):
        raise BadRequest(f"body: must be a JSON object (got {seed.kind(body)})", field="body")
    try:
        req = CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise seed.invalid(exc.errors(), FIELDS) from None
    unsupported = [("suffix", req.suffix)] if req.suffix is not None else []
    unsupported += [("best_of", req.best_of)] if req.best_of not in (None, 1) else []
    unsupported += [("logit_bias", req.logit_bias)] if req.logit_bias else []
    if unsupported:
        name = unsupported[0][0]
        raise BadRequest(f"{name}: not supported by this server; leave it out", field=name)
    structured.requested(req.response_format, req.structured_outputs)  # a 400 for a bad or second constraint
    prompts = prompts_of(req)
    if len(prompts) > limits.max_prompts:
        raise BadRequest(
            f"prompt: at most {limits.max_prompts} prompts per request (got {len(prompts)})", field="prompt"
        )
    if (req.n or 1) > limits.max_return_sequences:
        raise BadRequest(f"n: must be <= {limits.max_return_sequences} (got {req.n})", field="n")
    if req.max_tokens == 0 and not req.echo:
        raise BadRequest(
            "max_tokens: must be >= 1 (got 0); 0 is for scoring a prompt, with echo: true", field="max_tokens"
        )
    vllm_sampling.check(req, max_tokens(req))
    for at, (name, prompt) in enumerate(zip(_names(prompts), prompts, strict=True)):
        try:
            if isinstance(prompt, str):
                seed.check_text(prompt)
        except ValueError as exc:
            raise BadRequest(f"{name}: {exc}", field="prompt", index=_index(prompts, at)) from None
    return req


def _names(prompts: Sequence[Any]) -> list[str]:
    """How messages name each prompt: ``prompt``, or ``prompt[i]`` when there are several."""
    return [f"prompt[{i}]" for i in range(len(prompts))] if len(prompts) > 1 else ["prompt"]


def _index(prompts: Sequence[Any], at: int) -> int | None:
    """The index a message names for prompt ``at`` (as _names: none for a single prompt)."""
    return at if len(prompts) > 1 else None


def prompts_of(req: CompletionRequest) -> list[str | list[int]]:
    """Each prompt: its text, or its token ids."""
    prompt = req.prompt
    return [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else list(prompt)


def check_vocabulary(req: CompletionRequest, vocabulary: int) -> None:
    """A 400 naming the first token id outside ``0 .. vocabulary - 1`` (``prompt[1][1]``)."""
    vllm_sampling.check_vocabulary(req, vocabulary)
    prompts = prompts_of(req)
    for at, (name, prompt) in enumerate(zip(_names(prompts), prompts, strict=True)):
        for index, token in enumerate(prompt if isinstance(prompt, list) else ()):
            if not 0 <= token < vocabulary:
                raise BadRequest(
                    f"{name}[{index}]: token id {token} is outside the vocabulary (0 to {vocabulary - 1})",
                    field="prompt",
                    index=at if len(prompts) > 1 else index,
                )


def copies(req: CompletionRequest) -> int:
    """Greedy decoding has one answer: ``n`` > 1 with temperature 0 returns it n times."""
    return (req.n or 1) if greedy(req) else 1


def greedy(req: CompletionRequest) -> bool:
    return req.temperature == 0


def max_tokens(req: CompletionRequest) -> int:
    return req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS


def requests(
    req: CompletionRequest, texts: Sequence[str], token_ids: Sequence[Sequence[int]], limits: Limits
) -> list[GenerationRequest]:
    """The engine's requests for a parsed request and its prompts' texts and token ids: every prompt,
    with ``max_tokens``, must fit the context window (``limits.max_length``), or a 400 names it."""
    wanted, names = max_tokens(req), _names(token_ids)
    for at, (name, ids) in enumerate(zip(names, token_ids, strict=True)):
        if not ids:
            raise BadRequest(f"{name}: must not be empty", field="prompt", index=_index(names, at))
    openai_context.check(names, token_ids, wanted, limits.max_length)
    return [
        GenerationRequest(
            prompt, tuple(ids), sampling(req, len(ids) + wanted), wants_list=not greedy(req) and (req.n or 1) > 1
        )
        for prompt, ids in zip(texts, token_ids, strict=True)
    ]


def sampling(req: CompletionRequest, max_length: int) -> Sampling:
    """OpenAI's semantics as generation settings: temperature 0 is greedy (one answer, copied ``n``
    times); otherwise it samples from the full distribution (no top-k but vLLM's ``top_k``: transformers'
    default is 50), at temperature 1 unless given. The penalties apply to the tokens generated so far. ``echo`` with
    ``logprobs`` also scores the prompt (``max_tokens`` 0: the prompt only, nothing generated)."""
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    common = {
        "max_length": max_length,
        "stop": stop,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "logprobs": req.logprobs,
        "score_prompt": bool(req.echo) and req.logprobs is not None,
        **vllm_sampling.common(req, max_length - max_tokens(req)),
        "constraint": structured.requested(req.response_format, req.structured_outputs),
    }
    if greedy(req):
        return Sampling(**common)
    return Sampling(
        **common,
        do_sample=True,
        num_return_sequences=req.n or 1,
        top_p=req.top_p,
        **vllm_sampling.sampled(req),
        temperature=req.temperature if req.temperature is not None else 1.0,
        seed=req.seed,
    )


def finish_reason(completion: Completion) -> str:
    """OpenAI has two: "stop" (EOS or a stop string) and "length" (max_tokens; also our max_time)."""
    return "stop" if completion.finish_reason in ("eos", "stop") else "length"


class Ids:
    """The id, creation time and model name every object of one response shares."""

    def __init__(self, model: str) -> None:
        self.id, self.created, self.model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), model

    def header(self) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model}


def choice(index: int, text: str, finish: str | None, token_logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": token_logprobs, "finish_reason": finish}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def response(
    ids: Ids, req: CompletionRequest, requests: Sequence[GenerationRequest], completions: Sequence[Sequence[Completion]]
) -> dict[str, Any]:
    """The non-streaming answer: choices in prompt order, ``n`` per prompt, and the token usage."""
    choices, generated = [], 0
    for generation, sequences in zip(requests, completions, strict=True):
        for completion in [c for c in sequences for _ in range(copies(req))]:
            text = (generation.prompt if req.echo else "") + completion.continuation
            choices.append(
                choice(
                    len(choices),
                    text,
                    finish_reason(completion),
                    logprobs.of_completion(completion, generation.prompt, bool(req.echo), sampled=True),
                )
            )
            generated += completion.generated_tokens
    prompt_tokens = sum(len(generation.input_ids) for generation in requests)
    return {**ids.header(), "choices": choices, "usage": usage(prompt_tokens, generated)}


def models(name: str, created: int) -> dict[str, Any]:
    """``GET /openai/v1/models``: the one model this server serves."""
    return {"object": "list", "data": [model(name, created)]}


def model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "EleutherAI"}
