"""A ``python -m predictor`` process on a free port of 127.0.0.1: start it, poll it, stop it.

Shared by the benchmark (bench/server.py) and the integration tests (tests/integration/server.py),
so both drive the server the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """The server as its own process, its output in ``log_path`` (or a function of the port that names
    it); ``command`` replaces ``-m predictor``. ``python`` and ``cwd`` run another checkout's server
    with its own venv (the benchmark's baseline tree) or another server entirely (vLLM, whose port
    flag is ``--port``); ``cwd`` goes first on PYTHONPATH, so that tree's packages are the ones imported."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path | Callable[[int], Path],
        env: dict[str, str] | None = None,
        command: Sequence[str] = ("-m", "predictor"),
        python: str = sys.executable,
        cwd: Path = ROOT,
        port_flag: str = "--http_port",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path(self.port) if callable(log_path) else log_path
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open for the process's lifetime; stop() closes it
        path = os.pathsep.join(filter(None, (str(cwd), os.environ.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            [python, *command, port_flag, str(self.port), *args],
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": path, **(env or {})},
        )

    def poll(
        self, path: str, timeout: float, interval: float = 0.1, get: Callable[[str], httpx.Response] | None = None
    ) -> None:
        """Wait until ``GET path`` answers 200; raise if the process exits first or time runs out."""
        get = get or (lambda p: httpx.get(self.url + p, timeout=2))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(interval)
        raise TimeoutError(f"{path} not 200 after {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it is still running after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
