"""Structured output's request fields (protocols/structured.py) on each protocol: one Constraint, or a
400 naming the field."""

from __future__ import annotations

import json

import pytest

from predictor.core import Constraint
from predictor.errors import BadRequest
from predictor.protocols import openai, plan, seed, structured
from predictor.settings import Limits

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


def openai_constraint(**fields) -> Constraint | None:
    req = openai.parse({"model": "gptj", "prompt": "x", **fields}, Limits())
    return openai.sampling(req, 10).constraint


def seed_constraint(**fields) -> Constraint | None:
    (req,) = seed.parse({"prompt": "x", **fields}, 16)
    return plan.plan(req, 1, Limits())[0].constraint


def test_every_kind_and_the_cache_key():
    spaced = json.dumps(SCHEMA, indent=4)
    by_object = openai_constraint(structured_outputs={"json": SCHEMA})
    assert by_object == openai_constraint(structured_outputs={"json": spaced})  # one cache entry, however spaced
    assert by_object == openai_constraint(response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}})
    assert by_object.field == "structured_outputs.json"
    assert openai_constraint(response_format={"type": "text"}) is None
    assert openai_constraint(response_format={"type": "json_object"}) == Constraint("json", '{"type":"object"}')
    assert seed_constraint(structured_outputs={"regex": "a+"}) == Constraint("regex", "a+")
    assert seed_constraint(structured_outputs={"choice": ["x", "y"]}) == Constraint("choice", '["x", "y"]')
    assert seed_constraint(structured_outputs={"grammar": 'root ::= "a"'}).kind == "grammar"
    assert seed_constraint() is None
    assert hash(by_object) == hash(Constraint("json", by_object.spec, field="elsewhere"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"structured_outputs": {}},
            "structured_outputs: give exactly one of json, json_object, regex, choice, grammar (got none)",
        ),
        ({"structured_outputs": {"regex": "a", "grammar": "b"}}, "structured_outputs: give exactly one of"),
        ({"structured_outputs": {"json": "{oops"}}, "structured_outputs.json: not valid JSON"),
        ({"structured_outputs": {"json": "[1]"}}, "structured_outputs.json: a JSON Schema must be an object"),
        ({"structured_outputs": {"choice": ["a", ""]}}, "structured_outputs.choice: must hold 1 to 1000 non-empty"),
        ({"structured_outputs": {"regex": " "}}, "structured_outputs.regex: must not be empty"),
        ({"structured_outputs": {"regex": "a" * 100_001}}, "structured_outputs.regex: at most 100000 characters"),
        (
            {"structured_outputs": {"regexp": "a"}},
            "structured_outputs.regexp: unknown field (allowed: json, json_object",
        ),
        ({"structured_outputs": {"regex": 5}}, "structured_outputs.regex: must be a string"),
    ],
)
def test_bad_fields_are_400s_naming_them(fields, message):
    for constraint_of in (openai_constraint, seed_constraint):
        with pytest.raises(BadRequest) as caught:
            constraint_of(**fields)
        assert caught.value.message.startswith(message), caught.value.message


def test_two_constraints_and_beams():
    with pytest.raises(
        BadRequest, match=r"^structured_outputs.regex: only one constraint per request \(also given: response_format\)"
    ):
        openai_constraint(response_format={"type": "json_object"}, structured_outputs={"regex": "a"})
    with pytest.raises(BadRequest, match=r"^response_format.json_schema: type json_schema needs json_schema.schema"):
        openai_constraint(response_format={"type": "json_schema"})
    with pytest.raises(BadRequest, match=r"^structured_outputs.regex: not available with beam search"):
        seed_constraint(num_beams=2, structured_outputs={"regex": "a"})
    with pytest.raises(BadRequest, match=r"^\[1\]\.structured_outputs: give exactly one"):
        parsed = seed.parse([{"prompt": "x"}, {"prompt": "y", "structured_outputs": {}}], 16)
        plan.requests(parsed, [[1], [2]], Limits())
    assert structured.KINDS == ("json", "json_object", "regex", "choice", "grammar")


def test_the_edge_without_a_compiler():
    """A tokenizer llguidance cannot read leaves structured output off: a 400, and free requests pass."""
    import asyncio

    from predictor.core import GenerationRequest, Sampling
    from predictor.edge import structured as edge

    constrained = GenerationRequest("x", (1,), Sampling(max_length=5, constraint=Constraint("regex", "a", "f")))
    with pytest.raises(BadRequest, match="^f: structured output is not available on this server"):
        asyncio.run(edge.compiled([constrained], None, 1.0))
    free = GenerationRequest("x", (1,), Sampling(max_length=5))
    assert asyncio.run(edge.compiled([free], None, 1.0)) == [free]
