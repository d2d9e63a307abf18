"""vLLM's sampling extensions to OpenAI's completions request: the fields, their bounds, their meaning.

Clients written for vLLM send these beside OpenAI's own fields (the OpenAI Python client as
``extra_body``; GuideLLM sends ``ignore_eos`` on every request). Each means what vLLM's
``SamplingParams`` says (https://docs.vllm.ai/en/v0.8.3/api/inference_params.html):

- ``top_k``: the k likeliest tokens only; -1 or 0 considers all (vLLM's "off").
- ``min_p``: only tokens at least this fraction as likely as the likeliest; 0 is off. It applies
  after top-k and top-p, transformers' order (vLLM's sampler applies it before them: with top_p as
  well, top-p's cut can then differ).
- ``repetition_penalty``: transformers' (and vLLM's) multiplicative penalty on tokens of the prompt
  and of the text so far; 1 is off. Unlike OpenAI's presence/frequency penalties it counts the prompt.
- ``min_tokens``: EOS and ``stop_token_ids`` cannot be generated before this many new tokens.
- ``ignore_eos``: EOS does not end the sequence; it may still be generated, and is then a token like
  any other (its text is special, so left out unless ``skip_special_tokens`` is false).
- ``stop_token_ids``: the sequence ends (``finish_reason`` "stop") when it generates one of these.
- ``include_stop_str_in_output``: the stop string, or the stop token's text, stays in the text.
- ``skip_special_tokens``: false keeps special tokens' text (GPT-J's one: ``<|endoftext|>``).

Greedy requests (temperature 0) ignore ``top_k`` and ``min_p``, as vLLM does. Bounds are checked here,
with the rest of the request (openai.py), in these names.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from predictor.errors import BadRequest
from predictor.protocols import seed


class VllmSampling(BaseModel):
    """The extension fields (openai.CompletionRequest has them too). None: vLLM's default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: int | None = Field(None, ge=-1, le=2**31 - 1)
    min_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    # The seed API's bounds: wide, and float32 scores never overflow (vLLM only asks for > 0).
    repetition_penalty: float | None = Field(None, ge=0.01, le=100, allow_inf_nan=False)
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_token_ids(cls, ids: list[int] | None) -> list[int] | None:
        return seed.check_stop_token_ids(ids)


FIELDS = tuple(VllmSampling.model_fields)


def check(req: VllmSampling, max_tokens: int) -> None:
    """The rules between fields: a 400 naming the field."""
    if req.min_tokens and req.min_tokens > max_tokens:
        raise BadRequest(f"min_tokens: must be <= max_tokens ({max_tokens}) (got {req.min_tokens})", field="min_tokens")


def check_vocabulary(req: VllmSampling, vocabulary: int) -> None:
    """A 400 naming the first stop token id outside the vocabulary: it could never be generated."""
    seed.check_token_ids("stop_token_ids", req.stop_token_ids, vocabulary)


def common(req: VllmSampling, prompt_tokens: int) -> dict[str, Any]:
    """Sampling's fields for every request, greedy or sampled (``min_length`` counts the prompt)."""
    return {
        "min_length": prompt_tokens + req.min_tokens if req.min_tokens else 0,
        "repetition_penalty": req.repetition_penalty,
        "stop_token_ids": tuple(dict.fromkeys(req.stop_token_ids or ())),  # as vLLM: duplicates dropped
        "ignore_eos": bool(req.ignore_eos),
        "include_stop_str_in_output": bool(req.include_stop_str_in_output),
        "skip_special_tokens": req.skip_special_tokens is not False,
    }


def sampled(req: VllmSampling) -> dict[str, Any]:
    """Sampling's fields for a sampled request: top-k 0 is off (transformers' default would be 50)."""
    return {"top_k": req.top_k if req.top_k and req.top_k > 0 else 0, "min_p": req.min_p or None}
