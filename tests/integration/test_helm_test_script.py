"""The `helm test` hook's script (helm/gptj/files/predict_test.py) against a real server."""

from __future__ import annotations

import subprocess
import sys

from .server import ROOT

SCRIPT = ROOT / "helm" / "gptj" / "files" / "predict_test.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_it_passes_against_a_serving_model(server):
    result = run(server.url, "gptj", "60")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PASS:") and "If I was a billionaire, I would" in result.stdout


def test_it_fails_when_the_model_never_gets_ready(server):
    result = run(server.url, "not-this-model", "1")
    assert result.returncode != 0 and "FAIL: not-this-model not ready after 1 s" in result.stderr
