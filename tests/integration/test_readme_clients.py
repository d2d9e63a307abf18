"""The README's client examples, run as written against a real server (only the port changes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def blocks(language: str) -> list[str]:
    """The README's ``language`` code blocks in its "Clients" section."""
    text = README.read_text()
    section = text[text.index("\n## Clients\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_the_section_has_an_example_per_client():
    shell = "\n".join(blocks("sh"))
    assert ":predict" in shell and "curl -sN" in shell and ":stream" in shell and "/v2/models/gptj/infer" in shell
    python = "\n".join(blocks("python"))
    assert "from openai import OpenAI" in python and "InferenceRESTClient" in python


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed on this machine")
@pytest.mark.parametrize("index", range(len(blocks("sh"))))
def test_curl_examples(server, index):
    command = blocks("sh")[index].replace("localhost:8080", f"127.0.0.1:{server.port}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and '"failed"' not in result.stdout and '"error"' not in result.stdout
    if ":stream" in command:
        assert result.stdout.startswith("data: {") and '"status": "success"' in result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples(server, index):
    code = blocks("python")[index].replace("http://localhost:8080", server.url)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
