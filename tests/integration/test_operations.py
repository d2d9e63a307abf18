"""Production behaviour over HTTP: metrics, overload, deadlines, disconnects, faults, request logs."""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .server import assert_generation_stopped, metrics, ready_server, wait_for

PREDICT = "/v1/models/gptj:predict"


def request_logs(server) -> list[dict]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith('{"event": "request"')]


def test_metrics_move_with_requests(server, reference):
    before = metrics(server)
    prompt = "Count my tokens please"
    ok = server.predict({"prompt": prompt, "max_length": 40})
    bad = server.predict({"prompt": prompt, "max_length": 0})
    assert ok.status_code == 200 and bad.status_code == 400
    after = metrics(server)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    prompt_tokens = reference.tokens(prompt)
    assert delta['gptj_requests_total{outcome="success"}'] == 1
    assert delta['gptj_requests_total{outcome="invalid"}'] == 1
    assert delta["gptj_prompt_tokens_total"] == prompt_tokens
    assert delta["gptj_generated_tokens_total"] == 40 - prompt_tokens
    assert delta["gptj_request_duration_seconds_count"] == 2
    assert delta["gptj_queue_duration_seconds_count"] == 1
    assert delta["gptj_time_to_first_token_seconds_count"] == 1
    assert delta["gptj_time_per_output_token_seconds_count"] == 1
    assert after["gptj_model_load_seconds"] > 0
    for outcome in ("overloaded", "timeout", "cancelled", "error"):
        assert f'gptj_requests_total{{outcome="{outcome}"}}' in after  # present from the start
    assert not any(name.startswith("gptj_gpu_memory_bytes") for name in after)  # CUDA only


def test_request_ids_and_one_json_log_line_per_request(server):
    response = server.predict(
        {"prompt": "Log me, but not my words", "max_length": 20}, headers={"X-Request-Id": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    generated = server.predict({"prompt": "No id given", "max_length": 20}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert server.predict({"prompt": "", "max_length": 20}).headers["x-request-id"]  # errors have ids too
    wait_for(lambda: any(line["request_id"] == generated for line in request_logs(server)))
    (line,) = [line for line in request_logs(server) if line["request_id"] == "abc-123"]
    assert line["outcome"] == "success" and line["status"] == 200 and line["prompts"] == 1
    assert line["prompt_tokens"] > 0 and line["generated_tokens"] == 20 - line["prompt_tokens"]
    assert line["duration_ms"] > 0 and line["queue_ms"] is not None and line["time_to_first_token_ms"] > 0
    assert "Log me" not in server.log()  # no prompt text without --log_prompts


def test_prompts_are_logged_only_when_asked(start_server, tiny_dir, cache_dir):
    s = start_server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--log_prompts", "true"])
    s.predict({"prompt": "Please log this prompt", "max_length": 20}, headers={"X-Request-Id": "logged"})
    wait_for(lambda: any(line["request_id"] == "logged" for line in request_logs(s)))
    (line,) = [line for line in request_logs(s) if line["request_id"] == "logged"]
    assert line["prompts"] == ["Please log this prompt"] or line["prompts"] == 1
    assert "Please log this prompt" in json.dumps(line) and line["outputs"][0][0].startswith("Please log this")


@pytest.fixture(scope="module")
def small_queue(tiny_dir, cache_dir, tmp_path_factory):
    """One sequence at a time and two waiting: easy to overload."""
    with ready_server(
        tiny_dir,
        cache_dir,
        tmp_path_factory.mktemp("queue") / "log",
        "--max_batch_size",
        "1",
        "--max_queued_requests",
        "2",
        "--max_prompts",
        "2",
    ) as s:
        yield s


def rss_kib(server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def test_overload_answers_429_with_retry_after_and_nothing_else(small_queue):
    def post(i):
        with httpx.Client(base_url=small_queue.url, timeout=120) as client:
            return client.post(PREDICT, json={"prompt": f"client {i}", "max_length": 80})

    rounds = []
    for _ in range(3):  # memory stays flat across waves of overload
        with ThreadPoolExecutor(40) as pool:
            responses = list(pool.map(post, range(40)))
        rounds.append(rss_kib(small_queue))
        statuses = {r.status_code for r in responses}
        assert statuses <= {200, 429} and 429 in statuses and 200 in statuses
        for r in responses:
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1"
                assert (
                    r.json() == {"status": "failed", "data": None, "message": r.json()["message"]}
                    and "queue is full" in r.json()["message"]
                )
    assert rounds[-1] - rounds[0] < 50_000  # KiB
    assert metrics(small_queue)['gptj_requests_total{outcome="overloaded"}'] > 0
    assert small_queue.predict({"prompt": "after the storm", "max_length": 20}).status_code == 200


def test_a_request_larger_than_the_free_queue_is_refused_whole(small_queue):
    hold = ThreadPoolExecutor(2)
    busy = [
        hold.submit(
            lambda: httpx.post(f"{small_queue.url}{PREDICT}", timeout=120, json={"prompt": "busy", "max_length": 512})
        )
        for _ in range(2)
    ]
    wait_for(lambda: metrics(small_queue)["gptj_queue_size"] == 1)  # one generating, one waiting
    response = small_queue.predict([{"prompt": "a", "max_length": 20}, {"prompt": "b", "max_length": 20}])
    assert response.status_code == 429
    assert all(f.result().status_code == 200 for f in busy)
    hold.shutdown()


@pytest.fixture(scope="module")
def strict_deadline(tiny_dir, cache_dir, tmp_path_factory):
    with ready_server(
        tiny_dir, cache_dir, tmp_path_factory.mktemp("deadline") / "log", "--request_timeout_seconds", "0.2"
    ) as s:
        yield s


def test_a_deadline_answers_504_in_time_and_stops_generating(strict_deadline):
    started = time.monotonic()
    slow = {"prompt": "This will take too long", "max_length": 512, "do_sample": True, "num_return_sequences": 8}
    response = strict_deadline.predict(slow)
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and response.json()["status"] == "failed"
    assert "request timeout" in response.json()["message"]
    assert 0.15 < elapsed < 1.0
    wait_for(lambda: metrics(strict_deadline)["gptj_requests_running"] == 0, timeout=1)  # its rows left
    tokens = metrics(strict_deadline)["gptj_generated_tokens_total"]
    time.sleep(0.5)
    assert metrics(strict_deadline)["gptj_generated_tokens_total"] == tokens  # nothing runs on in the background
    assert metrics(strict_deadline)['gptj_requests_total{outcome="timeout"}'] >= 1
    ok = strict_deadline.predict({"prompt": "quick", "max_length": 10})
    assert ok.status_code == 200  # max_time and short requests are unaffected


def test_a_client_that_disconnects_stops_its_generation(server):
    before = metrics(server)
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        body = json.dumps({"prompt": "I will hang up", "max_length": 512}).encode()
        raw.sendall(
            b"POST "
            + PREDICT.encode()
            + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        wait_for(lambda: metrics(server)["gptj_requests_running"] == 1)
        time.sleep(0.1)
    assert_generation_stopped(server, before, asked=505)


def test_out_of_memory_is_a_503_and_the_server_serves_on(faulty):
    response = faulty.predict({"prompt": "too big [[fault:oom]]", "max_length": 40})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["message"] == "the server ran out of GPU memory for this batch; retry later"
    assert faulty.predict({"prompt": "fine", "max_length": 20}).status_code == 200
    assert metrics(faulty)['gptj_requests_total{outcome="error"}'] >= 1


def test_a_failing_request_does_not_take_its_batch_mates_down(faulty):
    with ThreadPoolExecutor(3) as pool:
        calm = pool.submit(faulty.predict, {"prompt": "calm", "max_length": 200})
        time.sleep(0.2)
        bad = pool.submit(faulty.predict, {"prompt": "bad [[fault:error]]", "max_length": 60})
        assert bad.result().status_code == 500
        assert bad.result().json()["message"] == "generation failed; see the server log"
        assert calm.result().status_code == 200
