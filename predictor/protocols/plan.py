"""Pure mapping: validated seed request objects and their prompts' tokens -> GenerationRequests.

Cross-field rules live here (field-level bounds are in seed.py). Anything transformers would reject
at generate time is rejected here first as a 400, so a bad parameter never becomes a 500.
Values that are capped or have no effect are reported back in the response's ``message``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from predictor.core import BEAM_ONLY, SAMPLING_ONLY, GenerationRequest, Sampling
from predictor.errors import BadRequest
from predictor.protocols import structured
from predictor.protocols.seed import PromptRequest, check_token_ids
from predictor.settings import Limits

# Fields that plan() maps itself rather than passing to Sampling as they are.
_MAPPED = {
    "prompt",
    "max_length",
    "min_length",
    "max_new_tokens",
    "stop",
    "details",
    "stop_token_ids",
    "structured_outputs",
}


def requests(
    parsed: Sequence[PromptRequest], token_ids: Sequence[Sequence[int]], limits: Limits
) -> list[GenerationRequest]:
    """The engine's requests for request objects (seed API, v2) and their prompts' token ids.

    Messages about one of several request objects name it (``[1].prompt: must not be empty``).
    """
    prepared = []
    for index, (req, ids) in enumerate(zip(parsed, token_ids, strict=True)):
        where, item = (f"[{index}].", index) if len(parsed) > 1 else ("", None)
        if not ids:
            raise BadRequest("prompt: must not be empty", field="prompt").within(item)
        try:
            sampling, notes = plan(req, len(ids), limits)
        except BadRequest as exc:
            raise exc.within(item) from None
        prepared.append(
            GenerationRequest(
                prompt=req.prompt,
                input_ids=tuple(ids),
                sampling=sampling,
                notes=tuple(f"{where}{note}" for note in notes),
                wants_list=sampling.num_return_sequences > 1,
                details=bool(req.details) or req.logprobs is not None,
            )
        )
    return prepared


def plan(req: PromptRequest, prompt_tokens: int, limits: Limits) -> tuple[Sampling, tuple[str, ...]]:
    """Validate cross-field rules and return the settings plus notes (capped/ignored values)."""
    notes: list[str] = []
    req = _new_tokens_as_max_length(req, prompt_tokens, limits, notes)
    min_length = _min_length(req, limits, notes)
    max_length = _max_length(req, prompt_tokens, min_length, limits, notes)
    if min_length > max_length:
        raise BadRequest(f"min_length: must be <= max_length ({max_length}) (got {min_length})", field="min_length")
    given = req.model_dump(
        exclude_none=True,
        exclude=_MAPPED,
    )
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    stop_ids = tuple(dict.fromkeys(req.stop_token_ids or ()))  # as vLLM: duplicates dropped, order kept
    constraint = structured.constraint(req.structured_outputs)
    s = Sampling(
        max_length=max_length, min_length=min_length, stop=stop, stop_token_ids=stop_ids, constraint=constraint, **given
    )
    s = _greedy_or_sampling(s, notes)
    _check_counts(s, limits)
    s = _beam_options(s, notes)
    if s.stop_token_ids and s.num_beams > 1:  # a beam search ends its hypotheses at EOS only (scorer.py)
        raise BadRequest("stop_token_ids: not available with beam search (num_beams > 1)", field="stop_token_ids")
    structured.check_beams(s.constraint, s.num_beams)
    if s.logprobs is not None and s.num_beam_groups > 1:
        # diverse.py runs one search per group and keeps no per-step scores to report
        raise BadRequest("logprobs: not available with diverse beam search (num_beam_groups > 1)", field="logprobs")
    if s.encoder_no_repeat_ngram_size and s.encoder_no_repeat_ngram_size > prompt_tokens:
        # No n-gram of the prompt is that long, so it bans nothing; and transformers allocates one
        # list per n-gram position, so a huge value would exhaust memory (found by trying 10**11).
        notes.append(
            f"encoder_no_repeat_ngram_size {s.encoder_no_repeat_ngram_size} is longer than the "
            f"prompt ({prompt_tokens} tokens); ignored"
        )
        s = replace(s, encoder_no_repeat_ngram_size=None)
    return s, tuple(notes)


def check_vocabulary(parsed: Sequence[PromptRequest], vocabulary: int) -> None:
    """A 400 naming the first stop token id outside the vocabulary (``[1].stop_token_ids[0]``)."""
    for index, req in enumerate(parsed):
        try:
            check_token_ids("stop_token_ids", req.stop_token_ids, vocabulary)
        except BadRequest as exc:
            raise exc.within(index if len(parsed) > 1 else None) from None


def _new_tokens_as_max_length(
    req: PromptRequest, prompt_tokens: int, limits: Limits, notes: list[str]
) -> PromptRequest:
    """max_new_tokens is max_length counted without the prompt; the same limit applies."""
    if req.max_new_tokens is None:
        return req
    if req.max_length is not None:
        raise BadRequest("max_new_tokens: give max_length or max_new_tokens, not both", field="max_new_tokens")
    total = prompt_tokens + req.max_new_tokens
    if total > limits.max_length and prompt_tokens < limits.max_length:
        notes.append(
            f"max_new_tokens {req.max_new_tokens} with the prompt's {prompt_tokens} tokens is over the "
            f"limit of {limits.max_length}; capped to {limits.max_length - prompt_tokens}"
        )
        total = limits.max_length
    return req.model_copy(update={"max_length": total, "max_new_tokens": None})


def _max_length(req: PromptRequest, prompt_tokens: int, min_length: int, limits: Limits, notes: list[str]) -> int:
    if req.max_length is None:  # the default also stretches to honour min_length
        max_length = min(max(prompt_tokens + limits.default_new_tokens, min_length), limits.max_length)
    elif req.max_length > limits.max_length:
        notes.append(
            f"max_length {req.max_length} is over the limit of {limits.max_length}; capped to {limits.max_length}"
        )
        max_length = limits.max_length
    else:
        max_length = req.max_length
    if prompt_tokens >= limits.max_length:
        raise BadRequest(
            f"prompt: {prompt_tokens} tokens is too long: max_length (prompt + new tokens) is "
            f"limited to {limits.max_length}, so a prompt may have at most "
            f"{limits.max_length - 1} tokens",
            field="prompt",
        )
    if prompt_tokens >= max_length:
        raise BadRequest(
            f"max_length: must be greater than the prompt's {prompt_tokens} tokens "
            f"to generate anything (got {max_length})",
            field="max_length",
        )
    return max_length


def _min_length(req: PromptRequest, limits: Limits, notes: list[str]) -> int:
    if req.min_length is None:
        return 0
    if req.min_length > limits.min_length:
        notes.append(
            f"min_length {req.min_length} is over the limit of {limits.min_length}; capped to {limits.min_length}"
        )
        return limits.min_length
    return req.min_length


def _greedy_or_sampling(s: Sampling, notes: list[str]) -> Sampling:
    if s.temperature == 0:
        # The contract: temperature 0 means greedy (transformers raises on 0 with sampling).
        if s.do_sample:
            notes.append("temperature 0 means greedy decoding; do_sample ignored")
        s = replace(s, temperature=None, do_sample=False)
    if not s.do_sample:
        ignored = [name for name in SAMPLING_ONLY if getattr(s, name) is not None]
        if ignored:
            notes.append(f"{_names(ignored)} with do_sample: true; ignored")
        s = replace(s, **dict.fromkeys(SAMPLING_ONLY))
    return s


def _check_counts(s: Sampling, limits: Limits) -> None:
    if s.num_beams > limits.max_num_beams:
        raise BadRequest(f"num_beams: must be <= {limits.max_num_beams} (got {s.num_beams})", field="num_beams")
    if s.num_return_sequences > limits.max_return_sequences:
        raise BadRequest(
            f"num_return_sequences: must be <= {limits.max_return_sequences} (got {s.num_return_sequences})",
            field="num_return_sequences",
        )
    if s.num_beams > 1 and s.num_return_sequences > s.num_beams:  # beam search returns its beams, sampled or not
        raise BadRequest(
            f"num_return_sequences: with beam search it must be <= num_beams ({s.num_beams}) "
            f"(got {s.num_return_sequences})",
            field="num_return_sequences",
        )
    if s.num_beams == 1 and s.num_return_sequences > 1 and not s.do_sample:
        raise BadRequest(
            f"num_return_sequences: greedy search has one answer; use do_sample: true or num_beams "
            f">= {s.num_return_sequences} (got {s.num_return_sequences})",
            field="num_return_sequences",
        )
    if s.num_beam_groups > 1:
        if s.num_beam_groups > s.num_beams or s.num_beams % s.num_beam_groups:
            raise BadRequest(
                f"num_beam_groups: must divide num_beams ({s.num_beams}) (got {s.num_beam_groups})",
                field="num_beam_groups",
            )
        if s.do_sample:
            raise BadRequest(
                "num_beam_groups: diverse beam search (num_beam_groups > 1) cannot be combined with do_sample: true",
                field="num_beam_groups",
            )


def _names(ignored: list[str]) -> str:
    return f"{', '.join(ignored)} only {'applies' if len(ignored) == 1 else 'apply'}"


def _beam_options(s: Sampling, notes: list[str]) -> Sampling:
    if s.num_beams == 1:
        ignored = [name for name in BEAM_ONLY if getattr(s, name) is not None]
        if ignored:
            notes.append(f"{_names(ignored)} with num_beams > 1; ignored")
            s = replace(s, **dict.fromkeys(BEAM_ONLY))
    if s.num_beam_groups == 1 and s.diversity_penalty is not None:
        notes.append("diversity_penalty only applies with num_beam_groups > 1; ignored")
        s = replace(s, diversity_penalty=None)
    return s
