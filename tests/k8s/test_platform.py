"""Where GPU pods really run (issue 21): storage KServe's webhook accepts, a pod that refuses to run
without its GPU, drains, Prometheus, Istio and autoscaling against a slow start. Every chart variant and
manifest passes storage_rules and platform_rules; each rule refuses the object as it was before."""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import pytest

from . import storage_rules as storage
from .admission import admission_errors, documented_knative_flags
from .kserve_rules import pod_spec
from .kube import by_kind, manifest_objects, objects, render, validate, values_for
from .platform_rules import (
    COLD_START_SECONDS,
    gpu_errors,
    release_errors,
    runtime_setting_errors,
    settings_of,
)
from .test_admission import VARIANTS

MANIFESTS = dict(manifest_objects())
CHART_CSC = {"storageContainer": {"name": "gptj-hf", "create": True}}
PLATFORM_VARIANTS: dict[str, dict[str, Any]] = {
    **VARIANTS,
    "istio-sidecar": {**values_for("prod"), "mesh": "istio-sidecar"},
    "istio-ambient": {**values_for("staging"), "mesh": "istio-ambient"},
    "gfd-and-runtime-class": {"gpu": {"runtimeClassName": "nvidia", "minMemoryMiB": 24576, "minDriverMajor": 580}},
    "runtime-form-restricted": {
        **values_for("staging"),
        "predictorForm": "runtime",
        "servingRuntime": {"create": True},
    },
}


def release(values: dict[str, Any]) -> list[dict[str, Any]]:
    return objects(render(values))


def isvc_of(objs):
    (isvc,) = by_kind(objs, "InferenceService")
    return isvc


def cluster_storage_containers() -> list[dict[str, Any]]:
    """What a cluster holds besides KServe's default: the manifest's gptj-hf (the chart makes the same)."""
    return [MANIFESTS["clusterstoragecontainer-hf.yaml"]]


@pytest.mark.parametrize("variant", sorted(PLATFORM_VARIANTS))
def test_every_chart_variant_passes_the_platform_rules(variant):
    values = PLATFORM_VARIANTS[variant]
    objs = release(values)
    runtime = next(iter(by_kind(objs, "ServingRuntime")), None)
    assert release_errors(objs, runtime, mesh=values.get("mesh", "none")) == []
    restricted = values.get("podSecurityStandard") == "restricted"
    caches = [MANIFESTS["localmodelcache.yaml"]]
    assert storage.storage_errors(isvc_of(objs), cluster_storage_containers(), caches, restricted=restricted) == []
    for obj in objs:
        validate(obj)


@pytest.mark.parametrize("name", ["inferenceservice.yaml", "inferenceservice-runtime.yaml"])
def test_every_manifest_passes_the_platform_rules(name):
    runtime = MANIFESTS["clusterservingruntime.yaml"]
    assert release_errors([MANIFESTS[name]], runtime) == []
    named = copy.deepcopy(MANIFESTS[name])
    named["spec"]["predictor"]["storageContainerName"] = "gptj-hf"
    for isvc in (MANIFESTS[name], named):
        caches = [MANIFESTS["localmodelcache.yaml"]]
        assert storage.storage_errors(isvc, cluster_storage_containers(), caches) == []


# --- 1-3: storage ------------------------------------------------------------------------------------


def _without_pvc(container):
    old = copy.deepcopy(container)
    old["spec"]["supportedUriFormats"] = [{"prefix": "hf://"}]
    return old


@pytest.mark.parametrize("form", [{}, {"predictorForm": "runtime"}])
def test_a_named_storage_container_serves_a_cached_model(form):
    isvc = isvc_of(release({**form, **CHART_CSC}))
    (chart_csc,) = by_kind(release(CHART_CSC), "ClusterStorageContainer")
    cache = MANIFESTS["localmodelcache.yaml"]
    uri = storage.cached_uri(isvc, cache)
    assert uri.startswith("pvc://gpt-j-6b-float16-gpu-nodes/models/") and uri.endswith("/")
    for csc in (chart_csc, MANIFESTS["clusterstoragecontainer-hf.yaml"]):
        assert storage.storage_errors(isvc, [csc], [cache]) == []
        assert storage.storage_errors(isvc, [_without_pvc(csc)], []) == []  # no cache: hf:// is enough
        assert storage.storage_errors(isvc, [_without_pvc(csc)], [cache]) == [
            f'ClusterStorageContainer "gptj-hf" does not support storageUri "{uri}"'
        ]


def test_staging_and_prod_download_through_a_restricted_sized_container():
    for env in ("staging", "prod"):
        isvc = isvc_of(release(values_for(env)))
        assert isvc["spec"]["predictor"]["storageContainerName"] == "gptj-hf"
        assert storage.storage_errors(isvc, cluster_storage_containers(), restricted=True) == []
        del isvc["spec"]["predictor"]["storageContainerName"]  # as before: KServe's default one
        assert storage.storage_errors(isvc, cluster_storage_containers(), restricted=True) == [
            "storage container default: memory limit 1Gi is too small for a 12 GB download (at least 4Gi)",
            "storage container default: the restricted Pod Security Standard needs allowPrivilegeEscalation: false",
            "storage container default: the restricted Pod Security Standard needs capabilities.drop [ALL]",
        ]
        # Named but not there: no fallback.
        isvc["spec"]["predictor"]["storageContainerName"] = "gptj-hf"
        assert storage.storage_errors(isvc, []) == ['ClusterStorageContainer "gptj-hf" not found']


def test_the_chart_refuses_a_restricted_namespace_without_a_storage_container():
    with pytest.raises(helm_python.HelmRenderError, match="podSecurityStandard restricted: a download needs"):
        render({"podSecurityStandard": "restricted"})
    render({"podSecurityStandard": "restricted", "model": {"storageUri": "pvc://weights/gpt-j"}})  # mounted
    render({"podSecurityStandard": "restricted", "model": {"storageUri": ""}})  # the tiny model: no download


def test_the_created_storage_container_outlives_its_release():
    (csc,) = by_kind(release(CHART_CSC), "ClusterStorageContainer")
    assert storage.uninstall_errors(csc, created_by_release=True) == []
    del csc["metadata"]["annotations"]["helm.sh/resource-policy"]
    assert storage.uninstall_errors(csc, created_by_release=True) == [
        "ClusterStorageContainer gptj-hf would be deleted with the release that created it "
        "(helm.sh/resource-policy: keep is missing)"
    ]


def test_the_storage_container_crd_is_the_official_one():
    (csc,) = by_kind(release(CHART_CSC), "ClusterStorageContainer")
    broken = copy.deepcopy(csc)
    broken["spec"]["supportedUriFormats"][0]["prefixx"] = "hf://"
    with pytest.raises(Exception, match="prefixx"):
        validate(broken)
    broken = copy.deepcopy(csc)
    broken["spec"]["container"]["securityContext"]["runAsNonRot"] = True  # the embedded Container, strictly
    with pytest.raises(Exception, match="runAsNonRot"):
        validate(broken)


# --- 4: the GPU ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["default", "staging", "prod"])
def test_a_pod_that_asks_for_a_gpu_refuses_to_run_without_one(env):
    isvc = isvc_of(release(values_for(env)))
    assert gpu_errors(isvc) == []
    (container,) = isvc["spec"]["predictor"]["containers"]
    container["env"] = [e for e in container["env"] if e["name"] != "GPTJ_DEVICE"]  # as before
    assert gpu_errors(isvc) == [
        "the pod asks for a GPU but runs with --device auto: without CUDA it would go Ready on the CPU"
    ]
    dev = isvc_of(release(values_for("dev")))
    assert settings_of(dev["spec"]["predictor"]["containers"][0], "gptj").device == "cpu"


def test_the_runtime_class_and_gfd_node_rules():
    predictor = isvc_of(release(PLATFORM_VARIANTS["gfd-and-runtime-class"]))["spec"]["predictor"]
    assert predictor["runtimeClassName"] == "nvidia"
    (term,) = predictor["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["24575"]},
        {"key": "nvidia.com/cuda.driver-version.major", "operator": "Gt", "values": ["579"]},
    ]
    cpu = isvc_of(release({**PLATFORM_VARIANTS["gfd-and-runtime-class"], "gpu": {"count": 0}}))["spec"]["predictor"]
    assert "runtimeClassName" not in cpu and "affinity" not in cpu  # GPU rules only for GPU pods
    # Knative refuses runtimeClassName unless config-features enables it: docs/deploy.md says to.
    knative = isvc_of(release({**values_for("prod"), "gpu": {"runtimeClassName": "nvidia"}}))
    assert "kubernetes.podspec-runtimeclassname" in documented_knative_flags()
    assert admission_errors(knative) == []
    flags = documented_knative_flags() - {"kubernetes.podspec-runtimeclassname"}
    assert "must not set the field(s): spec.template.spec.runtimeClassName" in admission_errors(knative, flags=flags)
    with pytest.raises(helm_python.HelmRenderError, match="put node rules of your own in gpu.nodeSelector"):
        render({"gpu": {"minMemoryMiB": 16384}, "affinity": {"nodeAffinity": {"x": 1}}})


# --- 8: the runtime form ---------------------------------------------------------------------------


def test_runtime_args_never_override_the_inferenceservice():
    runtime = MANIFESTS["clusterservingruntime.yaml"]
    assert runtime_setting_errors(runtime) == []
    old = copy.deepcopy(runtime)
    (container,) = old["spec"]["containers"]
    container["args"] = ["--model_name={{.Name}}", "--http_port=8080", "--model=/mnt/models"]
    container["args"] += ["--request_timeout_seconds=290", "--drain_timeout_seconds=30"]
    del container["env"]
    assert runtime_setting_errors(old) == [
        "runtime arg --model=/mnt/models overrides every InferenceService's GPTJ_MODEL (flags beat env)",
        "runtime arg --request_timeout_seconds=290 overrides every InferenceService's GPTJ_REQUEST_TIMEOUT_SECONDS "
        "(flags beat env)",
        "runtime arg --drain_timeout_seconds=30 overrides every InferenceService's GPTJ_DRAIN_TIMEOUT_SECONDS "
        "(flags beat env)",
        "gRPC listens on 8081, a port the runtime does not declare",
    ]


def test_the_chart_values_win_over_the_cluster_runtime():
    runtime = MANIFESTS["clusterservingruntime.yaml"]
    dev = isvc_of(release({**values_for("dev"), "predictorForm": "runtime", "serving": {"drainTimeoutSeconds": 20}}))
    (container,) = pod_spec(dev, runtime)["containers"]
    settings = settings_of(container, dev["metadata"]["name"])
    assert (settings.model, settings.device, settings.operations.drain_timeout_s) == ("tiny", "cpu", 20)
    assert settings.server.enable_grpc is False and settings.model_name == "gptj"
    prod = isvc_of(release({"predictorForm": "runtime"}))
    (container,) = pod_spec(prod, runtime)["containers"]
    assert settings_of(container, "gptj").model == "/mnt/models"


# --- 5-7, 9-11: drains, monitoring, mesh, autoscaling ----------------------------------------------


def _errors(values, breaks=None, *, mesh=None):
    objs = release(values)
    if breaks:
        breaks(objs)
    return release_errors(objs, mesh=mesh or values.get("mesh", "none"))


def _first(objs, kind):
    return by_kind(objs, kind)[0]


def test_two_replicas_get_a_disruption_budget_and_one_gets_none():
    assert [p["spec"]["maxUnavailable"] for p in by_kind(release(values_for("prod")), "PodDisruptionBudget")] == [1]
    assert not by_kind(release({}), "PodDisruptionBudget")
    assert _errors(values_for("prod"), lambda objs: objs.remove(_first(objs, "PodDisruptionBudget"))) == [
        "2 replicas and no PodDisruptionBudget: one node drain may evict them all"
    ]
    pdb = _first(release(values_for("prod")), "PodDisruptionBudget")
    assert _errors({}, lambda objs: objs.append(pdb)) == [
        "a PodDisruptionBudget for one replica blocks drains or protects nothing"
    ]
    assert _errors(
        values_for("prod"), lambda objs: _first(objs, "PodDisruptionBudget")["spec"].pop("unhealthyPodEvictionPolicy")
    ) == ["the PodDisruptionBudget lets a pod that is not Ready block a drain (AlwaysAllow)"]


def test_each_pod_is_scraped_by_one_job():
    isvc_annotations = isvc_of(release(values_for("prod")))["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in isvc_annotations  # the PodMonitor scrapes
    assert isvc_annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"

    def annotated(objs):
        isvc_of(objs)["metadata"]["annotations"]["prometheus.io/scrape"] = "true"

    assert _errors(values_for("prod"), annotated) == [
        "a PodMonitor beside prometheus.io/scrape annotations: two scrape jobs, every series twice"
    ]
    monitor = objects(render({"metrics": {"serviceMonitor": {"enabled": True}}}))
    both = _errors(
        {"metrics": {"podMonitor": {"enabled": True}}, "replicas": {"min": 1, "max": 1}},
        lambda objs: objs.extend(by_kind(monitor, "ServiceMonitor")),
    )
    assert "a PodMonitor and a ServiceMonitor scrape the same pods: every series twice" in both
    with pytest.raises(helm_python.HelmRenderError, match="both scrape the same pods"):
        render({"metrics": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}})


def test_keda_counts_each_pod_once():
    keda = {"autoscaling": {"standardClass": "keda"}, "replicas": {"min": 1, "max": 4}}

    def old_query(objs):
        metric = isvc_of(objs)["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]
        metric["query"] = 'sum(gptj_queue_size{namespace="ml"}) + sum(gptj_requests_running{namespace="ml"})'

    assert _errors(keda, old_query) == [
        "KEDA's query sums gptj_queue_size over every scrape job's copy (max by (pod) first)",
        "KEDA's query sums gptj_requests_running over every scrape job's copy (max by (pod) first)",
    ]


def test_an_alert_fires_when_the_metrics_disappear():
    (rule,) = by_kind(release(values_for("prod")), "PrometheusRule")
    (absent,) = [r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "GPTJMetricsAbsent"]
    assert (
        absent["expr"].strip() == 'absent_over_time(gptj_engine_healthy{namespace="ml", pod=~"gptj-predictor.*"}[10m])'
    )

    def dropped(objs):
        group = _first(objs, "PrometheusRule")["spec"]["groups"][0]
        group["rules"] = [r for r in group["rules"] if r["alert"] != "GPTJMetricsAbsent"]

    assert _errors(values_for("prod"), dropped) == [
        "no alert fires when the metrics disappear (absent_over_time(gptj_engine_healthy{...}[10m]))"
    ]


@pytest.mark.parametrize(
    "mesh, port, message",
    [
        ("istio-sidecar", 15020, "Prometheus (monitoring) cannot reach the Istio agent's 15020"),
        ("istio-ambient", 15008, "meshed peers (ambient) cannot reach the pod's HBONE port 15008"),
    ],
)
def test_the_network_policy_lets_the_mesh_through(mesh, port, message):
    values = {**values_for("prod"), "mesh": mesh}

    def closed(objs):
        for rule in _first(objs, "NetworkPolicy")["spec"]["ingress"]:
            rule["ports"] = [p for p in rule["ports"] if p["port"] != port]

    assert _errors(values, closed) == [message]
    assert message in _errors(values_for("prod"), mesh=mesh)  # the policy without a mesh setting


def test_under_an_istio_sidecar_prometheus_scrapes_the_agent():
    objs = release(PLATFORM_VARIANTS["istio-sidecar"])
    (monitor,) = by_kind(objs, "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0] | {"interval": None} == {
        "portNumber": 15020,
        "path": "/stats/prometheus",
        "interval": None,
    }
    # The agent merges what the annotations point at: they stay under a sidecar.
    assert isvc_of(objs)["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert "STRICT mTLS refuses a plain scrape" in " ".join(_errors(values_for("prod"), mesh="istio-sidecar"))


def test_scale_down_waits_for_a_cold_start():
    prod = isvc_of(release(values_for("prod")))
    assert prod["metadata"]["annotations"]["autoscaling.knative.dev/scale-down-delay"] == f"{COLD_START_SECONDS}s"
    assert admission_errors(prod) == []
    too_long = copy.deepcopy(prod)
    too_long["metadata"]["annotations"]["autoscaling.knative.dev/scale-down-delay"] = "2h"
    assert "expected 0s <= 2h <= 1h0m0s: metadata.annotations.autoscaling.knative.dev/scale-down-delay" in (
        admission_errors(too_long)
    )
    assert _errors(
        values_for("prod"),
        lambda objs: isvc_of(objs)["metadata"]["annotations"].pop("autoscaling.knative.dev/scale-down-delay"),
    ) == [f"Knative's scale-down-delay 0 s is shorter than a {COLD_START_SECONDS} s cold start"]
    keda = {"autoscaling": {"standardClass": "keda"}, "replicas": {"min": 1, "max": 4}}
    assert _errors(keda, lambda objs: isvc_of(objs)["spec"]["predictor"]["autoScaling"].pop("behavior")) == [
        f"keda's scale-down stabilization is shorter than a {COLD_START_SECONDS} s cold start"
    ]


def test_hpa_aims_at_a_utilization_not_a_request_count():
    hpa = {"autoscaling": {"standardClass": "hpa", "metric": "cpu"}, "replicas": {"min": 1, "max": 2}}
    assert isvc_of(release(hpa))["spec"]["predictor"]["scaleTarget"] == 80
    assert _errors(hpa, lambda objs: isvc_of(objs)["spec"]["predictor"].__setitem__("scaleTarget", 8)) == [
        "the HPA would aim at 8% utilization: scaleTarget is a percentage"
    ]


def test_scale_to_zero_is_refused_where_the_activator_cannot_wait_for_the_load():
    zero = {**values_for("staging"), "replicas": {"min": 0, "max": 4}}
    with pytest.raises(helm_python.HelmValuesError, match="/autoscaling/coldStartSeconds"):
        render(zero)  # 900 s: more than any revision timeout Knative allows by default
    with pytest.raises(helm_python.HelmRenderError, match=r"at most timeoutSeconds \(300\), less than"):
        render({**zero, "autoscaling": {"coldStartSeconds": 600}})
    objs = release({**zero, "autoscaling": {"coldStartSeconds": 240}})  # e.g. a cached small model
    assert "scale to zero: the activator holds a request at most timeoutSeconds (300)" in " ".join(
        release_errors(objs)  # the rules' cold start is the 6B's: scale to zero is refused for it
    )


def test_a_service_monitor_in_knative_mode_is_refused():
    with pytest.raises(helm_python.HelmRenderError, match="finds no targets in Knative mode"):
        render(
            {
                **values_for("staging"),
                "metrics": {"podMonitor": {"enabled": False}, "serviceMonitor": {"enabled": True}},
            }
        )
    monitor = by_kind(objects(render({"metrics": {"serviceMonitor": {"enabled": True}}})), "ServiceMonitor")
    staging = {**values_for("staging"), "metrics": {"podMonitor": {"enabled": False}}}
    assert _errors(staging, lambda objs: objs.extend(monitor)) == [
        "a ServiceMonitor finds no targets in Knative mode (Knative's Services target queue-proxy)"
    ]


def test_notes_for_knative_and_for_promotion():
    prod = render(values_for("prod"))["gptj/templates/NOTES.txt"]
    assert "port-forward service/gptj-predictor" not in prod  # Knative's predictor Service is the gateway's
    assert "get pod -l serving.kserve.io/inferenceservice=gptj -o name" in prod
    assert "--reuse-values --set canaryTrafficPercent=100" in prod
    assert "port-forward service/gptj-predictor 8080:80" in render({})["gptj/templates/NOTES.txt"]
