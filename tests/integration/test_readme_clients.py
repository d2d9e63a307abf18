"""The docs' client examples (README's quick start and docs/api.md), run as written against a real server
(only the port changes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: (file, section): the sections whose code blocks are runnable examples.
SECTIONS = [
    (ROOT / "README.md", "Ask it something"),
    (ROOT / "docs" / "api.md", "Examples"),
    (ROOT / "docs" / "api.md", "Clients"),
]


def section(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def blocks(language: str) -> list[str]:
    """The ``language`` code blocks of every example section."""
    return [
        block
        for path, heading in SECTIONS
        for block in re.findall(rf"```{language}\n(.*?)```", section(path, heading), flags=re.S)
    ]


def test_the_section_has_an_example_per_client():
    shell = "\n".join(blocks("sh"))
    assert ":predict" in shell and "curl -sN" in shell and ":stream" in shell and "/v2/models/gptj/infer" in shell
    python = "\n".join(blocks("python"))
    assert "from openai import OpenAI" in python and "InferenceRESTClient" in python
    assert "InferenceGRPCClient" in python and "logprobs=" in python


def expected_failures() -> dict[str, str]:
    """sh blocks whose documented answer (the json block right after) is a failed envelope -> its message's start."""
    found = {}
    for path, heading in SECTIONS:
        for command, answer in re.findall(r"```sh\n(.*?)```\s*```json\n(.*?)```", section(path, heading), flags=re.S):
            if '"status": "failed"' in answer:
                found[command] = re.search(r'"message": "([^"(]*)', answer).group(1).strip()
    return found


def test_documented_failures_are_few_and_found():
    assert 1 <= len(expected_failures()) <= 2  # the docs show a mistake's envelope, not a page of them


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed on this machine")
@pytest.mark.parametrize("index", range(len(blocks("sh"))))
def test_curl_examples(server, index):
    command = blocks("sh")[index].replace("localhost:8080", f"127.0.0.1:{server.port}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if expected_failures().get(blocks("sh")[index]):  # the docs show this example's failed envelope
        assert (
            result.stdout.startswith('{"status":"failed"') and expected_failures()[blocks("sh")[index]] in result.stdout
        )
        return
    assert result.stdout.strip() and '"failed"' not in result.stdout and '"error"' not in result.stdout
    if ":stream" in command:
        assert result.stdout.startswith("data: {") and '"status": "success"' in result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples(server, index):
    code = blocks("python")[index].replace("http://localhost:8080", server.url)
    code = code.replace("localhost:8081", f"127.0.0.1:{server.grpc_port}")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
