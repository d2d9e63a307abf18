"""Property-based fuzzing of the request body over HTTP: whatever a client sends, no 5xx, an envelope."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictor.protocols.seed import FIELDS

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 90),
    st.sampled_from([0, 1, 511, 512, 513, 10**12]),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from([1e-300, 1e300, -0.0]),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from([*FIELDS, "temprature", "instances", "", "prompt "])
REQUEST = st.fixed_dictionaries({}, optional={"prompt": st.text(max_size=40) | VALUES}).flatmap(
    lambda base: st.dictionaries(KEYS, VALUES, max_size=4).map(lambda extra: {**extra, **base})
)
# Plausible requests: the right types, values around and beyond every bound; these reach the engine.
PLAUSIBLE = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=30)},
    optional={
        "max_length": st.integers(1, 90) | st.sampled_from([512, 600]),
        "min_length": st.integers(0, 70),
        "do_sample": st.booleans(),
        "early_stopping": st.booleans(),
        "num_beams": st.integers(1, 9),
        "temperature": st.sampled_from([0, 1e-5, 0.5, 1.0, 100.0]),
        "top_k": st.integers(0, 60),
        "top_p": st.sampled_from([0.0, 0.5, 1.0]),
        "repetition_penalty": st.sampled_from([0.01, 1.0, 1.3, 100.0]),
        "length_penalty": st.sampled_from([-10.0, 0.0, 2.0, 10.0]),
        "encoder_no_repeat_ngram_size": st.integers(0, 4),
        "num_return_sequences": st.integers(1, 9),
        "max_time": st.sampled_from([0.001, 0.05, 5.0]),
        "num_beam_groups": st.integers(1, 4),
        "diversity_penalty": st.sampled_from([0.0, 1.0, 1000.0]),
        "remove_invalid_values": st.booleans(),
        "max_new_tokens": st.integers(0, 30) | st.sampled_from([600]),
        "stop": st.text(min_size=1, max_size=3) | st.lists(st.text(max_size=3), max_size=5),
        "seed": st.integers(-1, 2**63),
        "details": st.booleans(),
        "min_p": st.sampled_from([0.0, 0.3, 1.0, 1.5]),
        "stop_token_ids": st.lists(st.integers(-1, 700), max_size=3),
    },
)
BODIES = st.one_of(
    PLAUSIBLE,
    st.lists(PLAUSIBLE, min_size=1, max_size=3),
    REQUEST,
    st.lists(REQUEST, max_size=3),
    st.fixed_dictionaries({"instances": st.lists(REQUEST, max_size=3)}),
    VALUES,
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        None,
        "application/octet-stream",
        "application/json; charset=latin-1",
    ]
)


def check(response) -> None:
    """A real status (never 5xx) and the envelope; and the server keeps serving (autouse fixture)."""
    assert response.status_code < 500, response.text
    body = response.json()
    assert set(body) == {"status", "data", "message"}
    assert body["status"] == ("success" if response.status_code == 200 else "failed")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, content_type=CONTENT_TYPES)
def test_json_bodies_never_cause_a_5xx(server, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    check(server.client.post("/v1/models/gptj:predict", content=json.dumps(body).encode(), headers=headers))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), content_type=CONTENT_TYPES)
def test_arbitrary_bytes_never_cause_a_5xx(server, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    check(server.client.post("/v1/models/gptj:predict", content=raw, headers=headers))


# OpenAI's completions: the right types around and beyond every bound, and wrong types.
OPENAI = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gptj", "gptj", "other"]),
        "prompt": st.text(max_size=20) | st.lists(st.text(max_size=10), max_size=3),
    },
    optional={
        "max_tokens": st.integers(-1, 30) | st.sampled_from([None, 600]),
        "temperature": st.sampled_from([0, 0.5, 2, 2.5]),
        "top_p": st.sampled_from([0, 0.1, 1, 1.5]),
        "n": st.integers(0, 9),
        "stop": st.text(max_size=3) | st.none(),
        "seed": st.integers(-1, 2**63),
        "stream": st.booleans(),
        "echo": st.booleans(),
        "presence_penalty": st.floats(-3, 3),
        "frequency_penalty": st.floats(-3, 3),
        "logprobs": st.sampled_from([None, 1]),
        "best_of": st.sampled_from([None, 1, 2]),
        "user": VALUES,
        "stream_options": VALUES,
        # vLLM's extensions (protocols/vllm_sampling.py)
        "top_k": st.integers(-2, 60),
        "min_p": st.sampled_from([0, 0.2, 1, 1.5]),
        "repetition_penalty": st.sampled_from([0, 0.01, 1.3, 100, 101]),
        "min_tokens": st.integers(-1, 40),
        "ignore_eos": st.booleans(),
        "stop_token_ids": st.lists(st.integers(-1, 700), max_size=3),
        "include_stop_str_in_output": st.booleans(),
        "skip_special_tokens": st.booleans(),
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=OPENAI | VALUES)
def test_openai_bodies_never_cause_a_5xx(server, body):
    response = server.client.post("/openai/v1/completions", json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        # OpenAI's code is the status, except for a prompt over the context (clients look for this code)
        assert error["message"] and error["code"] in (response.status_code, "context_length_exceeded")
        if error["code"] == "context_length_exceeded":
            assert response.status_code == 400 and error["message"].startswith("This model's maximum context length")
    elif response.headers["content-type"].startswith("text/event-stream"):
        lines = [line for line in response.text.splitlines() if line]
        assert lines[-1] == "data: [DONE]" and '"error"' not in response.text
    else:
        assert response.json()["object"] == "text_completion"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=PLAUSIBLE | REQUEST)
def test_stream_bodies_never_cause_a_5xx(server, body):
    response = server.client.post("/v1/models/gptj:stream", json=body)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        final = response.text.strip().splitlines()[-1]
        assert final.startswith('data: {"status": "success"'), final
    else:
        check(response)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parameters=PLAUSIBLE, prompts=st.lists(st.text(max_size=20), max_size=3))
def test_v2_requests_never_cause_a_5xx(server, parameters, prompts):
    parameters = {k: v for k, v in parameters.items() if k != "prompt"}
    body = {
        "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [len(prompts)], "data": prompts}],
        "parameters": parameters,
    }
    response = server.client.post("/v2/models/gptj/infer", json=body)
    assert response.status_code < 500, response.text
    assert response.status_code == 200 or set(response.json()) == {"error"}
