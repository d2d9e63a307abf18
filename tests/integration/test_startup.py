"""Start-up: live at once, ready only once the weights are on their device; a failed load exits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .server import ROOT, free_port

SEED = [{"prompt": "If I was a billionaire, I would", "max_length": 50}]


def test_readiness_follows_loading(start_server, tiny_dir, cache_dir, tmp_path):
    gate = tmp_path / "let-it-load"
    s = start_server(
        ["--model", str(tiny_dir), "--cache_dir", str(cache_dir)],
        launcher=True,
        env={"GPTJ_TEST_LOAD_GATE": str(gate)},
        ready=False,
    )
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
    response = s.client.get("/openai/health")  # vLLM's readiness route: 503 while loading, never a 404
    assert response.status_code == 503 and response.json()["error"]["message"] == "model 'gptj' is not loaded yet"

    gate.touch()
    s.wait_until_ready(timeout=60)
    assert s.client.get("/v1/models/gptj").json() == {"name": "gptj", "ready": True}
    assert s.client.get("/openai/health").status_code == 200
    assert s.predict(SEED).json()["status"] == "success"
    log = s.log()
    assert "loading weights from" in log and "model 'gptj' is ready" in log
    assert "If I was a billionaire" not in log  # no prompts in logs


def _copy(tiny_dir, dest, drop=(), config=None, truncate=None):
    """A copy of the tiny checkpoint, less the files in ``drop``, with config.json changes, or a
    truncated weights file (an interrupted download)."""
    shutil.copytree(tiny_dir, dest)
    for name in drop:
        (dest / name).unlink()
    if config:
        (dest / "config.json").write_text(json.dumps({**json.loads((dest / "config.json").read_text()), **config}))
    if truncate:
        data = (dest / truncate).read_bytes()
        (dest / truncate).write_bytes(data[: len(data) // 2])
    return dest


def _clutter(dest, count):
    dest.mkdir()
    for i in range(count):
        (dest / f"file{i}.txt").write_text("x")
    return dest


# (how to make the source, environment, what the one line must say)
BAD_SOURCES = {
    "a path that does not exist": (
        lambda tmp, tiny: tmp / "no-such-model",
        {},
        ["no-such-model: no such directory", "EleutherAI/gpt-j-6b", "tiny"],
    ),
    "a directory without config.json": (
        lambda tmp, tiny: _clutter(tmp / "not-a-model", 7),
        {},
        [
            "not-a-model: no config.json",
            "it holds file0.txt, file1.txt, file2.txt, file3.txt, file4.txt and 2 more",
            "Point --model at the directory that holds config.json",
        ],
    ),
    "an empty directory": (
        lambda tmp, tiny: _clutter(tmp / "empty", 0),
        {},
        ["empty: no config.json", "the directory is empty"],
    ),
    "a config that is not GPT-J": (
        lambda tmp, tiny: _copy(tiny, tmp / "llama", config={"model_type": "llama"}),
        {},
        ['llama: config.json has model_type "llama", not "gptj"', "GPT-J only"],
    ),
    "no weights": (
        lambda tmp, tiny: _copy(tiny, tmp / "no-weights", drop=["model.safetensors"]),
        {},
        ["no-weights: no weights (model.safetensors, pytorch_model.bin", "it holds config.json", "incomplete download"],
    ),
    "weights that cannot be read": (
        lambda tmp, tiny: _copy(tiny, tmp / "half", truncate="model.safetensors"),
        {},
        ["half: model.safetensors is not a valid safetensors file", "incomplete download"],
    ),
    "a hub id with HF_HUB_OFFLINE set": (
        lambda tmp, tiny: "EleutherAI/gpt-j-6b",
        {"HF_HUB_OFFLINE": "1"},
        [
            "--model EleutherAI/gpt-j-6b: a hub id, but HF_HUB_OFFLINE is set and it is not in the cache",
            "Unset HF_HUB_OFFLINE",
        ],
    ),
    "a hub id with no network": (
        # The hub's address is a closed port on this machine: a refused connection, as with no route out.
        lambda tmp, tiny: "EleutherAI/gpt-j-6b",
        {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        [
            "--model EleutherAI/gpt-j-6b: a hub id, but the hub (http://127.0.0.1:",
            "cannot be reached",
            "Let the pod reach the hub",
        ],
    ),
}


@pytest.mark.parametrize("case", BAD_SOURCES)
def test_a_bad_model_source_ends_the_process_with_one_line_naming_it_and_the_fix(
    case, start_server, tiny_dir, cache_dir, tmp_path
):
    make, env, expected = BAD_SOURCES[case]
    source = make(tmp_path, tiny_dir)
    s = start_server(
        ["--model", str(source), "--cache_dir", str(cache_dir)],
        ready=False,
        env={"HF_HOME": str(tmp_path / "hf-home"), **env},
    )
    assert s.process.wait(120) == 1
    log = s.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot load the model: --model " in errors[0], log[-3000:]
    for text in expected:
        assert text in errors[0]
    assert "Traceback" not in log  # at debug level only


def test_device_cuda_without_cuda_ends_the_process_with_one_line(start_server, tiny_dir, cache_dir):
    """What a GPU pod without the nvidia runtime (or with too old a driver) does with --device cuda (the
    chart's GPTJ_DEVICE=cuda): exit 1 at once with the reason, rather than go Ready on the CPU. This machine has
    no usable CUDA, so it is the real path."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is usable here: this checks the start-up of a pod that cannot use its GPU")
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--device", "cuda"], ready=False)
    assert s.process.wait(120) == 1
    log = s.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log[-3000:]
    assert "cannot load the model: --device cuda: CUDA is not usable (" in errors[0]
    assert "loading weights" not in log and "Traceback" not in log


def test_the_traceback_of_a_bad_source_is_logged_at_debug_level(start_server, cache_dir, tmp_path):
    s = start_server(
        ["--model", str(tmp_path / "no-such-model"), "--cache_dir", str(cache_dir)],
        ready=False,
        env={"KSERVE_LOGLEVEL": "DEBUG"},
    )
    assert s.process.wait(120) == 1
    log = s.log()
    assert "cannot load the model: --model" in log and "Traceback" in log and "BadSource" in log


def test_a_load_that_fails_for_another_reason_keeps_its_traceback(start_server, tiny_dir, cache_dir):
    s = start_server(
        ["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--max_length_limit", "4096"], ready=False
    )
    assert s.process.wait(120) == 1
    log = s.log()
    assert "loading the model failed; exiting" in log and "Traceback" in log
    assert "exceeds the model's context window of 2048 tokens" in log


def test_settings_from_the_environment_reach_the_server(start_server, tiny_dir, cache_dir):
    s = start_server(
        ["--cache_dir", str(cache_dir)],
        env={
            "GPTJ_MODEL": str(tiny_dir),
            "GPTJ_MAX_LENGTH_LIMIT": "40",
            "GPTJ_MAX_PROMPTS": "2",
            "GPTJ_MAX_BODY_BYTES": "2000",
        },
    )
    body = s.predict({"prompt": "hello", "max_length": 100}).json()
    assert body["message"] == "max_length 100 is over the limit of 40; capped to 40"
    assert (
        s.predict([{"prompt": "a"}] * 3).json()["message"] == "too many request objects: at most 2 per request (got 3)"
    )
    assert s.predict({"prompt": "a" * 3000}).status_code == 413


def test_the_model_name_is_a_setting(start_server, tiny_dir, cache_dir):
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--model_name", "gptj"])
    assert s.client.get("/v1/models").json() == {"models": ["gptj"]}


def test_make_serve_passes_port_model_and_args():
    dry = subprocess.run(
        ["make", "-n", "serve", "PORT=18123", "MODEL=/models/gpt-j", "ARGS=--max_prompts 3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m predictor --http_port 18123 --model /models/gpt-j --max_prompts 3" in dry


def test_help_lists_our_flags_and_kserve_flags():
    out = subprocess.run(
        [sys.executable, "-m", "predictor", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--model", "--max_length_limit", "--max_body_bytes", "--http_port", "--model_name"):
        assert flag in out
    assert "GPTJ_MAX_LENGTH_LIMIT" in out
