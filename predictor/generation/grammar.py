"""Structured output: constraints compiled to llguidance grammars, and each row's grammar state.

Why llguidance (not xgrammar): measured on the tiny model's tokenizer with a 4-field JSON schema,
llguidance computes a row's mask in ~35 us a step and xgrammar in ~7 us; both are far below a decode
step (milliseconds), so cost does not decide. llguidance is one abi3 wheel with no dependencies
(xgrammar needs torch, transformers, pydantic, apache-tvm-ffi and triton), covers more of JSON Schema
(https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md), bounds every step by its
parser limits (``LLParserLimits``: a hostile grammar errors instead of stalling), and takes each of
vLLM's structured-output kinds (``llguidance.grammar_from``: vLLM's "guidance" backend does the same).

``Compiler`` (built once per model, shared by the edge and the engine) turns a core.Constraint into a
``Template``, cached in a bounded LRU keyed by (kind, spec). The edge compiles in a worker thread
(edge/structured.py); the engine thread only copies the compiled matcher into each row (``attach``),
masks the constrained rows' logits (``mask``, from logits.choose), advances each row with its
accepted token (``advance``) and drops the state when the row leaves (``release``). A batch with no
constrained row does none of this.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import llguidance
import llguidance.hf
import torch

from predictor.core import Constraint

COMPILE_WORKERS = 2  # compiles at once; more wait (within the edge's timeout) rather than take the CPUs


class GrammarError(ValueError):
    """A constraint that does not compile (invalid schema, regex or grammar, or an engine limit)."""


class Template:
    """A compiled constraint: a matcher at the grammar's start, copied for every row that uses it."""

    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self.matcher = matcher

    def start(self) -> RowGrammar:
        return RowGrammar(self.matcher.deep_copy())


class RowGrammar:
    """One row's grammar state. ``live`` counts those not yet released (tests check that rows free theirs)."""

    live = 0
    _lock = threading.Lock()

    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self.matcher = matcher
        with RowGrammar._lock:
            RowGrammar.live += 1

    def close(self) -> None:
        if self.matcher is not None:
            self.matcher = None
            with RowGrammar._lock:
                RowGrammar.live -= 1


class Compiler:
    """Compiles constraints for one tokenizer and vocabulary; thread-safe. ``capacity``: templates kept."""

    def __init__(self, tokenizer: Any, vocabulary: int, eos: int, capacity: int = 64) -> None:
        # The logits may be wider than the tokenizer (GPT-J: 50400 vs 50257): the extra ids are never allowed.
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocabulary, eos_token=eos)
        self.vocabulary, self.capacity = vocabulary, capacity
        self._cache: OrderedDict[tuple[str, str], Template] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(COMPILE_WORKERS, thread_name_prefix="grammar")
        self.limits = llguidance.LLParserLimits()  # llguidance's defaults; GrammarError names the one hit

    def submit(self, constraint: Constraint) -> Future:
        """Compile in a worker thread (the caller bounds the wait): a Future of the Template."""
        return self._pool.submit(self.compile, constraint)

    def compile(self, constraint: Constraint) -> Template:
        """The constraint's Template, from the cache or compiled now; GrammarError if it cannot compile."""
        key = (constraint.kind, constraint.spec)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        template = self._build(constraint)
        with self._lock:
            self._cache[key] = template
            self._cache.move_to_end(key)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return template

    def cached(self) -> int:
        return len(self._cache)

    def _build(self, constraint: Constraint) -> Template:
        try:
            text = llguidance.grammar_from(constraint.kind, constraint.spec)
        except ValueError as exc:  # not JSON, or a GBNF grammar that does not convert
            raise GrammarError(str(exc)) from None
        matcher = llguidance.LLMatcher(self.tokenizer, text, log_level=0, limits=self.limits)
        if not matcher.is_error():
            # The first mask builds the lexer's start states: here, not on the engine thread.
            mask = torch.zeros((1, (self.vocabulary + 31) // 32), dtype=torch.int32)
            matcher.unsafe_compute_mask_ptr(mask.data_ptr(), mask.shape[1] * 4)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return Template(matcher)


def attach(choices: Iterable[Any], template: Template | None) -> None:
    """Give each row (logits.RowChoice) its own grammar state at the grammar's start."""
    if template is not None:
        for choice in choices:
            choice.grammar = template.start()


_EXECUTOR: llguidance.LLExecutor | None = None


def mask(rows: Sequence[Any], scores: torch.Tensor) -> torch.Tensor:
    """``scores`` [rows, vocabulary] with every token the row's grammar forbids at -inf (EOS is allowed
    exactly when the grammar can end). Rows without a grammar are untouched; none at all: no work."""
    constrained = [i for i, row in enumerate(rows) if row.grammar is not None]
    if not constrained:
        return scores
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = llguidance.LLExecutor()
    words = (scores.shape[-1] + 31) // 32
    bits = torch.empty((len(constrained), words), dtype=torch.int32, pin_memory=scores.is_cuda)
    matchers = [(rows[i].grammar.matcher, n) for n, i in enumerate(constrained)]
    _EXECUTOR.unsafe_compute_mask_ptr(matchers, bits.data_ptr(), words * 4, len(constrained))
    allowed = _unpack(bits.to(scores.device, non_blocking=True), scores.shape[-1])
    if len(constrained) == len(rows):
        return scores.masked_fill_(~allowed, float("-inf"))
    index = torch.tensor(constrained, device=scores.device)
    scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
    return scores


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _unpack(bits: torch.Tensor, vocabulary: int) -> torch.Tensor:
    """Bitmask words [rows, words] (bit j of word w: token 32 w + j) -> booleans [rows, vocabulary]."""
    shifts = _SHIFTS.get(bits.device)
    if shifts is None:
        shifts = _SHIFTS[bits.device] = torch.arange(32, dtype=torch.int32, device=bits.device)
    return ((bits[:, :, None] >> shifts) & 1).reshape(bits.shape[0], -1)[:, :vocabulary].bool()


def advance(grammar: RowGrammar, token: int) -> str | None:
    """Feed the row's accepted token; "eos" when the grammar is complete (nothing but EOS could follow)
    or failed (a step limit), so that the row finishes now."""
    matcher = grammar.matcher
    matcher.consume_token(token)
    return "eos" if matcher.is_stopped() or matcher.is_error() else None


def release(choices: Iterable[Any]) -> None:
    """Drop the grammar state of rows that leave the batch (finished, cancelled, past their deadline)."""
    for choice in choices:
        if choice.grammar is not None:
            choice.grammar.close()
            choice.grammar = None
