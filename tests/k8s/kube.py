"""Offline Kubernetes checks: render the chart, validate objects strictly, as the API server would.

Custom kinds are validated against the official CRDs in ../shared/crds (or $GPTJ_CRDS_DIR). CRD
schemas do not set additionalProperties: false, so a misspelled field would pass; `strict` adds it to
every node that lists properties (and does not preserve unknown fields), which is what the API
server's strict field validation does. Core kinds go through kubernetes-validate --strict, where an
unknown kind or a removed API is a failure, not a warning.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gptj"
MANIFESTS = ROOT / "manifests"
CRDS = Path(os.environ.get("GPTJ_CRDS_DIR", ROOT.parent / "shared" / "crds"))
KUBE_VERSION = "1.30"
ENVIRONMENTS = ("default", "dev", "staging", "prod")

CUSTOM_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("serving.kserve.io/v1alpha1", "LocalModelCache"): "serving.kserve.io_localmodelcaches.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    # kserve/kserve v0.20.0 config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml
    ("serving.kserve.io/v1alpha1", "ClusterStorageContainer"): "serving.kserve.io_clusterstoragecontainers.yaml",
}


def values_for(env: str) -> dict[str, Any]:
    return {} if env == "default" else yaml.safe_load((CHART / f"values-{env}.yaml").read_text())


def render(values: dict[str, Any] | None = None, *, name: str = "gptj", namespace: str = "ml") -> dict[str, str]:
    """Template path -> rendered text (empty templates dropped), with Helm v4's engine."""
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name=name, namespace=namespace)
    finally:
        chart.close()
    return {path: text for path, text in rendered.items() if text.strip()}


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in the rendered templates (NOTES.txt is not YAML)."""
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def manifest_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def strict(schema: Any) -> Any:
    """A copy of a CRD schema where every object node with properties rejects unknown fields."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            # Go's RE2 accepts a flag group after "^" (PrometheusRule's "^(?i)(abort|warn)?$"); Python's re
            # wants global flags first. Same language, moved.
            if isinstance(node.get("pattern"), str) and node["pattern"].startswith("^(?i)"):
                node["pattern"] = "(?i)^" + node["pattern"][5:]
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / CUSTOM_KINDS[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry.get("served"), f"{kind} {version} is not served by the CRD"
    return strict(entry["schema"]["openAPIV3Schema"])


def validate(obj: dict[str, Any]) -> None:
    """Raise if the object would be refused by an API server with the official schemas."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CUSTOM_KINDS:
        jsonschema.validate(obj, crd_schema(*key), cls=jsonschema.Draft7Validator)
        # A CRD's metadata is just "type: object": check it as the API server does, as ObjectMeta.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, KUBE_VERSION, strict=True
        )
    else:
        # Raises SchemaNotFoundError for unknown kinds and removed APIs: a failure here, not a warning.
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def predictor_containers(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    return isvc["spec"]["predictor"].get("containers", [])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def predictor_deployment(isvc: dict[str, Any], runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Deployment KServe (Standard mode) would make of an InferenceService's predictor.

    checkov skips InferenceService, so its security checks run on this instead; the pod spec is the
    one KServe builds (kserve_rules.pod_spec: in the model form, the runtime's container with the
    model's container fields merged over it).
    """
    from .kserve_rules import pod_spec

    predictor = isvc["spec"]["predictor"]
    pod = pod_spec(isvc, runtime)
    name = isvc["metadata"]["name"] + "-predictor"
    labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": isvc["metadata"].get("namespace", "default"), "labels": labels},
        "spec": {
            "replicas": predictor.get("minReplicas", 1),
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
