"""Every rendered environment and every manifest through the admission chain of a real cluster
(admission.py), and each modelled rule refusing a deliberately broken object."""

from __future__ import annotations

import copy
import shutil
from typing import Any, Callable

import helm_python
import pytest
import yaml

from . import kserve_rules as kserve
from .admission import admission_errors, documented_knative_flags, intent_errors, runtime_errors
from .kube import CHART, ENVIRONMENTS, by_kind, manifest_objects, objects, render, values_for

KEDA = {"autoscaling": {"standardClass": "keda"}, "replicas": {"min": 1, "max": 4}}
VARIANTS: dict[str, dict[str, Any]] = {f"env-{env}": values_for(env) for env in ENVIRONMENTS} | {
    "runtime-form": {"predictorForm": "runtime", "servingRuntime": {"create": True}},
    "runtime-form-knative": {**values_for("prod"), "predictorForm": "runtime", "servingRuntime": {"create": True}},
    "keda": KEDA,
    "hpa": {"autoscaling": {"standardClass": "hpa", "metric": "cpu", "target": 80}, "replicas": {"min": 1, "max": 2}},
    "storage-container": {"storageContainer": {"name": "gptj-hf", "create": True}},
    "priority-class-knative": {**values_for("staging"), "priorityClassName": "gpu-inference"},
}
MANIFESTS = dict(manifest_objects())


def rendered(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    objs = objects(render(values))
    (isvc,) = by_kind(objs, "InferenceService")
    runtime = next(iter(by_kind(objs, "ServingRuntime")), None)
    return isvc, runtime


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_chart_variant_is_admitted_and_means_what_it_says(variant):
    isvc, runtime = rendered(VARIANTS[variant])
    assert admission_errors(isvc, runtime) == []
    assert intent_errors(isvc, runtime) == []
    if runtime is not None:
        assert runtime_errors(runtime) == []


@pytest.mark.parametrize("name", ["inferenceservice.yaml", "inferenceservice-runtime.yaml"])
def test_every_manifest_is_admitted_and_means_what_it_says(name):
    runtime = MANIFESTS["clusterservingruntime.yaml"]
    assert admission_errors(MANIFESTS[name], runtime) == []
    assert intent_errors(MANIFESTS[name], runtime) == []
    # The manifests say Standard; a cluster that ignored that would run them as Knative: they pass there too.
    as_knative = copy.deepcopy(MANIFESTS[name])
    as_knative["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    del as_knative["spec"]["predictor"]["deploymentStrategy"]
    for field in ("terminationGracePeriodSeconds",):
        as_knative["spec"]["predictor"].pop(field)
    (container,) = as_knative["spec"]["predictor"].get("containers") or [as_knative["spec"]["predictor"]["model"]]
    container.pop("lifecycle")
    assert admission_errors(as_knative, runtime) == []


def test_the_local_model_cache_applies_to_both_forms():
    cache = MANIFESTS["localmodelcache.yaml"]
    for isvc in (
        MANIFESTS["inferenceservice.yaml"],
        MANIFESTS["inferenceservice-runtime.yaml"],
        rendered({})[0],
        rendered({"predictorForm": "runtime"})[0],
    ):
        assert kserve.local_model_cache_applies(cache, isvc), isvc["metadata"]["name"]
    other = copy.deepcopy(cache)
    other["spec"]["sourceModelUri"] = "hf://EleutherAI/gpt-j-6b"  # the fp32 revision is another model
    assert not kserve.local_model_cache_applies(other, MANIFESTS["inferenceservice.yaml"])
    assert not kserve.local_model_cache_applies(cache, rendered(values_for("dev"))[0])  # the tiny model


def test_the_cluster_serving_runtime_suits_knative_mode_too():
    assert runtime_errors(MANIFESTS["clusterservingruntime.yaml"]) == []


def test_staging_and_prod_have_no_grace_period_or_lifecycle():
    for env in ("staging", "prod"):
        isvc, _ = rendered(values_for(env))
        text = yaml.safe_dump(isvc)
        assert "terminationGracePeriodSeconds" not in text and "lifecycle" not in text and "preStop" not in text


def test_the_documented_knative_flags_are_the_ones_needed():
    flags = documented_knative_flags()
    assert {
        "kubernetes.podspec-tolerations",
        "kubernetes.podspec-securitycontext",
        "kubernetes.podspec-affinity",
        "kubernetes.podspec-volumes-emptydir",
        "kubernetes.podspec-priorityclassname",
    } <= flags
    prod, _ = rendered(values_for("prod"))
    for flag, field in (
        ("kubernetes.podspec-tolerations", "tolerations"),
        ("kubernetes.podspec-affinity", "affinity"),
        ("kubernetes.podspec-securitycontext", "securityContext"),
    ):
        errors = admission_errors(prod, flags=flags - {flag})
        assert f"must not set the field(s): spec.template.spec.{field}" in errors, flag


# --- each rule refuses a broken object ------------------------------------------------------------


def _predictor(isvc):
    return isvc["spec"]["predictor"]


def _container(isvc):
    return _predictor(isvc)["containers"][0]


def _annotate(key, value):
    return lambda isvc: isvc["metadata"]["annotations"].__setitem__(key, value)


KNATIVE_BAD: list[tuple[str, Callable[[dict], Any], str]] = [
    (
        "pod grace period",
        lambda i: _predictor(i).__setitem__("terminationGracePeriodSeconds", 60),
        "must not set the field(s): spec.template.spec.terminationGracePeriodSeconds",
    ),
    (
        "container lifecycle",
        lambda i: _container(i).__setitem__("lifecycle", {"preStop": {"exec": {"command": ["sleep", "5"]}}}),
        "must not set the field(s): spec.template.spec.containers[0].lifecycle",
    ),
    (
        "flag not documented",
        lambda i: _predictor(i).__setitem__("hostNetwork", True),
        "must not set the field(s): spec.template.spec.hostNetwork",
    ),
    (
        "automount true",
        lambda i: _predictor(i).__setitem__("automountServiceAccountToken", True),
        "spec.template.spec.automountServiceAccountToken",
    ),
    (
        "pod sysctls",
        lambda i: _predictor(i)["securityContext"].__setitem__("sysctls", []),
        "spec.template.spec.securityContext.sysctls",
    ),
    (
        "hostPath volume",
        lambda i: _predictor(i)["volumes"].append({"name": "h", "hostPath": {"path": "/x"}}),
        "must not set the field(s): spec.template.spec.volumes[",
    ),  # its index: after the values' volumes
    (
        "reserved port",
        lambda i: _container(i)["ports"][0].__setitem__("containerPort", 8012),
        "8012 is a reserved port",
    ),
    ("port name", lambda i: _container(i)["ports"][0].__setitem__("name", "http"), "Port name http is not allowed"),
    (
        "two ports",
        lambda i: _container(i)["ports"].append({"containerPort": 8081}),
        "more than one container port is set",
    ),
    (
        "reserved env",
        lambda i: _container(i)["env"].append({"name": "PORT", "value": "1"}),
        '"PORT" is a reserved environment variable',
    ),
    (
        "reserved mount",
        lambda i: _container(i)["volumeMounts"][0].__setitem__("mountPath", "/dev"),
        'mountPath "/dev" is a reserved path',
    ),
    (
        "privileged",
        lambda i: _container(i)["securityContext"].__setitem__("privileged", True),
        "containers[0].securityContext.privileged",
    ),
    (
        "probe port",
        lambda i: _container(i)["readinessProbe"]["httpGet"].__setitem__("port", "metrics"),
        "Probe port must match container port",
    ),
    ("probe field", lambda i: _container(i)["livenessProbe"].__setitem__("httpGett", {}), "livenessProbe.httpGett"),
    ("timeout", lambda i: _predictor(i).__setitem__("timeout", 900), "expected 0 <= 900 <= 600"),
    (
        "progress deadline",
        _annotate("serving.knative.dev/progress-deadline", "20 minutes"),
        "invalid value: 20 minutes",
    ),
    ("KPA metric", lambda i: _predictor(i).__setitem__("scaleMetric", "cpu"), "[cpu] is not a supported metric"),
    (
        "strategy",
        lambda i: _predictor(i).__setitem__("deploymentStrategy", {"type": "Recreate"}),
        "customizing deploymentStrategy is only supported for raw deployment mode",
    ),
]

STANDARD_BAD: list[tuple[str, Callable[[dict], Any], str]] = [
    ("name", lambda i: i["metadata"].__setitem__("name", "GPT-J"), "is invalid: name must match"),
    ("mode", _annotate("serving.kserve.io/deploymentMode", "Serverful"), "unknown deploymentMode Serverful"),
    (
        "autoscaler class",
        _annotate("serving.kserve.io/autoscalerClass", "kpa"),
        "[kpa] is not a supported autoscaler class type",
    ),
    (
        "replicas",
        lambda i: _predictor(i).update(minReplicas=3, maxReplicas=2),
        "MinReplicas cannot be greater than MaxReplicas",
    ),
    (
        "storage uri",
        lambda i: _container(i)["env"].__setitem__(0, {"name": "STORAGE_URI", "value": "ftp://h/m"}),
        "StorageUri [ftp://h/m] is not supported",
    ),
    ("canary in Standard", lambda i: _predictor(i).__setitem__("canaryTrafficPercent", 10), "Knative mode only"),
    (
        "two implementations",
        lambda i: _predictor(i).__setitem__("model", {"modelFormat": {"name": "gptj"}}),
        "exactly one of [containers, model]",
    ),
    (
        "HPA metric",
        lambda i: (
            _annotate("serving.kserve.io/autoscalerClass", "hpa")(i),
            _predictor(i).__setitem__("scaleMetric", "concurrency"),
        ),
        "[concurrency] is not a supported metric",
    ),
]

KEDA_BAD: list[tuple[str, Callable[[dict], Any], str]] = [
    (
        "scaleMetric with keda",
        lambda i: _predictor(i).__setitem__("scaleMetric", "concurrency"),
        "ScaleMetric is not supported for KEDA",
    ),
    (
        "empty query",
        lambda i: _predictor(i)["autoScaling"]["metrics"][0]["external"]["metric"].__setitem__("query", ""),
        "the query should not be empty",
    ),
    (
        "no threshold",
        lambda i: _predictor(i)["autoScaling"]["metrics"][0]["external"]["target"].pop("value"),
        "the target threshold value should not be empty",
    ),
]


@pytest.mark.parametrize(
    "values, cases",
    [(values_for("prod"), KNATIVE_BAD), ({}, STANDARD_BAD), (KEDA, KEDA_BAD)],
    ids=["knative", "kserve", "keda"],
)
def test_each_admission_rule_refuses_a_broken_object(values, cases):
    good, runtime = rendered(values)
    assert admission_errors(good, runtime) == []
    for name, breaks, message in cases:
        broken = copy.deepcopy(good)
        breaks(broken)
        errors = admission_errors(broken, runtime)
        assert any(message in error for error in errors), (name, errors)


def test_the_deployment_mode_cannot_change_on_upgrade():
    standard, _ = rendered({})
    knative, _ = rendered(values_for("staging"))
    assert kserve.update_errors(standard, standard) == []
    assert kserve.update_errors(standard, knative) == [
        "update rejected: deploymentMode cannot be changed from 'Standard' to 'Knative'"
    ]


def test_a_runtime_with_a_lifecycle_is_refused_for_knative():
    runtime = copy.deepcopy(MANIFESTS["clusterservingruntime.yaml"])
    runtime["spec"]["containers"][0]["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert "must not set the field(s): spec.template.spec.containers[0].lifecycle" in runtime_errors(runtime)


# --- what the controllers and the pod mutator would change -----------------------------------------


def test_the_effective_scrape_target_is_our_metrics_in_both_modes():
    knative_annotated = {**values_for("prod"), "metrics": {"podMonitor": {"enabled": False}}}
    for values in ({}, knative_annotated):
        isvc, _ = rendered(values)
        _, annotations = kserve.pod_metadata(isvc)
        for config in ({}, {"enablePrometheusScraping": "true", "enableMetricAggregation": "true"}):
            mutated = kserve.mutated_annotations(annotations, config)
            assert (mutated["prometheus.io/port"], mutated["prometheus.io/path"]) == ("8080", "/metrics")
    # With the PodMonitor (prod) no annotation job, and KServe's mutator adds none either.
    _, annotations = kserve.pod_metadata(rendered(values_for("prod"))[0])
    for config in ({}, {"enablePrometheusScraping": "true", "enableMetricAggregation": "true"}):
        assert "prometheus.io/port" not in kserve.mutated_annotations(annotations, config)


@pytest.mark.parametrize("aggregate, port", [("false", "9091"), ("true", "9088")])
def test_kserve_scraping_would_point_prometheus_at_the_queue_proxy(aggregate, port):
    isvc, _ = rendered({})
    _annotate(kserve.SCRAPE, "true")(isvc)
    _annotate(kserve.AGGREGATE, aggregate)(isvc)
    assert any(f"scrape port {port}" in error for error in intent_errors(isvc))


def test_a_pod_level_uid_would_reach_the_storage_initializer():
    isvc, _ = rendered({})
    _predictor(isvc)["securityContext"]["runAsUser"] = 10001
    assert any("storage-initializer would run as the pod-level runAsUser 10001" in e for e in intent_errors(isvc))
    dev, _ = rendered(values_for("dev"))  # no storageUri: no storage initializer to worry about
    _predictor(dev)["securityContext"]["runAsUser"] = 10001
    assert intent_errors(dev) == []


def test_knative_would_give_up_before_the_model_loads_without_a_progress_deadline():
    prod, _ = rendered(values_for("prod"))
    assert prod["metadata"]["annotations"]["serving.knative.dev/progress-deadline"] == "2100s"  # 1200 + 900
    del prod["metadata"]["annotations"]["serving.knative.dev/progress-deadline"]
    assert any("progress deadline (600 s)" in e and "(1200 s)" in e for e in intent_errors(prod))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_a_new_chart_version_changes_nothing_on_the_pods(env, tmp_path):
    """KServe copies the InferenceService's labels and annotations onto the pod template: a chart-only
    upgrade must not roll the GPU pods (nor, in Knative mode, make a new revision and a canary)."""
    bumped = tmp_path / "gptj"
    shutil.copytree(CHART, bumped)
    chart = yaml.safe_load((bumped / "Chart.yaml").read_text())
    chart["version"] = "9.9.9"
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(chart))
    loaded = helm_python.Chart.load(str(bumped))
    try:
        texts = loaded.render(values_for(env), name="gptj", namespace="ml")
    finally:
        loaded.close()
    (new,) = by_kind(objects({p: t for p, t in texts.items() if t.strip()}), "InferenceService")
    old, _ = rendered(values_for(env))
    assert kserve.pod_metadata(new) == kserve.pod_metadata(old)
    assert new["spec"] == old["spec"]
