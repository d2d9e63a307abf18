"""A real `python -m predictor` process on 127.0.0.1, for integration tests."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("launch.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Start the predictor as its own process; stop it (and collect its log) on exit."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 launcher: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, str(LAUNCHER) if launcher else "-m", *([] if launcher else ["predictor"])]
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [*command, "--http_port", str(self.port), *args], cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_until_listening(self, timeout: float = 120) -> None:
        self._poll("/v2/health/live", timeout)

    def wait_until_ready(self, timeout: float = 120) -> None:
        self._poll("/v2/models/gptj/ready", timeout)

    def _poll(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} not 200 after {timeout}s:\n{self.log()[-3000:]}")

    def predict(self, body, **kwargs) -> httpx.Response:
        return self.client.post("/v1/models/gptj:predict", json=body, **kwargs)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


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
