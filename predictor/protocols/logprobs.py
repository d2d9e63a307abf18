"""Token logprobs on the wire, in the one shape every API of ours uses: OpenAI's (legacy) completions
``logprobs`` object, https://platform.openai.com/docs/api-reference/completions/object.

``{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token: logprob}, ...], "text_offset": [...]}``:
one entry per token; a prompt's first token (echo) has ``null`` for its logprob and alternatives, as
OpenAI and vLLM report it. ``text_offset`` counts characters from the start of the prompt, in the
echoed and the plain form alike (OpenAI's original behaviour), so a token's offset does not depend on
``echo``.

OpenAI documents that ``top_logprobs`` always holds the sampled token, so up to N + 1 entries ("the
API will always return the logprob of the sampled token"), and vLLM does so (the prompt's tokens
too, with echo): the OpenAI route renders with ``sampled=True``, adding the token where it is not
among the N likeliest. The seed API and v2 keep their contract: the N likeliest only.
"""

from __future__ import annotations

from typing import Any, Sequence

from predictor.core import Completion, TokenLogprob

#: OpenAI's bound on ``logprobs`` for completions (and ours: each step's top-k stays cheap).
MAX_LOGPROBS = 5


def render(entries: Sequence[TokenLogprob], offset: int = 0, sampled: bool = False) -> dict[str, Any]:
    """The logprobs object for ``entries``, the first at character ``offset`` of the text; with
    ``sampled``, each token is among its own ``top_logprobs`` (last: it is the least likely there)."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for entry in entries:
        tokens.append(entry.text)
        logprobs.append(entry.logprob)
        top = None if entry.logprob is None else dict(entry.top)
        if top is not None and sampled:
            # Keyed by text, as OpenAI's object is: a likelier token with the same text keeps its entry.
            top.setdefault(entry.text, entry.logprob)
        tops.append(top)
        offsets.append(offset)
        offset += len(entry.text)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def of_completion(completion: Completion, prompt: str, echo: bool, sampled: bool = False) -> dict[str, Any] | None:
    """A completion's logprobs object (None without logprobs): with ``echo``, the prompt's tokens first."""
    if completion.logprobs is None:
        return None
    generated = render(completion.logprobs, len(prompt), sampled)
    return merge([render(completion.prompt_logprobs or (), 0, sampled), generated]) if echo else generated


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several logprobs objects (a stream's pieces) as one."""
    return {
        key: [value for part in parts for value in part[key]]
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    }
