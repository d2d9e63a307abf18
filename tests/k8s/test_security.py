"""checkov on everything we ship to a cluster (the predictor pod spec included), hadolint, yamllint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from .kube import (
    CHART,
    ENVIRONMENTS,
    MANIFESTS,
    ROOT,
    by_kind,
    manifest_objects,
    objects,
    predictor_deployment,
    render,
    validate,
    values_for,
)

# Chart variants scanned besides the environment files: the runtime form and the ServiceMonitor.
VARIANTS = {f"env-{env}": values_for(env) for env in ENVIRONMENTS} | {
    "runtime-form": {"predictorForm": "runtime", "servingRuntime": {"create": True}},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "keda": {
        "autoscaling": {"standardClass": "keda"},
        "replicas": {"min": 1, "max": 4},
        "storageContainer": {"name": "gptj-hf", "create": True},
    },
}
# KServe's namespace for the manifests is `kubectl apply -n ...`: they name none themselves.
MANIFEST_NAMESPACE = "model-serving"
POD_SECURITY_CHECKS = {
    "CKV_K8S_8",
    "CKV_K8S_9",  # liveness and readiness probes
    "CKV_K8S_10",
    "CKV_K8S_11",
    "CKV_K8S_12",
    "CKV_K8S_13",  # CPU and memory requests and limits
    "CKV_K8S_20",
    "CKV_K8S_22",
    "CKV_K8S_23",
    "CKV_K8S_28",
    "CKV_K8S_37",
    "CKV_K8S_40",  # no escalation,
    "CKV_K8S_31",
    "CKV_K8S_38",  # read-only root, non-root, no NET_RAW, drop ALL, high UID, seccomp, no token
}


def checkov() -> str:
    path = os.environ.get("CHECKOV") or str(ROOT / ".venv" / "checkov" / "bin" / "checkov")
    if not Path(path).exists():
        pytest.fail("checkov is not installed: run `make test` (it installs checkov into .venv/checkov)")
    return path


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory) -> Path:
    """Everything to scan, one file per object: renders, manifests, predictor Deployments, the Dockerfile."""
    out = tmp_path_factory.mktemp("scan")
    for variant, values in VARIANTS.items():
        objs = objects(render(values))
        runtime = next(iter(by_kind(objs, "ServingRuntime")), None)
        objs.append(predictor_deployment(by_kind(objs, "InferenceService")[0], runtime))
        write(out, variant, objs)
    manifests = dict(manifest_objects())
    for name, obj in manifests.items():
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": MANIFEST_NAMESPACE}}
        if obj["kind"] == "InferenceService":
            runtime = manifests["clusterservingruntime.yaml"] if "model" in obj["spec"]["predictor"] else None
            write(out, f"manifests-{name[:-5]}", [obj, predictor_deployment(obj, runtime)])
        else:
            write(out, f"manifests-{name[:-5]}", [obj])
    shutil.copy(ROOT / "Dockerfile", out / "Dockerfile")
    return out


def write(out: Path, prefix: str, objs: list[dict]) -> None:
    for obj in objs:
        validate(obj)  # synthesized Deployments must be valid too
        (out / f"{prefix}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml").write_text(yaml.safe_dump(obj))


@pytest.fixture(scope="module")
def report(scan_dir) -> list[dict]:
    result = subprocess.run(
        [checkov(), "-d", str(scan_dir), "--config-file", str(ROOT / ".checkov.yaml"), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    parsed = json.loads(result.stdout)
    return parsed if isinstance(parsed, list) else [parsed]


def checks(report, outcome: str) -> list[dict]:
    return [c for framework in report for c in framework["results"][outcome]]


def test_checkov_finds_nothing(report):
    failed = [
        f"{c['check_id']} {c['check_name']} on {c['resource']} ({c['file_path']})"
        for c in checks(report, "failed_checks")
    ]
    assert failed == [], "\n".join(failed)


def test_checkov_really_scanned_the_pod_specs(report, scan_dir):
    deployments = sorted(p.name for p in scan_dir.glob("*-deployment-*.yaml"))
    assert len(deployments) == len(VARIANTS) + 2  # every chart variant, both manifest InferenceServices
    passed = checks(report, "passed_checks")
    for name in deployments:
        ids = {c["check_id"] for c in passed if c["file_path"].endswith(name)}
        assert ids >= POD_SECURITY_CHECKS, (name, sorted(POD_SECURITY_CHECKS - ids))
    docker = {c["check_id"] for c in passed if c["file_path"].endswith("Dockerfile")}
    assert "CKV_DOCKER_3" in docker  # a non-root USER


def test_every_inline_skip_has_a_reason(report):
    skipped = checks(report, "skipped_checks")
    assert skipped, "the test pod's skips should be reported"
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "").strip()) > 10, check["check_id"]


def test_every_configured_skip_has_a_reason():
    lines = (ROOT / ".checkov.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.fullmatch(r"\s*- (CKV\w+)", line)
        if match:
            assert lines[index - 1].strip().startswith(f"# {match.group(1)} ("), line


def test_hadolint_is_clean_and_every_ignore_has_a_reason():
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[index - 1].startswith("#") and len(lines[index - 1]) > 20, line


YAMLLINT = YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_yamllint_on_rendered_output(variant):
    for path, text in render(VARIANTS[variant]).items():
        if path.endswith(".yaml"):
            problems = [f"{path}:{p.line}: {p.message}" for p in linter.run(text, YAMLLINT)]
            assert problems == [], "\n".join(problems)


def test_yamllint_on_manifests_and_values_files():
    files = [*MANIFESTS.glob("*.yaml"), *CHART.glob("values*.yaml"), CHART / "Chart.yaml"]
    for path in files:
        problems = [f"{path.name}:{p.line}: {p.message}" for p in linter.run(path.read_text(), YAMLLINT)]
        assert problems == [], "\n".join(problems)
