"""The wheels carried to a lent GPU machine (bench/carry.py, scripts/device-wheels.sh) against its image.

The image's packages are tests/fixtures/device-image.txt (from KINDS.md, which CI cannot read); the
carried versions are locks/image-cuda.txt's, whose declared requirements are read from this .venv's
installed metadata (the same versions, checked first). Offline: nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import re
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bench import carry

ROOT = Path(__file__).resolve().parents[2]
IMAGE = carry.read_image(ROOT / "tests" / "fixtures" / "device-image.txt")


@pytest.fixture(scope="module")
def available() -> dict[str, tuple[str, list[str]]]:
    """What device-wheels.sh downloads: the CUDA lock's versions, with their declared requirements."""
    lock = (ROOT / "locks" / "image-cuda.txt").read_text()
    found = {}
    for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.M):
        if carry.NEVER.match(canonicalize_name(name)):
            continue
        installed = importlib.metadata.version(name)
        assert installed == version, f"{name}: .venv has {installed}, the lock {version}: run make install"
        found[canonicalize_name(name)] = (version, importlib.metadata.requires(name) or [])
    return found


def test_the_carried_set_meets_kserves_and_transformers_requirements_on_the_image(available):
    plan = carry.plan(available, IMAGE)
    assert plan.problems == []
    # What the issue names: the product's transformers, KServe, and what KServe 0.21 pins tighter than
    # an unknown image version may be (installed there only where the image's is outside).
    assert plan.carried["transformers"] == "5.24.0" and plan.carried["kserve"] == "0.21.0"
    assert {"protobuf", "psutil", "pandas", "grpcio", "starlette", "cryptography", "kubernetes"} <= set(plan.carried)
    # The image's tokenizers 0.23.2, safetensors 0.8.0 and huggingface-hub 1.33.0 meet transformers
    # 5.24's requirements (>=0.23.1,<0.24; >=0.8.0; >=1.31,<3): not carried; nor torch's CUDA stack.
    assert not {"tokenizers", "safetensors", "huggingface-hub", "numpy", "torch", "triton"} & set(plan.carried)
    # An independent check of the result: every requirement of every carried package and of the
    # predictor, against the image with the carried versions installed over it.
    env = carry.environment()
    effective = {**IMAGE, **plan.carried}
    extras: dict[str, set[str]] = {}
    lines = [(Requirement(r), "the predictor") for r in carry.ROOTS]
    lines += [(Requirement(r), name) for name in plan.carried for r in available[name][1]]
    for requirement, _ in lines:
        extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    unmet = []
    for requirement, source in lines:
        owner_extras = extras.get(canonicalize_name(source), set()) if source != "the predictor" else set()
        if not any(carry.applies(requirement, {**env, "extra": e}) for e in {"", *owner_extras}):
            continue
        name = canonicalize_name(requirement.name)
        if carry.NEVER.match(name):
            continue
        version = effective.get(name, "missing")
        if version is None:  # the image's, version unknown: only the check there can tell
            assert name in plan.checks, (
                f"{name} ({requirement}, {source}): unknown version, neither carried nor checked"
            )
        elif version == "missing" or not requirement.specifier.contains(Version(version), prereleases=True):
            unmet.append(f"{source} needs {requirement}, the device would have {version}")
    assert unmet == []
    assert set(plan.checks) <= carry.CHECK_ONLY


def test_transformers_stack_is_carried_where_the_image_holds_versions_too_old_for_it(available):
    older = {**IMAGE, "tokenizers": "0.22.1", "huggingface-hub": "0.36.0", "safetensors": "0.6.2"}
    plan = carry.plan(available, older)
    assert plan.problems == []
    assert plan.carried["tokenizers"] == "0.23.3" and plan.carried["huggingface-hub"] == "2.4.0"
    assert plan.carried["safetensors"] == "0.8.0"


def test_a_package_neither_in_the_image_nor_downloaded_is_a_problem(available):
    missing = {name: value for name, value in available.items() if name != "starlette"}
    plan = carry.plan(missing, IMAGE)
    assert any(problem.startswith("starlette:") for problem in plan.problems)


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"])
    meta += "".join(f"\nRequires-Dist: {r}" for r in requires) + "\n\nA description.\nName: not-this\n"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


def test_there_only_what_the_image_does_not_satisfy_is_installed(tmp_path, monkeypatch):
    """device-python.sh's choice: KServe's tight pins against the versions the machine reports."""
    pins = ["protobuf<7.0.0,>=6.33.5", "psutil<6.0.0,>=5.9.6", "pandas<3.0.0,>=2.2.0", "grpcio-tools>=1.73"]
    pins += ["uvicorn[standard]<1.0.0,>=0.30.6"]
    _wheel(tmp_path, "kserve", "0.21.0", pins)
    _wheel(tmp_path, "uvicorn", "0.55.0", ['httptools>=0.6.3; extra == "standard"', 'rich; extra == "other"'])
    _wheel(tmp_path, "httptools", "0.9.0", [])  # wanted through kserve's uvicorn[standard]
    for name, version in (("protobuf", "6.33.6"), ("psutil", "5.9.8"), ("pandas", "2.3.3"), ("transformers", "5.24.0")):
        _wheel(tmp_path, name, version, [])
    _wheel(tmp_path, "grpcio-tools", "1.81.1", ["grpcio>=1.81.1"])  # grpcio not carried: a warning
    found = carry.wheels(tmp_path)
    assert found["kserve"][1:] == ("0.21.0", pins)
    image = {"protobuf": "6.33.5", "psutil": "7.1.0", "pandas": "3.0.1", "transformers": "5.24.0", "grpcio": "1.80.0"}
    monkeypatch.setattr(carry, "installed", image.get)
    chosen, problems = carry.to_install(found, roots=["kserve==0.21.0", "transformers==5.24.0"])
    names = sorted(carry.wheel_metadata(path)[0] for path in chosen)
    # kserve, grpcio-tools, uvicorn and its standard extra's httptools: missing; psutil 7 and pandas 3:
    # outside; transformers: always the product's; the image's protobuf 6.33.5 fits
    assert names == ["grpcio-tools", "httptools", "kserve", "pandas", "psutil", "transformers", "uvicorn"]
    assert problems == ["grpcio 1.80.0 is outside grpcio>=1.81.1"]
