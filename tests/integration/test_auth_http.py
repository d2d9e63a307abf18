"""API keys over HTTP (--api_keys_file): every protected route without, with a wrong and with a right
key; probes and /metrics open; rotation of a Secret-style keys file without a restart; real clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from .server import ROOT, metrics, ready_server, wait_for

OLD, NEW, OTHER = "old-key-1b9d6bcd", "new-key-8a4f12ee", "other-key-55c0ffee"
V2_BODY = {
    "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["Hello"]}],
    "parameters": {"max_new_tokens": 4},
}


def publish(directory: Path, version: str, keys: list[str]) -> None:
    """What the kubelet does to a Secret volume: a new directory, then one atomic swap of ``..data``."""
    (directory / version).mkdir()
    (directory / version / "keys").write_text("".join(f"{key}\n" for key in keys))
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", directory / "..data")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("secret")
    publish(directory, "..v1", [OTHER, OLD])
    (directory / "keys").symlink_to("..data/keys")
    return directory


@pytest.fixture(scope="module")
def secured(tiny_dir, cache_dir, tmp_path_factory, keys_dir):
    log = tmp_path_factory.mktemp("auth") / "server.log"
    with ready_server(tiny_dir, cache_dir, log, "--api_keys_file", str(keys_dir / "keys")) as s:
        yield s


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


SEED_401 = {"status": "failed", "data": None}
# (method, path, body, the error body's shape for a wrong key, status with the right key)
PROTECTED = [
    ("POST", "/v1/models/gptj:predict", {"prompt": "Hi", "max_length": 6}, SEED_401, 200),
    ("POST", "/v1/models/gptj:stream", {"prompt": "Hi", "max_length": 6}, SEED_401, 200),
    ("POST", "/openai/v1/completions", {"model": "gptj", "prompt": "Hi", "max_tokens": 2}, "openai", 200),
    ("GET", "/openai/v1/models", None, "openai", 200),
    ("GET", "/openai/v1/models/gptj", None, "openai", 200),
    ("POST", "/openai/tokenize", {"prompt": "Hi"}, "openai", 200),
    ("POST", "/openai/detokenize", {"tokens": [1, 2]}, "openai", 200),
    ("POST", "/v2/models/gptj/infer", V2_BODY, "v2", 200),
    ("GET", "/v2/models/gptj", None, "v2", 200),
    ("GET", "/v2/models", None, "v2", 200),
    ("GET", "/v1/models", None, SEED_401, 200),
]


def check_refusal(response: httpx.Response, shape, message: str, challenge: str) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge
    body = response.json()
    if shape == "openai":
        assert body == {
            "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
        }
    elif shape == "v2":
        assert body == {"error": message}
    else:
        assert body == {**shape, "message": message}


@pytest.mark.parametrize("method, path, body, shape, status", PROTECTED, ids=[p[1] for p in PROTECTED])
def test_a_protected_route_needs_the_right_key(secured, method, path, body, shape, status):
    send = lambda **headers: secured.client.request(method, path, json=body, headers=headers)  # noqa: E731
    check_refusal(send(), shape, "missing API key: send the header 'Authorization: Bearer <key>'", "Bearer")
    check_refusal(send(**bearer("not-" + OLD)), shape, "invalid API key", 'Bearer error="invalid_token"')
    check_refusal(send(Authorization=OLD), shape, "the Authorization header must be 'Bearer <key>'", "Bearer")
    assert send(**bearer(OLD)).status_code == status
    assert send(**bearer(OTHER)).status_code == status


@pytest.mark.parametrize(
    "path",
    [
        "/v2/health/live",
        "/",
        "/v2/health/ready",
        "/v2/models/gptj/ready",
        "/v1/models/gptj",
        "/metrics",
        "/openai/health",
    ],
)
def test_probes_and_metrics_stay_open(secured, path):
    assert secured.client.get(path).status_code == 200


def test_refusals_are_counted_and_logged_without_the_key(secured):
    before = metrics(secured)['gptj_requests_total{outcome="unauthorized"}']
    secured.predict({"prompt": "no key"}, headers=bearer("guess-" + OLD))
    secured.client.get("/v2/models/gptj")  # metadata: no request record, counted all the same
    secured.predict({"prompt": "with key", "max_length": 20}, headers=bearer(OLD))  # OLD: the file's second key
    wait_for(lambda: metrics(secured)['gptj_requests_total{outcome="unauthorized"}'] == before + 2)
    wait_for(lambda: '"key_slot": 1' in secured.log())
    lines = [json.loads(line) for line in secured.log().splitlines() if line.startswith('{"event"')]
    assert any(line["outcome"] == "unauthorized" and line["status"] == 401 for line in lines)
    assert any(line["outcome"] == "success" and line.get("key_slot") == 1 for line in lines)
    assert OLD not in secured.log() and OTHER not in secured.log()


def test_the_openai_client_sends_its_api_key(secured):
    client = openai.OpenAI(base_url=f"{secured.url}/openai/v1", api_key=OLD, max_retries=0)
    completion = client.completions.create(model="gptj", prompt="Hello", max_tokens=3)
    assert completion.choices[0].text and completion.usage.completion_tokens == 3
    wrong = openai.OpenAI(base_url=f"{secured.url}/openai/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.completions.create(model="gptj", prompt="Hello", max_tokens=3)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"


def test_kserves_client_sends_the_header(secured):
    async def infer(headers):
        request = InferRequest(
            model_name="gptj",
            parameters={"max_new_tokens": 3},
            infer_inputs=[InferInput(name="prompt", shape=[1], datatype="BYTES", data=["Hi"])],
        )
        async with InferenceRESTClient(RESTConfig(protocol="v2")) as client:
            return await client.infer(secured.url, request, model_name="gptj", headers=headers)

    assert asyncio.run(infer(bearer(OLD))).outputs[0].data[0].startswith("Hi")
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        asyncio.run(infer(bearer("wrong")))


def test_rotation_takes_effect_within_seconds_without_a_restart(secured, keys_dir):
    """Add the new key, move clients over, remove the old one: the kubelet swaps the Secret volume."""
    pid = secured.process.pid
    ask = lambda key: secured.predict({"prompt": "rotate", "max_length": 20}, headers=bearer(key)).status_code  # noqa: E731
    try:
        publish(keys_dir, "..v2", [OTHER, OLD, NEW])
        wait_for(lambda: ask(NEW) == 200, timeout=5)
        assert ask(OLD) == 200  # both work while clients move over
        started = time.monotonic()
        publish(keys_dir, "..v3", [OTHER, NEW])
        wait_for(lambda: ask(OLD) == 401, timeout=5)
        assert time.monotonic() - started < 5 and ask(NEW) == 200
        assert secured.process.poll() is None and secured.process.pid == pid  # no restart
    finally:
        publish(keys_dir, "..v4", [OTHER, OLD])  # the module's other tests use OLD


def test_the_helm_test_script_sends_the_first_key_of_the_mounted_file(secured, keys_dir):
    script = ROOT / "helm" / "gptj" / "files" / "predict_test.py"

    def run(keys_file: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), secured.url, "gptj", "60"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "GPTJ_API_KEYS_FILE": keys_file},
            check=False,
        )

    passed = run(str(keys_dir / "keys"))  # the first key: OTHER
    assert passed.returncode == 0 and passed.stdout.startswith("PASS:"), passed.stderr
    refused = run("")  # readiness is open; the prediction is not
    assert refused.returncode != 0 and "FAIL: HTTP 401" in refused.stderr


@pytest.mark.parametrize(
    "content, message", [(None, "No such file or directory"), ("# no keys yet\n", "no keys in it")]
)
def test_a_missing_or_empty_keys_file_stops_the_start(start_server, tiny_dir, cache_dir, tmp_path, content, message):
    keys = tmp_path / "keys"
    if content is not None:
        keys.write_text(content)
    s = start_server(
        ["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--api_keys_file", str(keys)], ready=False
    )
    assert s.process.wait(timeout=120) == 1  # a server meant to be private never starts open
    assert f"--api_keys_file {keys}: {message}" in s.log()
