"""A real `python -m predictor` process on 127.0.0.1, for integration tests."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Iterator

import httpx

from bench.process import ROOT as ROOT  # the tests take ROOT and free_port from here
from bench.process import ServerProcess
from bench.process import free_port as free_port

LAUNCHER = Path(__file__).with_name("launch.py")


class Server(ServerProcess):
    """Start the predictor as its own process; stop it (and collect its log) on exit."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, launcher: bool = False
    ) -> None:
        super().__init__(args, log_path, env, command=[str(LAUNCHER)] if launcher else ["-m", "predictor"])
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_until_listening(self, timeout: float = 120) -> None:
        self.poll("/v2/health/live", timeout, get=self.client.get)

    def wait_until_ready(self, timeout: float = 120) -> None:
        self.poll("/v2/models/gptj/ready", timeout, get=self.client.get)

    def predict(self, body, **kwargs) -> httpx.Response:
        return self.client.post("/v1/models/gptj:predict", json=body, **kwargs)

    def stop(self) -> None:
        self.client.close()
        super().stop()


def metrics(server) -> dict[str, float]:
    samples = {}
    for line in server.client.get("/metrics").text.splitlines():
        match = re.match(r"^(gptj_[^ ]+) ([0-9.e+-]+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@contextlib.contextmanager
def ready_server(model: Path, cache_dir: Path, log_path: Path, *flags: str) -> Iterator[Server]:
    """A server for ``model`` with extra ``flags``, ready to serve; stopped on exit."""
    s = Server(["--model", str(model), "--cache_dir", str(cache_dir), *flags], log_path)
    try:
        s.wait_until_ready()
        yield s
    finally:
        s.stop()


def assert_generation_stopped(server: Server, before: dict[str, float], asked: int) -> None:
    """After a client left: its rows left the batch, nothing more is generated for it (well short of
    the ``asked`` tokens), and it counts as cancelled."""
    wait_for(lambda: metrics(server)["gptj_requests_running"] == 0, timeout=2)
    tokens = metrics(server)["gptj_generated_tokens_total"]
    time.sleep(0.3)
    after = metrics(server)
    assert after["gptj_generated_tokens_total"] == tokens  # nothing more generated for it
    assert after["gptj_generated_tokens_total"] - before["gptj_generated_tokens_total"] < 0.8 * asked
    cancelled = 'gptj_requests_total{outcome="cancelled"}'
    assert after[cancelled] - before.get(cancelled, 0) == 1
