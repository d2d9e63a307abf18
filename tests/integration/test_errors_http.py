"""Bad and hostile input over HTTP: every one gets a 4xx envelope naming the problem, and the server
keeps serving (the autouse `still_healthy` fixture checks after every test).
"""

from __future__ import annotations

import http.client
import json

import pytest

PREDICT = "/v1/models/gptj:predict"
SEED = "If I was a billionaire, I would"


def failed(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "failed" and body["data"] is None and set(body) == {"status", "data", "message"}
    assert "Traceback" not in body["message"]
    return body["message"]


def raw(server, content: bytes, content_type: str | None = "application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return server.client.post(PREDICT, content=content, headers=headers)


@pytest.mark.parametrize(
    "content, content_type, message",
    [
        (b'{"prompt": ', "application/json", "Unrecognized request format"),  # KServe parses application/json
        (b'{"prompt": ', "application/json; charset=utf-8", "not valid JSON"),  # we parse the rest
        (b"", None, "Unrecognized request format"),  # no Content-Type: KServe parses it
        (b"", "text/plain", "not valid JSON"),
        (b"\x00\x01\x02binary", "application/octet-stream", "Unrecognized request format"),
        (b"\xff\xfe\xfd", "text/plain", "not valid utf-8"),
        (b'{"prompt": "a"}', "application/json; charset=nope", "unknown charset 'nope'"),
        (b'{"prompt": "a", "temperature": NaN}', "text/plain", "NaN is not a JSON number"),
        (b"[" * 50_000 + b"]" * 50_000, "text/plain", "nested too deeply"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json", "depth limit exceeded"),
        (b'{"prompt": "a", "max_length": ' + b"9" * 10_000 + b"}", "text/plain", "not valid JSON"),
        (
            b'{"prompt": "a", "max_length": 99999999999999999999999}',
            "application/json",
            "max_length: must be an integer (got 1e+23)",
        ),  # orjson reads it as a float
        (b'{"prompt": "a", "temperature": 1e999}', "text/plain", "temperature: must be a finite number"),
        (b'{"prompt": "a", "temperature": 1e999}', "application/json", "number is infinity"),
        (b'"just a string"', "application/json", "body must be a JSON list of request objects"),
        (b"null", "application/json", "got null"),
        (b"[]", "application/json", "the request list is empty"),
        (b'{"instances": "nope"}', "application/json", "instances: must be a list"),
        (b"[1, 2]", "application/json", "[0]: must be a JSON object"),
        (b'{"prompt": "a\\ud800b"}', "text/plain", "prompt: must be valid Unicode text"),
        (b'{"prompt": "a\\ud800b"}', "application/json", "no low surrogate"),
    ],
)
def test_malformed_bodies(server, content, content_type, message):
    assert message in failed(raw(server, content, content_type), 400)


@pytest.mark.parametrize(
    "request_object, message",
    [
        ({}, "prompt: is required"),
        ({"prompt": ""}, "prompt: must not be empty"),
        ({"prompt": ["a", "b"]}, "prompt: must be a string (got a list)"),
        ({"prompt": SEED, "temprature": 0.5}, "temprature: unknown field"),
        ({"prompt": SEED, "max_length": -5}, "max_length: must be >= 1 (got -5)"),
        ({"prompt": SEED, "max_length": "50"}, 'max_length: must be an integer (got "50")'),
        ({"prompt": SEED, "max_length": 5}, "max_length: must be greater than the prompt's"),
        ({"prompt": SEED, "max_length": 30, "min_length": 40}, "min_length: must be <= max_length (30) (got 40)"),
        ({"prompt": SEED, "num_beams": 10_000}, "num_beams: must be <= 8 (got 10000)"),
        ({"prompt": SEED, "num_return_sequences": 1000, "do_sample": True}, "num_return_sequences: must be <= 8"),
        (
            {"prompt": SEED, "num_return_sequences": 3},
            "greedy search has one answer; use do_sample: true or num_beams >= 3",
        ),
        (
            {"prompt": SEED, "num_return_sequences": 3, "num_beams": 2, "do_sample": True},
            "with beam search it must be <= num_beams (2)",
        ),
        ({"prompt": SEED, "num_beams": 4, "num_beam_groups": 3}, "num_beam_groups: must divide num_beams (4)"),
        (
            {"prompt": SEED, "num_beams": 4, "num_beam_groups": 2, "do_sample": True},
            "cannot be combined with do_sample",
        ),
        ({"prompt": SEED, "temperature": -1}, "temperature: must be >= 0"),
        ({"prompt": SEED, "top_p": 7}, "top_p: must be <= 1 (got 7)"),
        ({"prompt": SEED, "top_k": 1.5}, "top_k: must be an integer"),
        ({"prompt": SEED, "repetition_penalty": 0}, "repetition_penalty: must be >= 0.01"),
        ({"prompt": SEED, "max_time": -1}, "max_time: must be > 0"),
        # values whose float32 arithmetic would overflow into inf/NaN during generation
        ({"prompt": SEED, "do_sample": True, "temperature": 1e-300}, "temperature: must be 0 (greedy) or >= 1e-05"),
        ({"prompt": SEED, "num_beams": 2, "length_penalty": 1e300}, "length_penalty: must be <= 10"),
        ({"prompt": SEED, "do_sample": True, "repetition_penalty": 1e-300}, "repetition_penalty: must be >= 0.01"),
        ({"prompt": SEED, "do_sample": "true"}, "do_sample: must be true or false"),
        ({"prompt": SEED, "diversity_penalty": -3}, "diversity_penalty: must be >= 0"),
        ({"prompt": "word " * 3000}, "tokens is too long"),  # never reaches the rotary table
        ({"prompt": "word " * 600, "max_length": 4000}, "a prompt may have at most 511 tokens"),
    ],
)
def test_bad_values(server, request_object, message):
    content = json.dumps(request_object, allow_nan=True).encode()
    assert message in failed(raw(server, content), 400)


@pytest.mark.parametrize(
    "extreme",
    [
        {"encoder_no_repeat_ngram_size": 99_999_999_999},  # transformers would allocate per n-gram position
        {"top_k": 99_999_999_999_999, "do_sample": True},
        {"max_time": 1e300},
        {"num_beams": 8, "num_return_sequences": 8, "length_penalty": 10, "repetition_penalty": 100},
        {"num_beams": 8, "num_beam_groups": 8, "diversity_penalty": 1000, "num_return_sequences": 8},
        {"do_sample": True, "temperature": 100, "min_length": 30},
        {"do_sample": True, "temperature": 1e-5, "top_p": 1e-300},
        {"prompt": "a\u0000b <|endoftext|>\u200b"},
    ],
)
def test_extreme_but_valid_values_succeed(server, extreme):
    response = server.predict({"prompt": SEED, "max_length": 40, **extreme})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"


def test_too_many_prompts(server):
    assert "at most 16 per request (got 17)" in failed(server.predict([{"prompt": "a"}] * 17), 400)


def test_one_bad_prompt_among_several_is_named(server):
    body = [{"prompt": "fine"}, {"prompt": "fine"}, {"prompt": "fine", "max_length": 0}]
    assert failed(server.predict(body), 400).startswith("[2].max_length: must be >= 1")


def test_body_too_large_with_content_length(server):
    response = raw(server, json.dumps({"prompt": "a" * (2 << 20)}).encode())
    assert "request body is too large: at most 1048576 bytes" in failed(response, 413)


def test_body_too_large_when_chunked(server):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    response = server.client.post(PREDICT, content=chunks(), headers={"content-type": "application/json"})
    assert "request body is too large" in failed(response, 413)


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("POST", "/v1/models/nope:predict", 404, "Model with name nope does not exist."),
        ("GET", "/v1/models/nope", 404, "Model with name nope does not exist."),
        ("GET", "/no/such/route", 404, "Not Found"),
    ],
)
def test_routing_errors_are_envelopes(server, method, path, status, message):
    response = server.client.request(method, path, json={"prompt": "a"})
    assert failed(response, status) == message


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/models/gptj:predict"),
        ("PUT", "/v1/models/gptj:predict"),
        ("DELETE", "/v1/models/gptj:stream"),
        ("GET", "/v1/models/gptj:explain"),
        ("GET", "/v2/models/gptj/infer"),
        ("PATCH", "/v2/models/gptj/infer"),
        ("GET", "/v2/models/gptj/versions/1/infer"),
        ("GET", "/openai/v1/completions"),
    ],
)
def test_a_wrong_method_on_an_inference_route_is_405_with_allow(server, method, path):
    response = server.client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    if path.startswith("/v1/"):
        assert failed(response, 405) == "Method Not Allowed"
    assert server.client.get("/v1/models/gptj").status_code == 200  # the model health route still answers


def test_errors_take_the_form_of_the_paths_protocol(server):
    """v2 clients read {"error": "..."}, OpenAI's clients {"error": {"message", "type", ...}}."""
    response = server.client.post("/v2/health/live", json={})
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}
    response = server.client.get("/openai/v1/nothing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"message": "Not Found", "type": "invalid_request_error", "param": None, "code": 404}
    }


def test_errors_keep_the_connection_alive(server):
    """No exception reaches uvicorn, which would drop the keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for body, status in [
            (b'{"prompt": ', 400),
            (b'{"prompt": "a", "bogus": 1}', 400),
            (b"[]", 400),
            (b'{"prompt": "' + b"w " * 3000 + b'"}', 400),
            (b'{"prompt": "ok"}', 200),
        ]:
            connection.request("POST", PREDICT, body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status == status and payload["status"] in ("failed", "success")
            assert response.getheader("connection") != "close"
        first_socket = connection.sock
        connection.request("GET", "/v2/health/live")
        assert connection.getresponse().status == 200 and connection.sock is first_socket
    finally:
        connection.close()


def test_internal_errors_are_500_envelopes_without_details(start_server, tiny_dir, cache_dir):
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--fault_injection", "true"])
    message = failed(s.predict({"prompt": "please [[fault:error]]", "max_length": 60}), 500)
    assert message == "generation failed; see the server log"
    assert "injected by --fault_injection" in s.log()  # the details go to the log, not to the client
    # one failed prompt fails its request only; the engine keeps serving
    assert s.predict({"prompt": "calm", "max_length": 20}).json()["status"] == "success"
    mixed = s.predict([{"prompt": "calm", "max_length": 20}, {"prompt": "[[fault:error]]", "max_length": 60}])
    assert failed(mixed, 500) == "generation failed; see the server log"
    assert s.predict({"prompt": "calm again", "max_length": 20}).status_code == 200
