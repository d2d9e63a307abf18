"""OpenAI's completions API over the contract: the request model, its translation, and the responses.

Pure functions; the routes are in openai_routes.py. What OpenAI's API has and GPT-J cannot give
(``best_of`` > 1, ``suffix``, ``logit_bias``) is refused with a 400 naming the field rather than
silently ignored. ``logprobs`` N (0-5) reports each generated token's logprob and N alternatives
(logprobs.py has the shape); with ``echo`` the prompt's tokens too, and ``max_tokens`` 0 then scores
the prompt without generating (what lm-evaluation-harness sends to score a text). ``prompt`` may
be text or token ids, one prompt or a list. Semantics follow https://platform.openai.com/docs/api-reference/completions:
``max_tokens`` 16 by default, ``temperature`` 1 by default and 0 for greedy, no top-k, and
``prompt`` tokens plus ``max_tokens`` must fit the context.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from predictor.core import Completion, GenerationRequest
from predictor.errors import BadRequest
from predictor.protocols import logprobs, seed
from predictor.protocols.logprobs import MAX_LOGPROBS
from predictor.settings import Limits

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
#: Our field names in messages from the shared validation, and OpenAI's names for them.
_RENAMED = {"max_new_tokens": "max_tokens", "num_return_sequences": "n", "max_length": "the length limit"}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """The body of ``POST /openai/v1/completions``."""

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

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, prompt: Any) -> Any:
        if isinstance(prompt, str):
            return prompt
        if not isinstance(prompt, list) or not (all(isinstance(item, str) for item in prompt) or _ids(prompt)
                                                or all(isinstance(item, list) and _ids(item) for item in prompt)):
            raise ValueError(f"must be a string, a list of strings, a list of token ids, or a list of lists of "
                             f"token ids (got {seed.kind(prompt)})")
        if not prompt or any(isinstance(item, list) and not item for item in prompt):
            raise ValueError("must hold at least one prompt, and a token-id prompt at least one token")
        return prompt


def _ids(items: list) -> bool:
    """A list of token ids (JSON integers; true and false are not ids)."""
    return all(isinstance(item, int) and not isinstance(item, bool) for item in items)


FIELDS = tuple(CompletionRequest.model_fields)


def parse(body: Any, limits: Limits) -> CompletionRequest:
    """Validate the body, or raise BadRequest naming the field and its bound."""
    if not isinstance(body, dict):
        raise BadRequest(f"body: must be a JSON object (got {seed.kind(body)})")
    try:
        req = CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise BadRequest("; ".join(seed.describe(error, FIELDS) for error in exc.errors()[:5])) from None
    unsupported = [("suffix", req.suffix)] if req.suffix is not None else []
    unsupported += [("best_of", req.best_of)] if req.best_of not in (None, 1) else []
    unsupported += [("logit_bias", req.logit_bias)] if req.logit_bias else []
    if unsupported:
        raise BadRequest(f"{unsupported[0][0]}: not supported by this server; leave it out")
    prompts = prompts_of(req)
    if len(prompts) > limits.max_prompts:
        raise BadRequest(f"prompt: at most {limits.max_prompts} prompts per request (got {len(prompts)})")
    if (req.n or 1) > limits.max_return_sequences:
        raise BadRequest(f"n: must be <= {limits.max_return_sequences} (got {req.n})")
    if req.max_tokens == 0 and not req.echo:
        raise BadRequest("max_tokens: must be >= 1 (got 0); 0 is for scoring a prompt, with echo: true")
    return req


def prompts_of(req: CompletionRequest) -> list[str | list[int]]:
    """Each prompt: its text, or its token ids."""
    prompt = req.prompt
    return [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else list(prompt)


def token_ids(req: CompletionRequest) -> list[list[int] | None]:
    """Per prompt, the token ids it was sent as (None: text, which the server tokenizes)."""
    return [prompt if isinstance(prompt, list) else None for prompt in prompts_of(req)]


def copies(req: CompletionRequest) -> int:
    """Greedy decoding has one answer: ``n`` > 1 with temperature 0 returns it n times."""
    return (req.n or 1) if greedy(req) else 1


def greedy(req: CompletionRequest) -> bool:
    return req.temperature == 0


def prompt_requests(req: CompletionRequest) -> list[seed.PromptRequest]:
    """The contract's request objects for these prompts (validated again, with our bounds, by plan())."""
    # max_tokens 0 (echo scoring) becomes 1 for the shared validation; with_penalties sets it back
    fields: dict[str, Any] = {"max_new_tokens": max(1, max_tokens(req)), "stop": req.stop}
    if greedy(req):
        fields["do_sample"] = False
    else:  # OpenAI samples from the full distribution: no top-k (transformers' default is 50)
        fields.update(do_sample=True, temperature=req.temperature if req.temperature is not None else 1.0,
                      top_p=req.top_p, top_k=0, seed=req.seed, num_return_sequences=req.n)
    given = {name: value for name, value in fields.items() if value is not None}
    prompts = prompts_of(req)  # a token-id prompt's text comes from its ids (model.prepare)
    return seed.parse([{"prompt": prompt if isinstance(prompt, str) else "", **given} for prompt in prompts],
                      len(prompts))


def max_tokens(req: CompletionRequest) -> int:
    return req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS


def with_penalties(req: CompletionRequest, generations: Sequence[GenerationRequest],
                   context: int) -> list[GenerationRequest]:
    """Check the context window and add what the contract does not have: OpenAI's penalties, logprobs,
    and echo scoring (the prompt's logprobs, and with max_tokens 0 no new token)."""
    wanted, many = max_tokens(req), len(generations) > 1
    for index, generation in enumerate(generations):
        if len(generation.input_ids) + wanted > context:
            name = f"prompt[{index}]" if many else "prompt"
            raise BadRequest(f"max_tokens: {name} has {len(generation.input_ids)} tokens; with max_tokens "
                             f"{wanted} that exceeds this server's limit of {context} tokens (prompt plus max_tokens)")
    scoring = bool(req.echo) and req.logprobs is not None
    return [replace(generation, sampling=replace(
        generation.sampling, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        logprobs=req.logprobs, score_prompt=scoring,
        max_length=len(generation.input_ids) + wanted if wanted == 0 else generation.sampling.max_length))
        for generation in generations]


def renamed(error: BadRequest) -> BadRequest:
    """A message from the shared validation, in OpenAI's field names (``[1].prompt`` -> ``prompt[1]``)."""
    message = re.sub(r"^\[(\d+)\]\.(\w+)", r"\2[\1]", error.message)
    for ours, theirs in _RENAMED.items():
        message = re.sub(rf"\b{ours}\b", theirs, message)
    return BadRequest(message)


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
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(ids: Ids, req: CompletionRequest, requests: Sequence[GenerationRequest],
             completions: Sequence[Sequence[Completion]]) -> dict[str, Any]:
    """The non-streaming answer: choices in prompt order, ``n`` per prompt, and the token usage."""
    choices, generated = [], 0
    for generation, sequences in zip(requests, completions, strict=True):
        for completion in [c for c in sequences for _ in range(copies(req))]:
            text = (generation.prompt if req.echo else "") + completion.continuation
            choices.append(choice(len(choices), text, finish_reason(completion),
                                  logprobs.of_completion(completion, generation.prompt, bool(req.echo))))
            generated += completion.generated_tokens
    prompt_tokens = sum(len(generation.input_ids) for generation in requests)
    return {**ids.header(), "choices": choices, "usage": usage(prompt_tokens, generated)}


def models(name: str, created: int) -> dict[str, Any]:
    """``GET /openai/v1/models``: the one model this server serves."""
    return {"object": "list", "data": [model(name, created)]}


def model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "EleutherAI"}
