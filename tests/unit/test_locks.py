"""The locks (`make lock`) agree with pyproject.toml, with each other, with the image and with the .venv.

All offline: the lock files are read as text (the format uv writes: `name==version`, `--hash=sha256:...`
lines, `# via` annotations), pyproject.toml with tomllib, the installed versions with importlib.metadata.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "locks"
PROJECT = "gptj-predictor (pyproject.toml)"  # how uv annotates a package pyproject.toml asks for
FIX = "pyproject.toml and the locks disagree: run `make lock` (README, Development)"

# Each lock: the Python it is resolved for (markers are evaluated for it) and pyproject's extras it holds.
TARGETS = {"dev.txt": ("3.11", ("test",)), "image-cpu.txt": ("3.11", ()), "image-cuda.txt": ("3.12", ())}


@dataclass
class Pin:
    version: str
    hashes: set[str] = field(default_factory=set)
    via: set[str] = field(default_factory=set)


def read_lock(text: str) -> dict[str, Pin]:
    """uv's requirements format -> {canonical name: Pin}."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        if match := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = pins[canonicalize_name(match[1])] = Pin(match[2])
        elif current is not None and (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.hashes.add(match[1])
        elif current is not None and (match := re.match(r"\s+#(?: via |   )(.+)", line)):  # "# via x" or "#   x"
            current.via.add(match[1].strip())
        elif line.strip() and not line.lstrip().startswith("#") and current is None:
            raise AssertionError(f"not a pinned requirement: {line!r}")
    return pins


def requirements(pyproject: dict, extras: tuple[str, ...], python: str) -> list[Requirement]:
    """pyproject's dependencies (and the given extras) whose markers hold on Linux x86_64 with `python`."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    env = default_environment() | {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
    }
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env | {"extra": ""})]


def disagreements(reqs: list[Requirement], pins: dict[str, Pin]) -> list[str]:
    """Every way the lock fails pyproject: a package missing, a version out of range, a stale top level."""
    problems = []
    wanted = {canonicalize_name(r.name) for r in reqs}
    for req in reqs:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: asked for ({req}) but not in the lock")
        elif not req.specifier.contains(Version(pin.version), prereleases=True):
            problems.append(f"{req.name}: the lock has {pin.version}, pyproject.toml asks for {req.specifier}")
    for name, pin in sorted(pins.items()):
        if PROJECT in pin.via and name not in wanted:
            problems.append(f"{name}: locked as a dependency of the project, which pyproject.toml no longer lists")
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock(name: str) -> dict[str, Pin]:
    return read_lock((LOCKS / name).read_text())


def constraint(name: str) -> Requirement:
    lines = [line for line in (LOCKS / name).read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, f"{name}: one requirement expected"
    return Requirement(lines[0])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_lock_pins_what_pyproject_asks_for(name, pyproject):
    python, extras = TARGETS[name]
    problems = disagreements(requirements(pyproject, extras, python), lock(name))
    assert not problems, f"{FIX}:\n" + "\n".join(problems)


def test_the_check_fails_when_pyproject_and_lock_disagree():
    pins = read_lock(
        """\
transformers==5.24.0 \\
    --hash=sha256:{h}
    # via gptj-predictor (pyproject.toml)
pyyaml==6.0.3 \\
    --hash=sha256:{h}
    # via
    #   gptj-predictor (pyproject.toml)
    #   transformers
""".format(h="0" * 64)
    )
    reqs = [Requirement("transformers>=5.30,<6"), Requirement("fastapi>=0.165")]
    assert disagreements(reqs, pins) == [
        "transformers: the lock has 5.24.0, pyproject.toml asks for <6,>=5.30",
        "fastapi: asked for (fastapi>=0.165) but not in the lock",
        "pyyaml: locked as a dependency of the project, which pyproject.toml no longer lists",
    ]
    assert disagreements([Requirement("transformers>=5,<6"), Requirement("pyyaml>=6")], pins) == []


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_package_is_pinned_with_its_hashes(name):
    pins = lock(name)
    assert len(pins) > 20
    assert [n for n, pin in pins.items() if not pin.hashes] == []


def test_the_cpu_image_installs_exactly_what_the_tests_run_with():
    dev, image = lock("dev.txt"), lock("image-cpu.txt")
    differ = {
        n: (pin.version, dev[n].version if n in dev else None)
        for n, pin in image.items()
        if n not in dev or (pin.version, pin.hashes) != (dev[n].version, dev[n].hashes)
    }
    assert differ == {}, FIX


def test_the_gpu_image_differs_from_the_tests_only_in_torch_and_its_cuda_libraries():
    dev, cuda = lock("dev.txt"), lock("image-cuda.txt")
    differ = {
        n: (pin.version, dev[n].version)
        for n, pin in cuda.items()
        if n in dev and n != "torch" and pin.version != dev[n].version
    }
    assert differ == {}, FIX
    # The extra packages are the CUDA build's own: its nvidia-* libraries, triton and CUDA's Python glue.
    extra = sorted(n for n in cuda if n not in dev)
    assert extra and all(n.startswith(("nvidia-", "cuda-", "triton")) for n in extra), extra
    assert {"nvidia-cublas", "nvidia-cudnn-cu13", "nvidia-cuda-runtime"} <= set(extra)


def test_each_image_has_the_torch_build_its_constraint_names():
    cpu, cuda = constraint("torch-cpu.in"), constraint("torch-cuda.in")
    assert lock("dev.txt")["torch"].version == lock("image-cpu.txt")["torch"].version
    assert cpu.specifier.contains(lock("image-cpu.txt")["torch"].version)
    assert cuda.specifier.contains(lock("image-cuda.txt")["torch"].version)
    assert (
        Version(lock("image-cpu.txt")["torch"].version).public
        == Version(lock("image-cuda.txt")["torch"].version).public
    )


def test_the_gpu_base_image_is_the_cuda_release_the_torch_wheels_were_built_for():
    # `-base`, not `-runtime`: the nvidia-* wheels already hold CUDA's libraries (Dockerfile, docs/image.md).
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu(\d+\.\d+)$", dockerfile, re.M)
    assert base, "the GPU image's default base is not a pinned nvidia/cuda -base image"
    runtime = Version(lock("image-cuda.txt")["nvidia-cuda-runtime"].version)
    assert (int(base[1]), int(base[2])) == (runtime.major, runtime.minor)
    assert base[3] == "24.04"  # whose python3 is 3.12, the Python image-cuda.txt is locked for


def test_every_pip_install_in_the_dockerfile_is_hash_checked_or_the_project_alone():
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"pip install[^&;\n]*", dockerfile)
    assert len(installs) == 2, installs
    locked = [cmd for cmd in installs if "-r " in cmd]
    assert "COPY locks/image-${TORCH_VARIANT}.txt /tmp/lock.txt" in dockerfile
    assert len(locked) == 1 and locked[0].rstrip().endswith("-r /tmp/lock.txt")
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(locked[0].split())
    project = [cmd for cmd in installs if cmd not in locked][0]
    assert "--no-deps" in project.split() and project.rstrip().endswith(" .")


def test_the_venv_running_these_tests_holds_the_locked_versions():
    """What CI tests is what the lock says (make install installs locks/dev.txt, hash-checked)."""
    differ = {}
    for name, pin in lock("dev.txt").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(pin.version):
            differ[name] = (pin.version, installed)
    assert differ == {}, "this venv is not the locked one: `make install` (or `make clean install`)"
