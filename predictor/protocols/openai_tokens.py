"""vLLM's tokenizer routes beside the OpenAI API: ``POST /openai/tokenize`` and ``/openai/detokenize``.

The shapes are vLLM's (vllm/entrypoints/openai/protocol.py, ``TokenizeCompletionRequest``,
``TokenizeResponse``, ``DetokenizeRequest``, ``DetokenizeResponse``), so clients written for vLLM
(load generators and harnesses that count a prompt's tokens or fit it to ``max_model_len``) work
unchanged:

- tokenize ``{"model"?, "prompt", "add_special_tokens"?, "return_token_strs"?}`` ->
  ``{"tokens", "count", "max_model_len", "token_strs"?}``; the ids are exactly those a completion
  with that prompt is given, and ``max_model_len`` is this server's limit on prompt plus completion
  (``--max_length_limit``, the context of openai_context.py). GPT-J's tokenizer adds no special
  tokens, so ``add_special_tokens`` changes nothing; it is accepted for vLLM's clients.
- detokenize ``{"model"?, "tokens"}`` -> ``{"prompt"}``: the text a token-id prompt stands for.

Validated once, here, as strictly as the completions body (unknown fields are a 400 naming them).
"""

from __future__ import annotations

from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from predictor.errors import BadRequest
from predictor.protocols import seed


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, prompt: str) -> str:
        return seed.check_text(prompt)


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    tokens: list[int]


def parse_tokenize(body: Any) -> TokenizeRequest:
    return _parse(TokenizeRequest, body)


def parse_detokenize(body: Any) -> DetokenizeRequest:
    return _parse(DetokenizeRequest, body)


def check_vocabulary(req: DetokenizeRequest, vocabulary: int) -> None:
    """A 400 naming the first token id outside ``0 .. vocabulary - 1``."""
    for index, token in enumerate(req.tokens):
        if not 0 <= token < vocabulary:
            raise BadRequest(
                f"tokens[{index}]: token id {token} is outside the vocabulary (0 to {vocabulary - 1})",
                field="tokens",
                index=index,
            )


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise BadRequest(f"body: must be a JSON object (got {seed.kind(body)})", field="body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise seed.invalid(exc.errors(), tuple(model.model_fields)) from None


def tokenized(tokens: Sequence[int], max_model_len: int, token_strs: Sequence[str] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"count": len(tokens), "max_model_len": max_model_len, "tokens": list(tokens)}
    if token_strs is not None:
        answer["token_strs"] = list(token_strs)
    return answer


def detokenized(prompt: str) -> dict[str, str]:
    return {"prompt": prompt}
