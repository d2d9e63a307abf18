"""Which wheels to carry to a lent GPU machine, and which of them to install there.

The machine has no network; its python3 has CUDA torch and many common packages (the versions of some
are known, tests/fixtures/device-image.txt; of the rest only the names), but not KServe, and an older
transformers than the product pins. Starting from what the predictor needs (ROOTS), a requirement
is met by the image's package when its known version satisfies it; otherwise the wheel is carried,
and its own requirements are followed in turn. A package whose version there is unknown is carried
as well (there, ``install`` puts it in only when the installed one is outside the requirements), except
the large ones in CHECK_ONLY, which are only checked there: the carried set must fit the device
tool's 64 MiB beside the working tree.

Used here by scripts/device-wheels.sh (``python -m bench.carry prune``) and there, before KServe is
imported, by scripts/device-python.sh (``python3 -m bench.carry install``): the standard library and
``packaging`` only, both of which that image has.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# What the predictor asks for on the device, besides torch (the image's CUDA build, never carried).
ROOTS = ("kserve==0.21.0", "transformers==5.24.0", "fastapi>=0.165,<1", "pydantic>=2.7,<3", "accelerate>=1.0,<2")
# The product's own version is shipped even where the image's would satisfy the range (issue 19).
ALWAYS = frozenset({"transformers"})
# Present in the image, version unknown, and left out so that the rest fits the 64 MiB (about 60 MiB
# carried): the largest (pillow, uvloop, numpy) and those whose image version is surely recent
# enough (any 6.0.3+ pyyaml, setuptools 77+, pygments for rich); checked there instead.
CHECK_ONLY = frozenset({"pillow", "uvloop", "numpy", "pygments", "setuptools", "pyyaml"})
NEVER = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")  # the image's CUDA stack stays the image's
PYTHON = "3.12"  # the image's python3


@dataclass
class Plan:
    """What to carry and what can only be checked on the device."""

    carried: dict[str, str] = field(default_factory=dict)  # name -> version
    checks: dict[str, list[str]] = field(default_factory=dict)  # unknown-version name -> requirements on it
    problems: list[str] = field(default_factory=list)


def environment(python: str = PYTHON) -> dict[str, str]:
    from packaging.markers import default_environment

    return default_environment() | {
        "python_version": python,
        "python_full_version": f"{python}.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "implementation_name": "cpython",
        "extra": "",
    }


def applies(requirement: Requirement, env: Mapping[str, str]) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(dict(env))


def read_image(path: Path) -> dict[str, str | None]:
    """``name==version`` or a bare ``name`` (version unknown) a line; ``#`` starts a comment."""
    image: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            image[canonicalize_name(name)] = version.strip() or None
    return image


def plan(
    available: Mapping[str, tuple[str, list[str]]],
    image: Mapping[str, str | None],
    roots: Iterable[str] = ROOTS,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """Follow the requirements from ``roots``; ``available``: name -> (version, requirements) of the
    wheels that could be carried (the resolution's), ``image``: name -> version or None (unknown)."""
    env, result, seen = env or environment(), Plan(), set()
    todo = [(Requirement(r), "the predictor") for r in roots]
    while todo:  # markers are evaluated when a requirement is queued (below), with its extras
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        if NEVER.match(name) or _from_image(requirement, image, result, wanted_by):
            continue
        if name not in available:
            result.problems.append(f"{name}: {requirement} ({wanted_by}) is not in the image and not downloaded")
            continue
        version, requirements = available[name]
        if not requirement.specifier.contains(Version(version), prereleases=True):
            result.problems.append(f"{name}: {requirement} ({wanted_by}), but {version} was downloaded")
        result.carried[name] = version
        # its requirements, and those of the extras asked for (kserve wants uvicorn[standard])
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) not in seen:
                seen.add((name, extra))
                queued = [Requirement(r) for r in requirements]
                todo += [(r, f"{name} {version}") for r in queued if applies(r, {**env, "extra": extra})]
    return result


def _from_image(requirement: Requirement, image: Mapping[str, str | None], result: Plan, wanted_by: str) -> bool:
    """True where the image's package does (known version) or can only be checked there (CHECK_ONLY)."""
    name = canonicalize_name(requirement.name)
    if name not in image or name in ALWAYS:
        return False
    known = image[name]
    if known is None and name in CHECK_ONLY:
        result.checks.setdefault(name, []).append(f"{requirement} ({wanted_by})")
        return True
    return known is not None and requirement.specifier.contains(Version(known), prereleases=True)


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(canonical name, version, requirements) from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = archive.read(meta).decode()
    fields = [line.split(": ", 1) for line in text.split("\n\n", 1)[0].splitlines() if ": " in line]
    get = {key: value for key, value in reversed(fields)}
    return canonicalize_name(get["Name"]), get["Version"], [v for k, v in fields if k == "Requires-Dist"]


def wheels(folder: Path) -> dict[str, tuple[Path, str, list[str]]]:
    found = {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version, requirements = wheel_metadata(wheel)
        found[name] = (wheel, version, requirements)
    return found


def prune(folder: Path, target: Path, image: dict[str, str | None]) -> Plan:
    """Here: move the wheels of ``folder`` that the plan carries into ``target``."""
    found = wheels(folder)
    result = plan({name: (version, reqs) for name, (_, version, reqs) in found.items()}, image)
    for name in result.carried:
        shutil.move(str(found[name][0]), target / found[name][0].name)
    return result


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def to_install(found: Mapping[str, tuple[Path, str, list[str]]], roots: Iterable[str] = ROOTS) -> tuple[list, list]:
    """There: the carried wheels that must go in (missing, outside a requirement, or ALWAYS), and
    every requirement the image's own packages fail (problems, printed)."""
    env = environment(f"{sys.version_info.major}.{sys.version_info.minor}")
    lines = [(Requirement(r), None) for r in roots]
    lines += [(Requirement(r), name) for name, (_, _, reqs) in found.items() for r in reqs]
    extras: dict[str, set[str]] = {}  # the extras asked of each package (kserve: uvicorn[standard])
    for requirement, _ in lines:
        extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    demands: dict[str, list[Requirement]] = {}
    for requirement, owner in lines:
        asked = extras.get(owner, set()) if owner else set()
        if any(applies(requirement, {**env, "extra": extra}) for extra in ("", *asked)):
            demands.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    chosen, problems = [], []
    for name, requirements in sorted(demands.items()):
        have = installed(name)
        fits = have is not None and all(r.specifier.contains(Version(have), prereleases=True) for r in requirements)
        if name in found and (name in ALWAYS or not fits):
            chosen.append(found[name][0])
        elif not fits and not NEVER.match(name):
            problems.append(f"{name} {have or '(missing)'} is outside {', '.join(map(str, requirements))}")
    return chosen, problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.carry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    here = sub.add_parser("prune", help="here: keep the wheels to carry")
    here.add_argument("folder", type=Path)
    here.add_argument("target", type=Path)
    here.add_argument("--image", type=Path, default=Path("tests/fixtures/device-image.txt"))
    there = sub.add_parser("install", help="there: install what the image lacks into a folder")
    there.add_argument("folder", type=Path)
    there.add_argument("site", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prune":
        result = prune(args.folder, args.target, read_image(args.image))
        for name, checks in sorted(result.checks.items()):
            print(f"not carried, checked on the device: {name} {'; '.join(checks)}")
        for problem in result.problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1 if result.problems else 0
    return _install(args.folder, args.site)


def _install(folder: Path, site: Path) -> int:
    chosen, problems = to_install(wheels(folder))
    for problem in problems:
        print(f"WARNING: the image's {problem}, and no wheel for it was carried", file=sys.stderr)
    names, stamp = "\n".join(w.name for w in chosen), site / ".carried"
    if stamp.exists() and stamp.read_text() == names:  # the script's second run in one call
        print(f"the {len(chosen)} carried wheels chosen are already in {site}", flush=True)
        return 0
    print(f"installing {len(chosen)} carried wheels into {site}: {' '.join(w.name for w in chosen)}", flush=True)
    if chosen:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        pip += ["--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site)]
        subprocess.run([*pip, *map(str, chosen)], check=True)
    site.mkdir(parents=True, exist_ok=True)
    stamp.write_text(names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
