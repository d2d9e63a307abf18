"""The context window on the OpenAI route, refused in the words OpenAI's clients look for.

LangChain, litellm and others tell an overflow from any other 400 by the error's ``code``
(``context_length_exceeded``) or by the message's opening, "This model's maximum context length is N
tokens" (OpenAI's and vLLM's wording, vllm/entrypoints/openai/serving_engine.py ``_validate_input``),
so the message starts that way and still names the prompt at fault (``prompt[1]`` of several). The
context is this server's (``--max_length_limit``): the most tokens a prompt and its completion may
have together, what vLLM calls ``max_model_len`` (the tokenize route reports it under that name).
"""

from __future__ import annotations

from typing import Sequence

from predictor.errors import ContextLengthExceeded


def check(names: Sequence[str], token_ids: Sequence[Sequence[int]], wanted: int, context: int) -> None:
    """Every prompt (``names[i]`` names ``token_ids[i]``) must leave room for one new token, and
    with ``wanted`` new tokens fit ``context``; else ContextLengthExceeded naming the field to change."""
    opening = f"This model's maximum context length is {context} tokens. However, you requested"
    for name, ids in zip(names, token_ids, strict=True):
        if len(ids) >= context:
            raise ContextLengthExceeded(
                f"{opening} {len(ids)} tokens in {_where(name)}, which leaves no room for the completion "
                f"(a prompt may have at most {context - 1} tokens). Please reduce the length of the prompt.",
                param="prompt",
            )
    for name, ids in zip(names, token_ids, strict=True):
        if len(ids) + wanted > context:
            raise ContextLengthExceeded(
                f"{opening} {len(ids) + wanted} tokens ({len(ids)} in {_where(name)}, {wanted} in the "
                f"completion). Please reduce the length of the prompt or completion (max_tokens).",
                param="max_tokens",
            )


def _where(name: str) -> str:
    return "the prompt" if name == "prompt" else name
