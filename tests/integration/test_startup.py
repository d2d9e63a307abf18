"""Start-up: live at once, ready only once the weights are on their device; a failed load exits."""

from __future__ import annotations

import subprocess
import sys

from .server import ROOT

SEED = [{"prompt": "If I was a billionaire, I would", "max_length": 50}]


def test_readiness_follows_loading(start_server, tiny_dir, cache_dir, tmp_path):
    gate = tmp_path / "let-it-load"
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir)], launcher=True,
                     env={"GPTJ_TEST_LOAD_GATE": str(gate)}, ready=False)
    s.wait_until_listening()

    assert s.client.get("/v2/health/live").status_code == 200  # alive while loading
    not_ready = "Model with name gptj is not ready."
    response = s.client.get("/v1/models/gptj")
    assert response.status_code == 503
    assert response.json() == {"status": "failed", "data": None, "message": not_ready}
    response = s.client.get("/v2/models/gptj/ready")  # v2's error form
    assert response.status_code == 503 and response.json() == {"error": not_ready}
    for path in ("/v1/models/gptj:predict", "/v1/models/gptj:stream"):
        response = s.client.post(path, json=SEED[0])
        assert response.status_code == 503 and response.json()["status"] == "failed"
    response = s.client.post("/openai/v1/completions", json={"model": "gptj", "prompt": "hi"})
    assert response.status_code == 503 and response.json()["error"]["type"] == "server_error"

    gate.touch()
    s.wait_until_ready(timeout=60)
    assert s.client.get("/v1/models/gptj").json() == {"name": "gptj", "ready": True}
    assert s.predict(SEED).json()["status"] == "success"
    log = s.log()
    assert "loading weights from" in log and "model 'gptj' is ready" in log
    assert "If I was a billionaire" not in log  # no prompts in logs


def test_a_model_that_cannot_load_ends_the_process(start_server, cache_dir, tmp_path):
    s = start_server(["--model", str(tmp_path / "no-such-model"), "--cache_dir", str(cache_dir)], ready=False)
    assert s.process.wait(120) == 1
    assert "loading the model failed; exiting" in s.log()


def test_settings_from_the_environment_reach_the_server(start_server, tiny_dir, cache_dir):
    s = start_server(["--cache_dir", str(cache_dir)], env={
        "GPTJ_MODEL": str(tiny_dir), "GPTJ_MAX_LENGTH_LIMIT": "40", "GPTJ_MAX_PROMPTS": "2",
        "GPTJ_MAX_BODY_BYTES": "2000"})
    body = s.predict({"prompt": "hello", "max_length": 100}).json()
    assert body["message"] == "max_length 100 is over the limit of 40; capped to 40"
    assert s.predict([{"prompt": "a"}] * 3).json()["message"] == "too many request objects: at most 2 per request (got 3)"
    assert s.predict({"prompt": "a" * 3000}).status_code == 413


def test_the_model_name_is_a_setting(start_server, tiny_dir, cache_dir):
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--model_name", "gptj"])
    assert s.client.get("/v1/models").json() == {"models": ["gptj"]}


def test_make_serve_passes_port_model_and_args():
    dry = subprocess.run(["make", "-n", "serve", "PORT=18123", "MODEL=/models/gpt-j", "ARGS=--max_prompts 3"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m predictor --http_port 18123 --model /models/gpt-j --max_prompts 3" in dry


def test_help_lists_our_flags_and_kserve_flags():
    out = subprocess.run([sys.executable, "-m", "predictor", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--model", "--max_length_limit", "--max_body_bytes", "--http_port", "--model_name"):
        assert flag in out
    assert "GPTJ_MAX_LENGTH_LIMIT" in out
