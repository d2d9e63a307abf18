"""Integration fixtures: real ModelServer processes serving tiny GPT-J models on 127.0.0.1."""

from __future__ import annotations

import pytest

from .server import Server


@pytest.fixture(scope="session")
def server(tiny_dir, cache_dir, tmp_path_factory):
    """The default server: the quick-start tiny model with default limits."""
    s = Server(["--model", str(tiny_dir), "--cache_dir", str(cache_dir)],
               tmp_path_factory.mktemp("logs") / "server.log")
    try:
        s.wait_until_ready()
        yield s
    finally:
        s.stop()


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
