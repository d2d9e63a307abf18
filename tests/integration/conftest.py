"""Integration fixtures: real ModelServer processes serving tiny GPT-J models on 127.0.0.1."""

from __future__ import annotations

import pytest

from .server import Server, free_port, ready_server


@pytest.fixture(scope="session")
def server(tiny_dir, cache_dir, tmp_path_factory):
    """The default server: the quick-start tiny model with default limits, and v2 over gRPC as the image
    serves it (on ``server.grpc_port``)."""
    grpc_port = free_port()
    with ready_server(
        tiny_dir,
        cache_dir,
        tmp_path_factory.mktemp("logs") / "server.log",
        "--enable_grpc",
        "true",
        "--grpc_port",
        str(grpc_port),
    ) as s:
        s.grpc_port = grpc_port
        yield s


@pytest.fixture(scope="session")
def faulty(tiny_dir, cache_dir, tmp_path_factory):
    """A server with --fault_injection: prompts with [[fault:oom]] or [[fault:error]] fail on demand."""
    with ready_server(tiny_dir, cache_dir, tmp_path_factory.mktemp("faults") / "log", "--fault_injection", "true") as s:
        yield s


@pytest.fixture
def start_server(tmp_path):
    """Start extra servers with their own flags; all are stopped after the test."""
    started: list[Server] = []

    def start(args, *, env=None, launcher=False, ready=True) -> Server:
        s = Server(args, tmp_path / f"server{len(started)}.log", env=env, launcher=launcher)
        started.append(s)
        if ready:
            s.wait_until_ready()
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(autouse=True)
def still_healthy(request):
    """After every test that used the shared server, it must still serve a normal request."""
    yield
    if "server" in request.fixturenames:
        s = request.getfixturevalue("server")
        assert s.process.poll() is None, "the server died"
        response = s.predict([{"prompt": "still there?", "max_length": 8}])
        assert response.status_code == 200 and response.json()["status"] == "success"
