"""`POST /v1/models/gptj:stream` over real HTTP: events, the final envelope, errors, disconnects."""

from __future__ import annotations

import json

import httpx

from .server import assert_generation_stopped, metrics, wait_for

STREAM = "/v1/models/gptj:stream"


def events(response: httpx.Response) -> list[dict]:
    """The JSON payload of every `data:` event, in order (each event is one line and a blank line)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines()]
    assert all(line.startswith("data: ") for line in lines if line), lines
    return [json.loads(line[len("data: ") :]) for line in lines if line]


def stream(server, body) -> list[dict]:
    with server.client.stream("POST", STREAM, json=body) as response:
        assert response.status_code == 200
        return events(response)


def test_pieces_then_the_envelope(server):
    body = {"prompt": "If I was a billionaire, I would", "max_new_tokens": 30}
    before = metrics(server)
    *pieces, final = stream(server, body)
    outcome = 'gptj_requests_total{{outcome="{}"}}'.format
    # The record closes just after the last byte went out: wait for it.
    wait_for(lambda: metrics(server)[outcome("success")] - before[outcome("success")] == 1)  # a success ...
    assert metrics(server).get(outcome("cancelled"), 0) == before.get(outcome("cancelled"), 0)  # ... not a leaver
    assert len(pieces) > 1 and all(set(event) == {"index", "text"} and event["index"] == 0 for event in pieces)
    assert final["status"] == "success" and final["message"] is None
    assert final["data"] == body["prompt"] + "".join(event["text"] for event in pieces)
    assert final["data"] == server.predict(body).json()["data"]  # greedy: what :predict answers


def test_seeded_sequences_and_details(server):
    body = {
        "prompt": "Tell me",
        "max_new_tokens": 20,
        "do_sample": True,
        "num_return_sequences": 2,
        "seed": 9,
        "details": True,
        "stop": ["\n"],
    }
    *pieces, final = stream(server, body)
    texts = ["".join(e["text"] for e in pieces if e["index"] == i) for i in (0, 1)]
    assert [d["text"] for d in final["data"]] == [body["prompt"] + text for text in texts]
    assert all(d["prompt_tokens"] > 0 and d["finish_reason"] in ("length", "stop") for d in final["data"])
    assert final["data"] == server.predict(body).json()["data"]  # the same seed, the same texts


def test_errors_before_the_first_token_are_ordinary_envelopes(server):
    for body, message in [
        ({"prompt": "a", "max_new_tokens": 0}, "max_new_tokens: must be >= 1 (got 0)"),
        ([{"prompt": "a"}, {"prompt": "b"}], "body: a stream carries one prompt (got 2)"),
        ({"prompt": "a", "num_beams": 2}, "num_beams: a stream generates without beam search"),
    ]:
        response = server.client.post(STREAM, json=body)
        assert response.status_code == 400 and response.headers["content-type"] == "application/json"
        assert response.json()["status"] == "failed" and message in response.json()["message"]
    response = server.client.post("/v1/models/nope:stream", json={"prompt": "a"})
    assert response.status_code == 404 and "model 'nope' is not served here" in response.json()["message"]


def test_an_error_after_the_first_token_ends_the_stream_with_a_failed_envelope(faulty):
    # The fault strikes in the first decode step, after the prompt's first token went out.
    with faulty.client.stream("POST", STREAM, json={"prompt": "boom [[fault:error]]", "max_new_tokens": 20}) as r:
        assert r.status_code == 200
        *pieces, final = events(r)
    assert pieces and final == {"status": "failed", "data": None, "message": "generation failed; see the server log"}
    assert faulty.client.post(STREAM, json={"prompt": "fine", "max_new_tokens": 5}).status_code == 200


def test_disconnecting_stops_the_generation(server):
    before = metrics(server)
    with server.client.stream("POST", STREAM, json={"prompt": "A long story", "max_length": 512}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # generating now; leave after the first event
    assert_generation_stopped(server, before, asked=508)
