"""Structured output through the real server: with the tiny random model the text follows the schema,
regex or choice only if the token mask works, so every sampled seed's answer is checked."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pet": {"enum": ["cat", "dog", "fox"]},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "pet", "ok"],
    "additionalProperties": False,
}
REGEX = r"[0-9]{3}-[a-z]{2,4}"
CHOICES = ["red", "green", "blue sky"]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-needed", max_retries=0) as c:
        yield c


def _complete(client, seed, **extra):
    return client.completions.create(
        model="gptj", prompt="Answer:", max_tokens=120, temperature=1.0, seed=seed, **extra
    ).choices[0]


def test_json_schema_over_many_seeds(client):
    for seed in range(12):
        answer = _complete(
            client,
            seed,
            extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}},
        )
        jsonschema.validate(json.loads(answer.text), SCHEMA)
        assert answer.finish_reason == "stop"  # the grammar ended the row, not max_tokens


def test_structured_outputs_kinds(client):
    for seed in range(8):
        assert re.fullmatch(REGEX, _complete(client, seed, extra_body={"structured_outputs": {"regex": REGEX}}).text)
        assert _complete(client, seed, extra_body={"structured_outputs": {"choice": CHOICES}}).text in CHOICES
        text = _complete(client, seed, extra_body={"structured_outputs": {"json": json.dumps(SCHEMA)}}).text
        jsonschema.validate(json.loads(text), SCHEMA)
        anything = _complete(client, seed, extra_body={"response_format": {"type": "json_object"}})
        # Any object: the random model's keys may run past max_tokens; an ended one parses.
        assert (
            isinstance(json.loads(anything.text), dict) if anything.finish_reason == "stop" else anything.text[0] == "{"
        )
    grammar = 'root ::= "yes" | "no" | "maybe " [0-9]'
    for seed in range(6):
        text = _complete(client, seed, extra_body={"structured_outputs": {"grammar": grammar}}).text
        assert re.fullmatch(r"yes|no|maybe [0-9]", text)


def test_streamed_and_batched_with_free_rows(client):
    """Constrained and free requests in the same continuous batch: each gets what it asked for."""

    def constrained(seed):
        chunks = client.completions.create(
            model="gptj",
            prompt="Go",
            max_tokens=120,
            seed=seed,
            stream=True,
            extra_body={"structured_outputs": {"json": SCHEMA}},
        )
        return "".join(c.choices[0].text for c in chunks if c.choices)

    def free(seed):
        return client.completions.create(model="gptj", prompt="Go", max_tokens=40, seed=seed).choices[0]

    with ThreadPoolExecutor(12) as pool:
        texts, frees = pool.map(constrained, range(6)), pool.map(free, range(6))
        texts, frees = list(texts), list(frees)
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)
    assert all(f.finish_reason == "length" for f in frees)  # free rows are not masked
    assert sum(f.text.lstrip().startswith("{") for f in frees) < 6


def test_seed_api(server):
    body = [
        {"prompt": "Say", "max_new_tokens": 60, "do_sample": True, "seed": s, "structured_outputs": {"regex": REGEX}}
        for s in range(6)
    ] + [{"prompt": "Free", "max_new_tokens": 10, "do_sample": True, "seed": 1}]
    response = server.predict(body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    for text in data[:-1]:
        assert re.fullmatch(REGEX, text.removeprefix("Say"))
    picked = server.predict({"prompt": "Pick", "max_new_tokens": 20, "structured_outputs": {"choice": CHOICES}})
    assert picked.json()["data"].removeprefix("Pick") in CHOICES  # greedy too


def test_seed_api_streamed(server):
    body = {"prompt": "Go", "max_new_tokens": 120, "do_sample": True, "seed": 9, "structured_outputs": {"json": SCHEMA}}
    with server.client.stream("POST", "/v1/models/gptj:stream", json=body) as response:
        assert response.status_code == 200
        events = [json.loads(line[len("data: ") :]) for line in response.iter_lines() if line]
    *pieces, final = events
    continuation = "".join(event["text"] for event in pieces)
    jsonschema.validate(json.loads(continuation), SCHEMA)
    assert final["status"] == "success" and final["data"] == "Go" + continuation


def test_v2(server):
    """v2's parameters are scalars (KServe's model of them): the object comes as its JSON text."""
    body = {
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["Pick"]}],
        "parameters": {
            "max_new_tokens": 20,
            "do_sample": True,
            "seed": 3,
            "structured_outputs": json.dumps({"choice": CHOICES}),
        },
    }
    response = httpx.post(f"{server.url}/v2/models/gptj/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (text,) = response.json()["outputs"][0]["data"]
    assert text.removeprefix("Pick") in CHOICES


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"structured_outputs": {"json": {"type": "bogus"}}}, "structured_outputs.json"),
        ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
        ({"structured_outputs": {"regex": "(a"}}, "structured_outputs.regex"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice"),
        ({"structured_outputs": {"grammar": 'root ::= "a'}}, "structured_outputs.grammar"),
        ({"structured_outputs": {"regexp": "a"}}, "structured_outputs"),
        ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "structured_outputs"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
    ],
)
def test_bad_constraints_are_400s(server, extra, field):
    body = {"model": "gptj", "prompt": "x", "max_tokens": 5, **extra}
    response = httpx.post(f"{server.url}/openai/v1/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith(field) and error["param"] == field.split(".")[0]


def test_seed_api_400s(server):
    beams = server.predict({"prompt": "x", "num_beams": 2, "structured_outputs": {"regex": "a+"}})
    assert beams.status_code == 400 and "beam search" in beams.text and "structured_outputs" in beams.text
    bad = server.predict({"prompt": "x", "structured_outputs": {"json": {"type": "object", "minProperties": "x"}}})
    assert bad.status_code == 400 and "structured_outputs.json" in bad.text


def test_engine_limit_is_a_400(server):
    """A schema nested deeper than llguidance's JSON parser allows (serde_json's recursion limit, 128)."""
    schema: dict = {"type": "integer"}
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    body = {"model": "gptj", "prompt": "x", "structured_outputs": {"json": schema}}
    response = httpx.post(f"{server.url}/openai/v1/completions", json=body, timeout=60)
    assert response.status_code == 400 and "recursion limit" in response.json()["error"]["message"]


def test_a_slow_grammar_times_out_and_the_server_stays_healthy(start_server, tiny_dir, cache_dir):
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--structured_compile_timeout", "0.05"])
    slow = "((((a{60}){60}){60}){60})"  # ~1 s to compile on our machines: 20x the timeout
    response = s.predict({"prompt": "x", "structured_outputs": {"regex": slow}})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith("structured_outputs.regex: did not compile within 0.05 s (--structured_compile_timeout)")
    fine = s.predict({"prompt": "Pick", "max_new_tokens": 10, "structured_outputs": {"choice": CHOICES}})
    assert fine.status_code == 200 and fine.json()["data"].removeprefix("Pick") in CHOICES
