"""The Helm chart: lint, render per environment, strict validation, and what each environment must be."""

from __future__ import annotations

import copy

import helm_python
import jsonschema
import kubernetes_validate
import pytest

from predictor.settings import parse_settings

from .kube import (
    CHART,
    ENVIRONMENTS,
    by_kind,
    env_of,
    objects,
    predictor_containers,
    render,
    validate,
    values_for,
)


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def env(request):
    return request.param


@pytest.fixture(scope="module")
def rendered(env):
    return objects(render(values_for(env)))


def isvc_of(objs):
    (isvc,) = by_kind(objs, "InferenceService")
    return isvc


def container_of(objs):
    (container,) = predictor_containers(isvc_of(objs))
    return container


# --- lint and render -----------------------------------------------------------------------------


def test_lint_is_clean_in_strict_mode(env):
    report = helm_python.lint(str(CHART), values_for(env), strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # no warnings, no errors


def test_every_object_validates_strictly(rendered):
    kinds = {o["kind"] for o in rendered}
    assert {"InferenceService", "Pod"} <= kinds
    for obj in rendered:
        validate(obj)


def test_notes_tell_how_to_reach_the_model_through_the_ingress(env):
    notes = render(values_for(env))["gptj/templates/NOTES.txt"]
    assert "curl" in notes and "/v1/models/gptj:predict" in notes and "Host: ${SERVICE_HOSTNAME}" in notes
    assert "If I was a billionaire, I would" in notes and "helm test gptj -n ml" in notes


# --- what matters, per environment ---------------------------------------------------------------


def test_gpu_where_it_belongs(env, rendered):
    resources = container_of(rendered)["resources"]
    if env == "dev":
        assert "nvidia.com/gpu" not in resources["requests"] and "nvidia.com/gpu" not in resources["limits"]
        assert "nodeSelector" not in isvc_of(rendered)["spec"]["predictor"]
    else:
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
        predictor = isvc_of(rendered)["spec"]["predictor"]
        # The GPU request places the pod; nvidia.com/gpu.present exists only with GPU Feature Discovery.
        assert "nodeSelector" not in predictor
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]


def test_a_gpu_node_selector_is_there_when_asked_for():
    selector = {"nvidia.com/gpu.present": "true"}
    predictor = isvc_of(objects(render({"gpu": {"nodeSelector": selector}})))["spec"]["predictor"]
    assert predictor["nodeSelector"] == selector


def test_probes_and_startup_budget(rendered):
    container = container_of(rendered)
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/models/gptj/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/gptj/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= 15 * 60 or container_uses_tiny_model(container)  # 12 GB of weights take minutes


def container_uses_tiny_model(container):
    return env_of(container)["GPTJ_MODEL"] == "tiny"


def test_hardened_security_context(rendered):
    for pod_spec, container in pod_specs_and_containers(rendered):
        assert pod_spec["securityContext"]["runAsNonRoot"] is True
        assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod_spec["automountServiceAccountToken"] is False
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}


def pod_specs_and_containers(objs):
    isvc = isvc_of(objs)
    yield isvc["spec"]["predictor"], container_of(objs)
    for pod in by_kind(objs, "Pod"):
        yield pod["spec"], pod["spec"]["containers"][0]


def test_writable_paths_are_emptydirs_with_shm_in_memory(rendered):
    predictor = isvc_of(rendered)["spec"]["predictor"]
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    writable = [m for m in container_of(rendered)["volumeMounts"] if not m.get("readOnly")]  # not the API keys
    mounts = {m["mountPath"]: m["name"] for m in writable}
    assert mounts == {"/cache": "cache", "/tmp": "tmp", "/dev/shm": "dshm"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())


def test_model_source(env, rendered):
    env_vars = env_of(container_of(rendered))
    if env == "dev":
        assert env_vars["GPTJ_MODEL"] == "tiny" and "STORAGE_URI" not in env_vars
    else:
        assert env_vars["STORAGE_URI"] == "hf://EleutherAI/gpt-j-6b:float16"
        assert env_vars["GPTJ_MODEL"] == "/mnt/models"


def test_the_predictor_accepts_the_rendered_args_and_env(rendered):
    """The chart speaks the predictor's language: its args and env parse into valid settings."""
    container = container_of(rendered)
    env_vars = {k: v for k, v in env_of(container).items() if k.startswith("GPTJ_")}
    settings = parse_settings(container["args"], env_vars)
    assert settings.model_name == "gptj" and settings.server.http_port == 8080
    assert settings.model == env_vars["GPTJ_MODEL"]
    assert (settings.limits.max_length, settings.limits.min_length, settings.limits.max_body_bytes) == (
        512,
        64,
        1048576,
    )


def test_replicas_autoscaling_and_canary(env, rendered):
    isvc = isvc_of(rendered)
    predictor = isvc["spec"]["predictor"]
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    if env in ("staging", "prod"):
        assert mode == "Knative" and predictor["minReplicas"] >= 2
        assert predictor["maxReplicas"] > predictor["minReplicas"]
        assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    else:
        assert mode == "Standard" and predictor["minReplicas"] == predictor["maxReplicas"] == 1
        assert "scaleMetric" not in predictor
    assert predictor.get("canaryTrafficPercent") == (10 if env == "prod" else None)
    assert predictor["timeout"] == 300


def test_grpc_port_in_standard_mode_only(rendered):
    """Standard mode exposes v2 over gRPC beside HTTP; Knative routes one port, so gRPC is off there."""
    isvc, container = isvc_of(rendered), container_of(rendered)
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    # the image sets GPTJ_ENABLE_GRPC=true (Dockerfile); the chart's args decide per mode
    settings = parse_settings(container["args"], {"GPTJ_ENABLE_GRPC": "true"})
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (policy,) = by_kind(rendered, "NetworkPolicy") or [None]
    allowed = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]} if policy else set()
    if mode == "Standard":
        assert ports == {"http1": 8080, "grpc": 8081}
        assert settings.server.enable_grpc and settings.server.grpc_port == 8081
        assert not policy or 8081 in allowed
    else:
        assert ports == {"http1": 8080} and not settings.server.enable_grpc
        assert 8081 not in allowed


def test_scrape_annotations(rendered):
    annotations = isvc_of(rendered)["metadata"]["annotations"]
    # "true" would make KServe's pod mutator rewrite the port to the queue-proxy's (test_admission.py).
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"
    if by_kind(rendered, "PodMonitor"):  # staging, prod: one scrape job per pod (test_platform.py)
        assert not {k for k in annotations if k.startswith("prometheus.io/")}
        return
    assert annotations["prometheus.io/scrape"] == "true"
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("8080", "/metrics")


def test_labels_and_selectors(env, rendered):
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "gptj" and labels["app.kubernetes.io/instance"] == "gptj"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        # KServe copies the InferenceService's labels onto the pods: nothing that changes per chart version.
        if obj["kind"] == "InferenceService":
            assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels
            assert obj["spec"]["predictor"]["labels"] == labels
        else:
            assert labels["helm.sh/chart"] == "gptj-0.1.0"
    # KServe labels predictor pods with serving.kserve.io/inferenceservice=<name>: selectors use that.
    pod_label = {"serving.kserve.io/inferenceservice": isvc_of(rendered)["metadata"]["name"]}
    for policy in by_kind(rendered, "NetworkPolicy"):
        assert policy["spec"]["podSelector"]["matchLabels"] == pod_label
    for monitor in by_kind(rendered, "PodMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"] == pod_label
        assert monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 8080
    for budget in by_kind(rendered, "PodDisruptionBudget"):
        assert budget["spec"]["selector"]["matchLabels"] == pod_label
    observability = {"PodMonitor", "NetworkPolicy", "ConfigMap", "PrometheusRule", "PodDisruptionBudget"}
    expected = {"default": set(), "dev": set(), "staging": observability, "prod": observability}[env]
    assert {o["kind"] for o in rendered} - {"InferenceService", "Pod"} == expected


def test_helm_test_hook_posts_the_seed_to_the_predictor_service(rendered):
    (pod,) = by_kind(rendered, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # An Istio sidecar never exits: the test pod would never complete in an injected namespace.
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"] and "If I was a billionaire, I would" in command[2]
    assert command[3] == "http://gptj-predictor.ml.svc.cluster.local" and command[4] == "gptj"


# --- other forms and options ---------------------------------------------------------------------


def test_runtime_form_with_its_own_serving_runtime():
    objs = objects(render({"predictorForm": "runtime", "servingRuntime": {"create": True}}))
    for obj in objs:
        validate(obj)
    (runtime,) = by_kind(objs, "ServingRuntime")
    model = isvc_of(objs)["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "gptj"} and model["runtime"] == runtime["metadata"]["name"]
    assert model["storageUri"] == "hf://EleutherAI/gpt-j-6b:float16"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert runtime["spec"]["containers"][0]["name"] == "kserve-container"
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "gptj"


def test_service_monitor_and_digest_pinning():
    objs = objects(
        render({"metrics": {"serviceMonitor": {"enabled": True}}, "image": {"digest": "sha256:" + "a" * 64}})
    )
    for obj in objs:
        validate(obj)
    (monitor,) = by_kind(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["targetPort"] == 8080
    assert container_of(objs)["image"] == "registry.example.com/ml/gptj-predictor@sha256:" + "a" * 64


def test_the_test_pod_may_use_a_small_image():
    (pod,) = by_kind(objects(render({"tests": {"image": "python:3.12-slim"}})), "Pod")
    assert pod["spec"]["containers"][0]["image"] == "python:3.12-slim"


def test_notes_give_helm_test_a_timeout_longer_than_its_wait():
    notes = render({})["gptj/templates/NOTES.txt"]
    assert "helm test gptj -n ml --timeout 1800s" in notes  # 1200 s wait + 600 s for the request


def test_standard_rollouts_need_no_spare_gpu():
    predictor = isvc_of(objects(render({})))["spec"]["predictor"]
    assert predictor["deploymentStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    surge = isvc_of(objects(render({"rollout": {"maxSurge": 1, "maxUnavailable": 0}})))["spec"]["predictor"]
    assert surge["deploymentStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # Knative refuses a deploymentStrategy (KServe's KPA validation): none in Knative mode.
    assert "deploymentStrategy" not in isvc_of(objects(render(values_for("prod"))))["spec"]["predictor"]


def test_the_storage_container_is_created_and_used_when_asked_for():
    objs = objects(render({"storageContainer": {"name": "gptj-hf", "create": True}}))
    (storage,) = by_kind(objs, "ClusterStorageContainer")
    validate(storage)
    assert storage["metadata"]["name"] == isvc_of(objs)["spec"]["predictor"]["storageContainerName"] == "gptj-hf"
    assert "namespace" not in storage["metadata"]  # cluster-scoped
    assert storage["spec"]["container"]["resources"]["limits"]["memory"] == "8Gi"
    assert not by_kind(objects(render({})), "ClusterStorageContainer")


def test_long_release_names_stay_within_kserve_limits():
    objs = objects(render(name="a-very-long-release-name-for-the-gpt-j-predictor-chart"))
    assert len(isvc_of(objs)["metadata"]["name"]) <= 45  # KServe derives longer names from it


# --- the validators catch what they must ---------------------------------------------------------


def test_a_misspelled_field_is_caught():
    isvc = copy.deepcopy(isvc_of(objects(render())))
    isvc["spec"]["predictor"]["minReplica"] = 2  # typo of minReplicas
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate(isvc)
    isvc = copy.deepcopy(isvc_of(objects(render())))
    isvc["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/"}
    with pytest.raises(jsonschema.ValidationError, match="httpGett"):
        validate(isvc)


def test_a_wrong_type_is_caught():
    isvc = copy.deepcopy(isvc_of(objects(render())))
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        validate(isvc)


def test_bad_metadata_on_a_custom_kind_is_caught():
    isvc = copy.deepcopy(isvc_of(objects(render())))
    isvc["metadata"]["labels"]["app.kubernetes.io/name"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(isvc)


def test_core_kind_typos_unknown_kinds_and_removed_apis_fail():
    (pod,) = by_kind(objects(render()), "Pod")
    broken = copy.deepcopy(pod)
    broken["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):  # removed in 1.25
        validate({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "p"}})


# --- values.schema.json and the chart's own checks -----------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"replica": {"min": 1}}, "additional properties 'replica' not allowed"),
        ({"replicas": {"min": "two", "max": 2}}, "at '/replicas/min': got string, want integer"),
        ({"replicas": {"min": -1, "max": 2}}, "/replicas/min"),
        ({"deploymentMode": "Serverless"}, "/deploymentMode"),
        ({"predictorForm": "pod"}, "/predictorForm"),
        ({"canaryTrafficPercent": 150, "deploymentMode": "Knative"}, "/canaryTrafficPercent"),
        ({"gpu": {"count": "1"}}, "/gpu/count"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"image": {"tagg": "1"}}, "additional properties 'tagg' not allowed"),
        ({"model": {"dtype": "int8"}}, "/model/dtype"),
        ({"model": {"storageUri": "ftp://x"}}, "/model/storageUri"),
        ({"model": {"limits": {"maxLength": 0}}}, "/model/limits/maxLength"),
        ({"resources": {"requests": {"cpu": "lots"}, "limits": {}}}, "/resources/requests/cpu"),
        ({"probes": {"startup": {"failureThreshold": 0}}}, "/probes/startup/failureThreshold"),
        ({"gpu": {"tolerations": [{"key": "x", "operator": "Maybe"}]}}, "/gpu/tolerations/0/operator"),
        ({"metrics": {"podMonitor": {"enabled": "yes"}}}, "/metrics/podMonitor/enabled"),
        ({"networkPolicy": {"enabled": True, "allowNamespaces": "istio-system"}}, "/networkPolicy/allowNamespaces"),
        ({"serving": {"decodePath": "paged"}}, "/serving/decodePath"),
        ({"serving": {"kvCacheMemoryFraction": 1.5}}, "/serving/kvCacheMemoryFraction"),
        ({"serving": {"maxBatchSize": "lots"}}, "/serving/maxBatchSize"),
        ({"serving": {"maxBatchSize": 0}}, "/serving/maxBatchSize"),
        ({"serving": {"cudaGraphs": "on"}}, "/serving/cudaGraphs"),
        ({"autoscaling": {"keda": {"serverAddress": "prometheus:9090"}}}, "/autoscaling/keda/serverAddress"),
        ({"autoscaling": {"keda": {"target": 0}}}, "/autoscaling/keda/target"),
        ({"autoscaling": {"keda": {"threshold": 3}}}, "additional properties 'threshold' not allowed"),
        ({"rollout": {"maxSurge": -1}}, "/rollout/maxSurge"),
        ({"rollout": {"maxUnavailable": "half"}}, "/rollout/maxUnavailable"),
        ({"podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001}}, "/podSecurityContext"),
        ({"storageContainer": {"name": "GPTJ_HF"}}, "/storageContainer/name"),
        ({"tests": {"image": 3}}, "/tests/image"),
    ],
)
def test_schema_rejects_bad_values(values, message):
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"replicas": {"min": 3, "max": 2}}, "replicas.min (3) must be <= replicas.max (2)"),
        ({"canaryTrafficPercent": 10}, "canaryTrafficPercent needs deploymentMode: Knative"),
        ({"replicas": {"min": 0, "max": 2}}, "scale to zero) needs deploymentMode: Knative"),
        ({"deploymentMode": "Knative", "autoscaling": {"metric": "cpu"}}, "Knative scales on concurrency or rps"),
        ({"autoscaling": {"standardClass": "hpa", "metric": "concurrency"}}, "hpa scales on cpu or memory"),
        ({"servingRuntime": {"create": True}}, "servingRuntime.create needs predictorForm: runtime"),
        (
            {"deploymentMode": "Knative", "autoscaling": {"standardClass": "keda"}},
            "applies to deploymentMode Standard only",
        ),
        (
            {"deploymentMode": "Knative", "timeoutSeconds": 60, "serving": {"requestTimeoutSeconds": 50}},
            "timeoutSeconds (60) is the pod's grace period and must be at least 30 (queue-proxy's drain)",
        ),
        ({"deploymentMode": "Knative", "timeoutSeconds": 900}, "timeoutSeconds above 600"),
        ({"storageContainer": {"create": True}}, "storageContainer.create needs storageContainer.name"),
    ],
)
def test_chart_refuses_inconsistent_values(values, message):
    with pytest.raises(helm_python.HelmRenderError) as caught:
        render(values)
    assert message in str(caught.value)
