"""The request contract: body forms, the strict request object, and the response shape.

Bodies come as a JSON list of request objects (the documented form), one request object (what
the original server parsed), or KServe v1's ``{"instances": [...]}``. Validation happens here,
once; messages name the field and its bound.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from predictor.errors import BadRequest
from predictor.protocols.structured import KINDS, StructuredOutputs

#: Below this a temperature overflows float32 logits (NaN probabilities); vLLM uses the same floor.
MIN_TEMPERATURE = 1e-5
MAX_STOP_STRINGS, MAX_STOP_LENGTH = 4, 100  # as OpenAI's API: a handful of short strings
MAX_STOP_TOKEN_IDS = 64  # each is one (row, id) entry of the minimum-length ban (rowstate.py)


class PromptRequest(BaseModel):
    """One request object: a prompt and optional transformers generation parameters.

    Numeric ranges are wider than any sensible use and narrow enough that float32 arithmetic in
    generation never overflows into inf/NaN (which would fail the request, or worse).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str
    max_length: int | None = Field(None, ge=1)
    min_length: int | None = Field(None, ge=0)
    do_sample: bool | None = None
    early_stopping: bool | None = None
    num_beams: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    repetition_penalty: float | None = Field(None, ge=0.01, le=100, allow_inf_nan=False)
    length_penalty: float | None = Field(None, ge=-10, le=10, allow_inf_nan=False)
    encoder_no_repeat_ngram_size: int | None = Field(None, ge=0)
    num_return_sequences: int | None = Field(None, ge=1)
    max_time: float | None = Field(None, gt=0, allow_inf_nan=False)
    num_beam_groups: int | None = Field(None, ge=1)
    diversity_penalty: float | None = Field(None, ge=0, le=1000, allow_inf_nan=False)
    remove_invalid_values: bool | None = None
    # Extensions beyond the original service (off unless given):
    max_new_tokens: int | None = Field(None, ge=1)  # instead of max_length: new tokens only
    stop: str | list[str] | None = None  # end at the first of these strings (left out of the text)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)  # reproducible sampling: same seed, same text
    details: bool | None = None  # data holds objects with finish reason and token counts
    logprobs: int | None = Field(None, ge=0, le=5)  # details objects gain per-token logprobs (logprobs.py)
    min_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)  # transformers' min_p (sampling)
    stop_token_ids: list[int] | None = None  # end at the first of these ids (left out of the text)
    structured_outputs: StructuredOutputs | None = None  # vLLM's: constrained decoding (structured.py)

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_token_ids(cls, ids: list[int] | None) -> list[int] | None:
        return check_stop_token_ids(ids)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_type(cls, stop: Any) -> Any:
        if (
            stop is not None
            and not isinstance(stop, str)
            and not (isinstance(stop, list) and all(isinstance(item, str) for item in stop))
        ):
            raise ValueError(f"must be a string or a list of strings (got {kind(stop)})")
        return stop

    @field_validator("stop")
    @classmethod
    def _stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        return check_stop(stop)

    @field_validator("prompt")
    @classmethod
    def _unicode(cls, prompt: str) -> str:
        return check_text(prompt)

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, temperature: float | None) -> float | None:
        return check_temperature(temperature)


# Checks that OpenAI's request (openai.py) shares: each returns the value or raises ValueError.


def check_stop(stop: str | list[str] | None) -> str | list[str] | None:
    strings = [stop] if isinstance(stop, str) else stop or []
    if len(strings) > MAX_STOP_STRINGS:
        raise ValueError(f"must hold at most {MAX_STOP_STRINGS} strings (got {len(strings)})")
    if any(not 0 < len(string) <= MAX_STOP_LENGTH for string in strings):
        raise ValueError(f"strings must be 1 to {MAX_STOP_LENGTH} characters long")
    return stop


def check_stop_token_ids(ids: list[int] | None) -> list[int] | None:
    if ids is not None and len(ids) > MAX_STOP_TOKEN_IDS:
        raise ValueError(f"must hold at most {MAX_STOP_TOKEN_IDS} token ids (got {len(ids)})")
    negative = [index for index, token in enumerate(ids or ()) if token < 0]
    if negative:
        raise ValueError(f"token ids must be >= 0 (got {ids[negative[0]]} at index {negative[0]})")
    return ids


def check_token_ids(field: str, ids: Sequence[int] | None, vocabulary: int) -> None:
    """A 400 naming the first id outside ``0 .. vocabulary - 1`` (``stop_token_ids[2]``): it could never
    be generated, so asking to stop at it is a mistake."""
    for index, token in enumerate(ids or ()):
        if not 0 <= token < vocabulary:
            raise BadRequest(
                f"{field}[{index}]: token id {token} is outside the vocabulary (0 to {vocabulary - 1})",
                field=field,
                index=index,
            )


def check_text(prompt: str) -> str:
    # JSON allows lone surrogates (\ud800); they are not text and the tokenizer rejects them.
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"must be valid Unicode text (lone surrogate at character {exc.start})") from None
    return prompt


def check_temperature(temperature: float | None) -> float | None:
    if temperature is not None and 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(f"must be 0 (greedy) or >= {MIN_TEMPERATURE:g}")
    return temperature


FIELDS = tuple(PromptRequest.model_fields)


def decode_body(body: bytes, content_type: str | None) -> Any:
    """Decode a raw body as JSON in the charset its Content-Type names (UTF-8 by default).

    KServe decodes only bodies whose Content-Type is exactly one of its JSON types; anything else
    (``application/json; charset=utf-8``, curl's default form type, none) reaches us as bytes.
    """
    charset = _charset(content_type)
    try:
        text = body.decode(codecs.lookup(charset).name)
    except LookupError:
        raise BadRequest(f"Content-Type names an unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid {charset}: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, the int-digits limit, NaN/Infinity
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def _charset(content_type: str | None) -> str:
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or "utf-8"
    return "utf-8"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def body_of(payload: Any, content_type: str | None) -> Any:
    """The decoded body: KServe hands over JSON it decoded itself, or the raw bytes (decode_body)."""
    return decode_body(bytes(payload), content_type) if isinstance(payload, (bytes, bytearray)) else payload


def parse(body: Any, max_prompts: int) -> list[PromptRequest]:
    """Turn a decoded body into request objects, or raise BadRequest naming every problem."""
    items = _items(body)
    if not items:
        raise BadRequest("the request list is empty: send at least one request object")
    if len(items) > max_prompts:
        raise BadRequest(f"too many request objects: at most {max_prompts} per request (got {len(items)})")
    requests, problems, first = [], [], None
    for index, item in enumerate(items):
        prefix, at = (f"[{index}].", index) if len(items) > 1 else ("", None)
        if not isinstance(item, dict):
            problems.append(f"{prefix.rstrip('.') or 'body'}: must be a JSON object with a 'prompt' (got {kind(item)})")
            first = first or BadRequest("", field=None if at is not None else "body", item=at)
            continue
        try:
            requests.append(PromptRequest.model_validate(item))
        except ValidationError as exc:
            problems.extend(prefix + describe(error) for error in exc.errors())
            first = first or invalid(exc.errors()[:1]).within(at)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise BadRequest("; ".join(problems[:5]) + more, field=first.field, index=first.index, item=first.item)
    return requests


def invalid(errors: Sequence[dict[str, Any]], allowed: Sequence[str] = FIELDS) -> BadRequest:
    """A 400 for pydantic's errors (at most five described), at the field the first one names."""
    loc = tuple(errors[0]["loc"]) if errors else ()
    field = str(loc[0]) if loc else "body"
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    return BadRequest("; ".join(describe(error, allowed) for error in errors[:5]), field=field, index=index)


def _items(body: Any) -> list[Any]:
    """The request objects in a body."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and "instances" in body:
        extra = sorted(set(body) - {"instances"})
        if extra:
            raise BadRequest(f"unknown top-level field(s) {', '.join(map(repr, extra))} next to 'instances'")
        if not isinstance(body["instances"], list):
            raise BadRequest(
                f"instances: must be a list of request objects (got {kind(body['instances'])})", field="instances"
            )
        return body["instances"]
    if isinstance(body, dict):
        return [body]
    raise BadRequest(
        f'body must be a JSON list of request objects, one request object, or {{"instances": [...]}} (got {kind(body)})'
    )


_PHRASES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "list_type": "must be a list",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "value_error": "{error}",
}


def describe(error: dict[str, Any], allowed: Sequence[str] = FIELDS) -> str:
    """One pydantic error as ``field: what is wrong (got value)``."""
    field = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        if len(error["loc"]) > 1:  # in a nested object: its own fields, where we know them
            nested = {"structured_outputs": KINDS}.get(str(error["loc"][0]))
            return f"{field}: unknown field" + (f" (allowed: {', '.join(nested)})" if nested else "")
        return f"{field}: unknown field (allowed: {', '.join(allowed)})"
    bounds = {key: f"{value:g}" if isinstance(value, float) else value for key, value in error.get("ctx", {}).items()}
    phrase = _PHRASES.get(error["type"], error["msg"]).format(**bounds)
    if error["type"] in ("missing", "value_error"):
        return f"{field}: {phrase}"
    return f"{field}: {phrase} (got {_preview(error.get('input'))})"


def _preview(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
