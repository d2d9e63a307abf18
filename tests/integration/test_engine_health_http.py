"""An engine that fails for good, over HTTP: requests in flight and queued get 503 within a second or
two, liveness and readiness turn 503 (the chart's liveness probe then restarts the pod: 4 failures
15 s apart), and SIGTERM still ends the process cleanly."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .server import metrics, wait_for

FLAGS = [
    "--fault_injection",
    "true",
    "--engine_stall_seconds",
    "1",
    "--max_batch_size",
    "3",
    "--max_length_limit",
    "2048",
]
REASONS = {
    "[[fault:fatal]]": "the engine thread died",
    "[[fault:stall]]": "a generation step has run for more than --engine_stall_seconds (1 s)",
    "[[fault:device]]": "an unrecoverable device error",
}


@pytest.fixture
def faulty_engine(start_server, tiny_dir, cache_dir):
    return start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), *FLAGS])


@pytest.mark.parametrize("marker", list(REASONS))
def test_in_flight_and_queued_requests_get_503_at_once_and_liveness_turns_503(faulty_engine, marker):
    s, reason = faulty_engine, REASONS[marker]
    message = f"the model engine failed: {reason}; this replica is restarting, retry (another replica will answer)"
    with ThreadPoolExecutor(3) as pool:
        # One request generates (a whole context: seconds) when a beam search that starts beside it (its
        # two rows fill the batch of three) breaks the engine; one more arrives meanwhile ...
        in_flight = pool.submit(s.predict, {"prompt": "in flight", "max_length": 2048})
        wait_for(lambda: metrics(s)["gptj_requests_running"] == 1)
        admitted = metrics(s)["gptj_prompt_tokens_total"]
        started = time.monotonic()
        culprit = pool.submit(s.predict, {"prompt": f"x {marker}", "max_length": 20, "num_beams": 2})
        # The engine took the culprit (it counts a request's prompt tokens as it starts it): the next
        # request is behind it, never in the batch first (where it would finish before the failure).
        wait_for(lambda: metrics(s)["gptj_prompt_tokens_total"] > admitted)
        queued = pool.submit(
            s.predict, {"prompt": "queued", "max_length": 40, "num_return_sequences": 2, "do_sample": True}
        )
        responses = [future.result() for future in (in_flight, queued, culprit)]
        took = time.monotonic() - started
    for response in responses:
        assert response.status_code == 503 and response.json() == {"status": "failed", "data": None, "message": message}
    assert took < (2.5 if marker == "[[fault:stall]]" else 1.5)  # the stall bound is 1 s

    later = s.predict({"prompt": "later", "max_length": 10})
    assert later.status_code == 503 and later.json()["message"] == message
    for _ in range(4):  # what the kubelet sees: failureThreshold (4) failures in a row restart the pod
        live = s.client.get("/v2/health/live")
        assert live.status_code == 503 and live.json() == {"error": message}
        time.sleep(0.05)
    assert s.client.get("/").status_code == 503
    assert s.client.get("/v2/models/gptj/ready").status_code == 503
    assert s.client.get("/v2/health/ready").status_code == 503
    health = s.client.get("/openai/health")  # vLLM's readiness route
    assert health.status_code == 503 and health.json()["error"]["message"] == message
    stream = s.client.post("/v1/models/gptj:stream", json={"prompt": "s", "max_length": 10})
    assert stream.status_code == 503
    completion = s.client.post("/openai/v1/completions", json={"model": "gptj", "prompt": "o", "max_tokens": 2})
    assert completion.status_code == 503 and completion.json()["error"]["message"] == message
    samples = metrics(s)
    assert samples["gptj_engine_healthy"] == 0 and samples['gptj_requests_total{outcome="error"}'] >= 4
    log = s.log()
    assert f"engine unhealthy: {reason}" in log  # the log says why
    lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"event"')]
    assert sum(line["status"] == 503 for line in lines) >= 4

    # The kubelet's restart is a SIGTERM: the process still ends cleanly, within the drain bound.
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(timeout=20) == 0


def test_a_healthy_engine_is_live_and_counts_as_healthy(faulty_engine):
    s = faulty_engine
    assert s.predict({"prompt": "fine", "max_length": 10}).status_code == 200
    assert s.client.get("/v2/health/live").json() == {"live": True}
    assert s.client.get("/").json() == {"status": "alive"}
    assert s.client.get("/v2/health/ready").json() == {"ready": True}
    assert metrics(s)["gptj_engine_healthy"] == 1
