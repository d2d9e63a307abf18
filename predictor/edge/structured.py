"""Structured output at the edge: each request's constraint compiled before it reaches the engine.

Compiling runs in the compiler's worker threads (generation/grammar.py), never on the engine thread,
and the wait is bounded by --structured_compile_timeout: a schema that does not compile in time, or
at all, is a 400 naming the field it came from, and the engine never sees it. A compile that timed
out keeps its worker until it ends (llguidance's parser limits bound it); its grammar is cached then.
Engine limits are llguidance's (``LLParserLimits`` defaults, and a JSON Schema nested deeper than
serde_json's recursion limit of 128): the 400 quotes llguidance's message, which names the limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Sequence

from predictor.core import Constraint, GenerationRequest
from predictor.errors import BadRequest
from predictor.generation.grammar import Compiler, GrammarError, Template
from predictor.protocols.structured import top_field


async def compiled(
    requests: Sequence[GenerationRequest], compiler: Compiler | None, timeout_s: float
) -> list[GenerationRequest]:
    """``requests`` with their constraints' compiled grammars attached (unchanged when none has one)."""
    constraints = list(dict.fromkeys(r.sampling.constraint for r in requests if r.sampling.constraint is not None))
    if not constraints:
        return list(requests)
    if compiler is None:
        raise BadRequest(
            f"{constraints[0].field}: structured output is not available on this server",
            field=top_field(constraints[0].field),
        )
    templates = {c: await _compile(compiler, c, timeout_s) for c in constraints}
    return [
        replace(r, grammar=templates[r.sampling.constraint]) if r.sampling.constraint is not None else r
        for r in requests
    ]


async def _compile(compiler: Compiler, constraint: Constraint, timeout_s: float) -> Template:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(compiler.submit(constraint)), timeout_s)
    except TimeoutError:
        raise BadRequest(
            f"{constraint.field}: did not compile within {timeout_s:g} s (--structured_compile_timeout); simplify it",
            field=top_field(constraint.field),
        ) from None
    except GrammarError as exc:
        raise BadRequest(f"{constraint.field}: {_first_line(str(exc))}", field=top_field(constraint.field)) from None


def _first_line(message: str) -> str:
    """llguidance's messages run over several lines (a caret under the regex): keep them on one."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())[:500]
