"""The core types: what the engine is asked to generate, and what it gives back.

A leaf: it imports nothing of ours, and nothing of pydantic, FastAPI or transformers. Every protocol
(seed contract, OpenAI, v2) builds a ``GenerationRequest``; the engine and generation know only these.
The engine thread answers each step with a ``Delta`` per sequence (token ids and raw logprobs only);
off that thread they become text: ``Piece``s for a stream, then ``Completion``s (engine/outputs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class Sampling:
    """Normalized generation settings for one prompt (hashable: the engine can group by it)."""

    max_length: int
    min_length: int = 0
    do_sample: bool = False
    num_beams: int = 1
    num_return_sequences: int = 1
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    early_stopping: bool | None = None
    length_penalty: float | None = None
    encoder_no_repeat_ngram_size: int | None = None
    max_time: float | None = None
    num_beam_groups: int = 1
    diversity_penalty: float | None = None
    remove_invalid_values: bool | None = None
    min_p: float | None = None  # transformers' MinPLogitsWarper, after top_p (sampling only)
    stop: tuple[str, ...] = ()  # the text ends before the first of these
    # A row ends (reason "stop") when it generates one of these ids; before min_length they are banned
    # with EOS. vLLM's meaning: the id's text is left out unless include_stop_str_in_output.
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False  # the stop string (or stop id's text) stays in the text
    ignore_eos: bool = False  # EOS does not end the row: it is kept as a token (its text is special)
    skip_special_tokens: bool = True  # the continuation's text leaves special tokens (EOS) out
    seed: int | None = None  # sampling draws from this request's own generator
    presence_penalty: float | None = None  # OpenAI's, on tokens generated so far (openai.py)
    frequency_penalty: float | None = None
    # Logprobs (generation/logits.py): None computes nothing; N (0-5) reports each generated token's
    # logprob and its N likeliest alternatives. score_prompt also reports the prompt's tokens, from
    # the prefill (echo scoring); the request may then generate nothing (max_length == prompt).
    logprobs: int | None = None
    score_prompt: bool = False
    constraint: Constraint | None = None  # structured output: every row's tokens follow its grammar


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
