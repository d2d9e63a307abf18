"""Structured output fields, shared by every protocol: vLLM's ``structured_outputs`` object (OpenAI
route, seed API, v2) and OpenAI's ``response_format``, each turned into one core.Constraint.

``structured_outputs`` holds exactly one of ``json`` (a JSON Schema, as an object or as JSON text),
``json_object`` (true: any JSON object), ``regex``, ``choice`` (a list of strings) or ``grammar``
(Lark, or GBNF/EBNF as llama.cpp writes it: what vLLM's "guidance" backend takes). Whether the schema,
regex or grammar compiles is checked when it is compiled (edge/structured.py), also a 400.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from predictor.core import Constraint
from predictor.errors import BadRequest

MAX_SPEC_CHARS = 100_000  # a schema, regex or grammar longer than this is refused before compiling
MAX_CHOICES = 1000

KINDS = ("json", "json_object", "regex", "choice", "grammar")


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs`` (https://docs.vllm.ai/en/latest/features/structured_outputs.html)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None  # our constraint is always strict: the text follows the schema


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: text (no constraint), any JSON object, or a JSON Schema."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


def top_field(path: str) -> str:
    """The request field a constraint's path starts at (``[1].structured_outputs.json`` -> ``structured_outputs``)."""
    return path.rsplit("].", 1)[-1].split(".")[0]


def constraint(outputs: StructuredOutputs | None, where: str = "") -> Constraint | None:
    """The one constraint ``structured_outputs`` asks for (``where`` prefixes the field: ``[1].``)."""
    if outputs is None:
        return None
    field = f"{where}structured_outputs"
    given = [name for name in KINDS if getattr(outputs, "json_" if name == "json" else name) not in (None, False)]
    if len(given) != 1:
        raise BadRequest(
            f"{field}: give exactly one of {', '.join(KINDS)} (got {', '.join(given) if given else 'none'})",
            field=top_field(field),
        )
    kind = given[0]
    if kind == "json":
        return Constraint("json", _schema(outputs.json_, f"{field}.json"), f"{field}.json")
    if kind == "json_object":
        return Constraint("json", '{"type":"object"}', f"{field}.json_object")
    if kind == "choice":
        choices = outputs.choice
        if not choices or len(choices) > MAX_CHOICES or any(not c for c in choices):
            raise BadRequest(
                f"{field}.choice: must hold 1 to {MAX_CHOICES} non-empty strings (got {len(choices)})",
                field=top_field(field),
            )
        return Constraint("choice", _bounded(json.dumps(choices), f"{field}.choice"), f"{field}.choice")
    text = getattr(outputs, kind)
    if not text.strip():
        raise BadRequest(f"{field}.{kind}: must not be empty", field=top_field(field))
    return Constraint(kind, _bounded(text, f"{field}.{kind}"), f"{field}.{kind}")


def from_response_format(response_format: ResponseFormat | None) -> Constraint | None:
    """OpenAI's ``response_format`` as a constraint; "text" (or none): no constraint."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return Constraint("json", '{"type":"object"}', "response_format")
    field = "response_format.json_schema"
    if response_format.json_schema is None or response_format.json_schema.schema_ is None:
        raise BadRequest(
            f"{field}: type json_schema needs json_schema.schema (a JSON Schema object)", field=top_field(field)
        )
    return Constraint("json", _schema(response_format.json_schema.schema_, f"{field}.schema"), f"{field}.schema")


def one_of(*constraints: Constraint | None) -> Constraint | None:
    """At most one constraint per request: two (``response_format`` and ``structured_outputs``) is a 400."""
    given = [c for c in constraints if c is not None]
    if len(given) > 1:
        raise BadRequest(
            f"{given[1].field}: only one constraint per request (also given: {given[0].field})",
            field=top_field(given[1].field),
        )
    return given[0] if given else None


def requested(response_format: ResponseFormat | None, outputs: StructuredOutputs | None) -> Constraint | None:
    """The OpenAI route's constraint: ``response_format`` or ``structured_outputs``, not both."""
    return one_of(from_response_format(response_format), constraint(outputs))


def check_beams(constraint: Constraint | None, num_beams: int) -> None:
    """Beam search keeps no grammar state per beam (generation/grammar.py is the continuous batch's)."""
    if constraint is not None and num_beams > 1:
        raise BadRequest(
            f"{constraint.field}: not available with beam search (num_beams > 1); use num_beams 1",
            field=top_field(constraint.field),
        )


def _schema(schema: dict[str, Any] | str, field: str) -> str:
    """A schema as canonical JSON text (the cache key: the same schema, however spaced, compiles once)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise BadRequest(f"{field}: not valid JSON ({exc})", field=top_field(field)) from None
        except RecursionError:
            raise BadRequest(f"{field}: not valid JSON: nested too deeply", field=top_field(field)) from None
    if not isinstance(schema, (dict, bool)):
        raise BadRequest(f"{field}: a JSON Schema must be an object", field=top_field(field))
    return _bounded(json.dumps(schema, sort_keys=True, separators=(",", ":")), field)


def _bounded(text: str, field: str) -> str:
    if len(text) > MAX_SPEC_CHARS:
        raise BadRequest(f"{field}: at most {MAX_SPEC_CHARS} characters (got {len(text)})", field=top_field(field))
    return text
