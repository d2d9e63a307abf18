"""The core types: what the engine is asked to generate, and what it gives back.

A leaf: it imports nothing of ours, and nothing of pydantic, FastAPI or transformers. Every protocol
(seed contract, OpenAI, v2) builds a ``GenerationRequest``; the engine and generation know only these.
The engine thread answers each step with a ``Delta`` per sequence (token ids and raw logprobs only);
off that thread they become text: ``Piece``s for a stream, then ``Completion``s (engine/outputs.py).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Constraint:
    """Structured output: what the generated text must match (generation/grammar.py compiles it).

    ``kind`` is "json" (``spec``: a JSON Schema as canonical JSON text), "regex", "choice" (a JSON
    list of strings) or "grammar" (Lark or GBNF, as vLLM's guidance backend takes it). Equal kinds and
    specs compile to the same grammar (the cache key); ``field`` only names the request field for a 400.
    """

    kind: str
    spec: str
    field: str = field(default="structured_outputs", compare=False)


# What each Sampling field is for: the code that must treat a kind of field alike reads the tuples
# after Sampling, derived from these roles, instead of listing names by hand. A new field needs a role
# (tests/unit/test_sampling_fields.py fails without one): one whose uses below fit it, or a new one
# added here and to the tuples after Sampling.
LENGTH = "length"  # a bound counted with the prompt: GenerationConfig's; beam_key compares it as new tokens
SEARCH = "search"  # shapes the decoding: GenerationConfig's, and equal in beam searches that share a forward
SAMPLED = "sampled"  # a SEARCH field that means nothing without do_sample (plan.py drops it with a note)
BEAM = "beam"  # a SEARCH field that means nothing without num_beams > 1 (plan.py drops it with a note)
DIVERSE = "diverse"  # diverse beam search's (diverse.py takes it itself, not GenerationConfig); shapes the search
SEED = "seed"  # means nothing without do_sample; a seeded beam search runs alone (its own generator)
ROW = "row"  # applied to each row or its text outside the search's shape (stops, penalties, logprobs, grammar)
ROLES = (LENGTH, SEARCH, SAMPLED, BEAM, DIVERSE, SEED, ROW)


def _role(role: str, default: Any = MISSING) -> Any:
    """A Sampling field with its role in its metadata (metadata only: equality and the hash stay the values')."""
    return field(default=default, metadata={"role": role})


@dataclass(frozen=True)
class Sampling:
    """Normalized generation settings for one prompt (hashable: the engine can group by it)."""

    max_length: int = _role(LENGTH)
    min_length: int = _role(LENGTH, 0)
    do_sample: bool = _role(SEARCH, False)
    num_beams: int = _role(SEARCH, 1)
    num_return_sequences: int = _role(SEARCH, 1)
    temperature: float | None = _role(SAMPLED, None)
    top_k: int | None = _role(SAMPLED, None)
    top_p: float | None = _role(SAMPLED, None)
    repetition_penalty: float | None = _role(SEARCH, None)
    early_stopping: bool | None = _role(BEAM, None)
    length_penalty: float | None = _role(BEAM, None)
    encoder_no_repeat_ngram_size: int | None = _role(SEARCH, None)
    max_time: float | None = _role(SEARCH, None)
    num_beam_groups: int = _role(DIVERSE, 1)
    diversity_penalty: float | None = _role(DIVERSE, None)
    remove_invalid_values: bool | None = _role(SEARCH, None)
    min_p: float | None = _role(SAMPLED, None)  # transformers' MinPLogitsWarper, after top_p (sampling only)
    stop: tuple[str, ...] = _role(ROW, ())  # the text ends before the first of these
    # A row ends (reason "stop") when it generates one of these ids; before min_length they are banned
    # with EOS. vLLM's meaning: the id's text is left out unless include_stop_str_in_output.
    stop_token_ids: tuple[int, ...] = _role(ROW, ())
    include_stop_str_in_output: bool = _role(ROW, False)  # the stop string (or stop id's text) stays in the text
    ignore_eos: bool = _role(ROW, False)  # EOS does not end the row: it is kept as a token (its text is special)
    skip_special_tokens: bool = _role(ROW, True)  # the continuation's text leaves special tokens (EOS) out
    seed: int | None = _role(SEED, None)  # sampling draws from this request's own generator
    presence_penalty: float | None = _role(ROW, None)  # OpenAI's, on tokens generated so far (openai.py)
    frequency_penalty: float | None = _role(ROW, None)
    # Logprobs (generation/logits.py): None computes nothing; N (0-5) reports each generated token's
    # logprob and its N likeliest alternatives. score_prompt also reports the prompt's tokens, from
    # the prefill (echo scoring); the request may then generate nothing (max_length == prompt).
    logprobs: int | None = _role(ROW, None)
    score_prompt: bool = _role(ROW, False)
    constraint: Constraint | None = _role(ROW, None)  # structured output: every row's tokens follow its grammar


def sampling_fields(*roles: str) -> tuple[str, ...]:
    """The names of Sampling's fields that have one of these roles, in declaration order."""
    return tuple(f.name for f in fields(Sampling) if f.metadata.get("role") in roles)


#: Passed to transformers' GenerationConfig as they are (generation/runner.py generation_config).
GENERATION_CONFIG = sampling_fields(LENGTH, SEARCH, SAMPLED, BEAM)
#: Equal in beam searches that share one search (engine/scheduling.py beam_key; lengths as new tokens).
SEARCH_SHAPE = sampling_fields(SEARCH, SAMPLED, BEAM, DIVERSE)
#: Ignored (with a note) unless do_sample (protocols/plan.py).
SAMPLING_ONLY = sampling_fields(SAMPLED, SEED)
#: Ignored (with a note) unless num_beams > 1 (protocols/plan.py).
BEAM_ONLY = sampling_fields(BEAM)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt ready for the engine: its tokens, its settings, and notes for the client."""

    prompt: str
    input_ids: tuple[int, ...]
    sampling: Sampling
    notes: tuple[str, ...] = ()
    wants_list: bool = False  # num_return_sequences > 1: data holds a list for this prompt
    details: bool = False  # data holds objects with finish reason and token counts
    # Sampling.constraint compiled (generation/grammar.py Template), attached at the edge, off the engine thread.
    grammar: object | None = field(default=None, compare=False, repr=False)


def new_tokens(request: GenerationRequest) -> tuple[int, int]:
    """(max, min) new tokens for a request: the contract's lengths count the prompt too."""
    prompt = len(request.input_ids)
    return request.sampling.max_length - prompt, max(0, request.sampling.min_length - prompt)


#: A token id, its logprob (None for a prompt's first token: nothing predicts it), and the likeliest
#: alternatives as (token id, logprob), likeliest first: raw numbers, as the engine thread makes them.
Scored = tuple[int, float | None, tuple[tuple[int, float], ...]]


@dataclass(frozen=True)
class Delta:
    """What one engine step gave one sequence of a request (the shape of text-generation-inference's
    ``Generation`` and vLLM's ``CompletionOutput``): the token ids it gained, never text.

    A continuous-batch row gains one token a step (none on the step it ends with EOS); a beam search
    hands over each sequence's tokens in one finished Delta.
    """

    index: int  # which of the request's sequences
    token_ids: tuple[int, ...] = ()  # new this step; EOS only with ignore_eos, a stop id only when kept
    logprobs: tuple[Scored, ...] | None = None  # with Sampling.logprobs: one per token in token_ids
    prompt_logprobs: tuple[Scored, ...] | None = None  # with score_prompt: the prompt's tokens after the first, once
    finished: bool = False
    finish_reason: str | None = None  # with finished: one of FINISH_REASONS ("stop" comes from off the thread)


@dataclass(frozen=True)
class Piece:
    """What a streaming client hears next of one sequence: new text and the logprobs of the tokens it
    came from, or (once, before any text) the prompt's logprobs. Never taken back."""

    index: int
    text: str = ""
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
    generated: int = 0  # the sequence's tokens so far (usage on every chunk: vLLM's continuous_usage_stats)


#: Why a sequence ended: its max_length (or max_new_tokens), EOS, a stop string or stop token id, or max_time.
FINISH_REASONS = ("length", "eos", "stop", "time")


@dataclass(frozen=True)
class TokenLogprob:
    """One token as text, its logprob (None for a prompt's first token: nothing predicts it), and
    the likeliest alternatives as (text, logprob), likeliest first."""

    text: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Completion:
    """One generated sequence."""

    text: str  # the prompt as sent, then the continuation: the contract's `data`
    continuation: str
    finish_reason: str
    prompt_tokens: int
    generated_tokens: int
    # With Sampling.logprobs: one per generated token whose text is in ``continuation``; with
    # score_prompt also one per prompt token.
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Finished:
    """A stream's last item: every sequence's Completion, in order."""

    completions: tuple[Completion, ...]
