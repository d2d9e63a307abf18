"""scripts/device-python.sh: how the GPU benchmark runs on a lent machine without network."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from .server import ROOT


def test_runs_python_with_the_repository_importable_when_kserve_is_there():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [str(ROOT / "scripts" / "device-python.sh"), "-c", "import predictor.engine.engine; print('ok')"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_says_what_to_do_without_kserve_and_without_wheels(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "device-python.sh", tmp_path / "scripts")
    shim = tmp_path / "bin" / "python3"  # a python3 that sees no site-packages: no KServe
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [str(tmp_path / "scripts" / "device-python.sh"), "-c", "print(1)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1
    assert "run 'make device-wheels' where pip" in out.stderr
