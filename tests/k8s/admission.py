"""The admission chain a real cluster runs on our objects, and what must hold after it.

KServe's InferenceService webhook, then (Knative mode) Knative's webhook on the Knative Service KServe
makes, then KServe's pod mutator on every predictor pod. The rules live in kserve_rules.py and
knative_rules.py, each with its upstream file and lines.
"""

from __future__ import annotations

import re
from typing import Any

from . import knative_rules as knative
from . import kserve_rules as kserve
from .kube import ROOT

DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# Both metricsAggregator settings a cluster may have (KServe's default is "false" for both).
CLUSTER_METRICS_CONFIGS = (
    {"enableMetricAggregation": "false", "enablePrometheusScraping": "false"},
    {"enableMetricAggregation": "true", "enablePrometheusScraping": "true"},
)


def documented_knative_flags() -> frozenset[str]:
    """The config-features flags docs/deploy.md tells users to enable for Knative mode."""
    return frozenset(re.findall(r"`(kubernetes\.(?:podspec|containerspec)-[a-z-]+)`", DEPLOY_DOC.read_text()))


def admission_errors(
    isvc: dict[str, Any], runtime: dict[str, Any] | None = None, flags: frozenset[str] | None = None
) -> list[str]:
    """Everything the webhooks refuse about this InferenceService (empty: admitted)."""
    flags = documented_knative_flags() if flags is None else flags
    errors = kserve.isvc_errors(isvc)
    if kserve.mode(isvc) == "Knative" and not errors:
        _, annotations = kserve.pod_metadata(isvc)
        errors += knative.pod_spec_errors(kserve.pod_spec(isvc, runtime), flags)
        errors += knative.revision_errors(annotations, isvc["spec"]["predictor"].get("timeout"))
    return errors


def runtime_errors(runtime: dict[str, Any], flags: frozenset[str] | None = None) -> list[str]:
    """A (Cluster)ServingRuntime's containers and volumes under Knative's rules: InferenceServices in
    Knative mode may use it, and KServe copies its container into their pod spec."""
    flags = documented_knative_flags() if flags is None else flags
    pod = {"containers": runtime["spec"]["containers"], "volumes": runtime["spec"].get("volumes", [])}
    return knative.pod_spec_errors(pod, flags)


def intent_errors(isvc: dict[str, Any], runtime: dict[str, Any] | None = None) -> list[str]:
    """What the controllers and the pod mutator would change against what we meant."""
    errors = []
    pod = kserve.pod_spec(isvc, runtime)
    _, annotations = kserve.pod_metadata(isvc)
    if annotations.get("prometheus.io/scrape") == "true":
        for config in CLUSTER_METRICS_CONFIGS:
            mutated = kserve.mutated_annotations(annotations, config)
            where = (mutated["prometheus.io/port"], mutated.get("prometheus.io/path"))
            if where != ("8080", "/metrics"):
                errors.append(
                    f"Prometheus would scrape port {where[0]} (cluster metricsAggregator {config}), "
                    "not the predictor's /metrics on 8080"
                )
    uid = kserve.storage_initializer_user(isvc, pod)
    if uid is not None:
        errors.append(
            f"KServe's storage-initializer would run as the pod-level runAsUser {uid}, "
            "without its own user's HOME: hf:// downloads fail writing their cache"
        )
    if kserve.mode(isvc) == "Knative":
        (container,) = pod["containers"]
        startup = container.get("startupProbe", {})
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        deadline = knative.progress_deadline_seconds(annotations)
        if deadline is None or deadline < budget:
            errors.append(
                f"Knative would fail the revision after its progress deadline ({deadline} s), "
                f"before the startup probe's budget ({budget} s) is spent"
            )
    return errors
