"""The import direction of predictor/ (docs/architecture.md): an AST walk over every module.

edge -> protocols -> engine -> generation -> loading, with telemetry, errors and settings below them all
and the core types (predictor/core.py) at the bottom: a module imports only its own subpackage and the
layers below it. core imports nothing of ours and none of the web or model libraries, so the engine and
generation never see a wire format.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Layer of each top-level part of the package, from the top down (a higher number imports lower ones).
LAYERS = {
    "__main__": 7,
    "edge": 6,
    "protocols": 5,
    "engine": 4,
    "generation": 3,
    "loading": 2,
    "telemetry": 1,
    "errors": 1,
    "settings": 1,
    "core": 0,
    "values": 0,
}
#: What the core types may not touch: the wire (pydantic, FastAPI, KServe) and the model (torch, transformers).
CORE_FORBIDDEN = ("pydantic", "fastapi", "starlette", "kserve", "torch", "transformers")


def _module(path: Path, package_root: Path) -> tuple[str, ...]:
    parts = path.relative_to(package_root.parent).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, module: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in the file, relative ones resolved, lazy ones included."""
    package = module if path.name == "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            name = ".".join(filter(None, (base, node.module)))
            # `from predictor import errors` imports the module predictor.errors
            found += (
                [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
                if name == "predictor"
                else [(node.lineno, name)]
            )
    return found


def violations(package_root: Path) -> list[str]:
    """Every import in the package at ``package_root`` that runs against the layers, as readable lines."""
    problems = []
    for path in sorted(package_root.rglob("*.py")):
        module = _module(path, package_root)
        if len(module) < 2:
            continue  # predictor/__init__.py hands nothing on
        part, layer = module[1], LAYERS.get(module[1])
        if layer is None:
            problems.append(f"{'.'.join(module)}: not in any layer; add it to LAYERS and the module map")
            continue
        for line, name in _imports(path, module):
            where = f"{path.relative_to(package_root.parent)}:{line}"
            target = name.split(".")
            if part == "core" and target[0] in CORE_FORBIDDEN:
                problems.append(f"{where}: core imports {name}; the core types stay free of the wire and the model")
            if target[0] != "predictor" or len(target) < 2:
                continue
            other = LAYERS.get(target[1])
            if target[1] == part:
                continue  # within one subpackage
            if other is None or other >= layer:
                problems.append(
                    f"{where}: {'.'.join(module)} ({part}) imports {name} ({target[1]}): "
                    f"imports run down only, {' -> '.join(_order())}"
                )
    return problems


def _order() -> list[str]:
    floors = sorted({layer for layer in LAYERS.values()}, reverse=True)
    names = [[name for name, at in LAYERS.items() if at == layer] for layer in floors]
    return [group[0] if len(group) == 1 else f"({', '.join(group)})" for group in names]


def test_predictor_imports_run_down_only():
    assert violations(ROOT / "predictor") == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "predictor" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "predictor"


CLEAN = {
    "__init__.py": "",
    "core.py": "from dataclasses import dataclass\n",
    "errors.py": "import http\n",
    "engine/__init__.py": "",
    "engine/worker.py": "from predictor.core import Sampling\nfrom predictor.generation import beams\n",
    "generation/__init__.py": "",
    "generation/beams.py": "import torch\nfrom . import text\nfrom predictor.loading.loader import Loaded\n",
    "generation/text.py": "",
    "loading/__init__.py": "",
    "loading/loader.py": "from predictor import settings\n",
    "settings.py": "",
    "protocols/__init__.py": "",
    "protocols/seed.py": "from pydantic import BaseModel\nfrom predictor import errors\n",
    "edge/__init__.py": "",
    "edge/model.py": "from predictor.protocols import seed\nfrom predictor.engine.worker import Worker\n",
}


def test_the_checker_passes_a_tree_that_keeps_the_layers(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


def test_the_checker_catches_an_engine_module_importing_a_protocol(tmp_path):
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "engine/worker.py": CLEAN["engine/worker.py"]
            + "def f():\n    from predictor.protocols.seed import PromptRequest\n",
        },
    )
    (problem,) = violations(root)
    assert problem.startswith(
        "predictor/engine/worker.py:4: predictor.engine.worker (engine) imports predictor.protocols.seed (protocols)"
    )


def test_the_checker_catches_relative_and_package_back_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "generation/beams.py": "from ..edge import model\n",
            "loading/loader.py": "from predictor import engine\n",
        },
    )
    assert [p.split(": ")[0] for p in violations(root)] == [
        "predictor/generation/beams.py:1",
        "predictor/loading/loader.py:1",
    ]


def test_the_checker_keeps_core_a_leaf(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "core.py": "from pydantic import BaseModel\nfrom predictor.errors import X\n"})
    problems = violations(root)
    assert len(problems) == 2 and "core imports pydantic" in problems[0] and "(errors)" in problems[1]


def test_the_checker_names_a_module_outside_every_layer(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "util.py": ""})
    assert violations(root) == ["predictor.util: not in any layer; add it to LAYERS and the module map"]
