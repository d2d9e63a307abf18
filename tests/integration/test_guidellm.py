"""GuideLLM's plain command against the real server (bench/guidellm.py), where GuideLLM is installed.

Not in CI: GuideLLM lives in its own venv (`make guidellm-venv GUIDELLM_VENV=...`, ~80 unpinned packages,
minutes to install); point GUIDELLM at its executable to run this.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import guidellm

GUIDELLM = os.environ.get("GUIDELLM", "")


@pytest.mark.skipif(
    not (GUIDELLM and Path(GUIDELLM).is_file()),
    reason="GuideLLM not installed: make guidellm-venv GUIDELLM_VENV=DIR, then GUIDELLM=DIR/bin/guidellm",
)
def test_guidellm_measures_real_numbers_with_no_workaround(tiny_dir, tmp_path):
    result = guidellm.run(GUIDELLM, tiny_dir, tmp_path, requests=4, prompt=16, output=8, timeout=600)
    assert result.real(requests=4, output_tokens=8), (result, (tmp_path / "guidellm.log").read_text()[-3000:])
    assert result.ttft_ms > 0 and result.itl_ms > 0
