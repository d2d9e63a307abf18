"""SIGTERM: readiness 503, new requests 503, in-flight requests finish, then exit 0."""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import httpx

SLOW = {"prompt": "Finish me before you go", "max_length": 512, "do_sample": True, "num_return_sequences": 8}


def test_sigterm_drains_then_exits_zero(start_server, tiny_dir, cache_dir):
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir)])
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(response=httpx.post(f"{s.url}/v1/models/gptj:predict", json=SLOW, timeout=120))
    )
    worker.start()
    deadline = time.monotonic() + 10
    while "gptj_requests_running 1.0" not in s.client.get("/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s.process.send_signal(signal.SIGTERM)
    time.sleep(0.1)

    ready = s.client.get("/v2/models/gptj/ready")
    assert ready.status_code == 503  # Kubernetes stops routing here
    assert s.client.get("/v2/health/live").status_code == 200  # ... without killing the pod
    refused = s.predict({"prompt": "too late", "max_length": 20})
    assert refused.status_code == 503
    assert refused.json()["message"] == "the server is shutting down; retry (another replica will answer)"

    worker.join(60)
    assert result["response"].status_code == 200  # the in-flight request finished
    assert len(result["response"].json()["data"]) == 8
    assert s.process.wait(30) == 0
    log = s.log()
    assert "SIGTERM: draining 1 in-flight request(s)" in log and "drained; stopping the server" in log


def test_drain_is_bounded_by_its_timeout(start_server, tiny_dir, cache_dir):
    s = start_server(
        [
            "--model",
            str(tiny_dir),
            "--cache_dir",
            str(cache_dir),
            "--drain_timeout_seconds",
            "0.3",
            "--request_timeout_seconds",
            "0",
        ]
    )
    endless = {**SLOW, "num_return_sequences": 8, "max_length": 512}
    threads = [threading.Thread(target=lambda: _quietly(s.url, endless)) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(30) == 0
    assert time.monotonic() - started < 0.3 + 2 + 3  # drain timeout + uvicorn's grace + slack
    assert "drain timeout" in s.log() or "drained; stopping the server" in s.log()


def _quietly(url: str, body: dict) -> None:
    with contextlib.suppress(httpx.HTTPError):  # cut off by the shutdown: that is the point of a bounded drain
        httpx.post(f"{url}/v1/models/gptj:predict", json=body, timeout=60)
