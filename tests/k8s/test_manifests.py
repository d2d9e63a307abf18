"""manifests/: plain YAML for kubectl apply, validated strictly and checked for what matters."""

from __future__ import annotations

import pytest

from predictor.settings import parse_settings

from .kube import MANIFESTS, env_of, manifest_objects, validate

OBJECTS = dict(manifest_objects())


def test_every_file_holds_one_object_and_validates_strictly():
    files = sorted(p.name for p in MANIFESTS.glob("*.yaml"))
    assert files == [
        "clusterservingruntime.yaml",
        "clusterstoragecontainer-hf.yaml",
        "inferenceservice-runtime.yaml",
        "inferenceservice.yaml",
        "localmodelcache.yaml",
    ]
    assert sorted(OBJECTS) == files
    for obj in OBJECTS.values():
        validate(obj)


def test_every_file_is_documented_in_the_deploy_guide():
    guide = (MANIFESTS.parent / "docs" / "deploy.md").read_text()
    for name in OBJECTS:
        assert f"kubectl apply -f manifests/{name}" in guide or f"-f manifests/{name}" in guide, name
    readme = (MANIFESTS.parent / "README.md").read_text()
    assert "## Deploy on Kubernetes" in readme and "(docs/deploy.md)" in readme


@pytest.fixture
def isvc():
    return OBJECTS["inferenceservice.yaml"]


@pytest.fixture
def runtime_container():
    (container,) = OBJECTS["clusterservingruntime.yaml"]["spec"]["containers"]
    return container


def test_custom_predictor_on_one_gpu(isvc):
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    for key in ("cpu", "memory", "ephemeral-storage"):
        assert key in resources["requests"] and key in resources["limits"]
    # The GPU request places the pod; a GPU Feature Discovery label would leave it pending elsewhere.
    assert "nodeSelector" not in predictor and predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert predictor["deploymentStrategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    env = env_of(container)
    assert env["STORAGE_URI"] == "hf://EleutherAI/gpt-j-6b:float16" and env["GPTJ_MODEL"] == "/mnt/models"
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["timeout"]) == (1, 1, 300)
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["prometheus.io/port"] == "8080" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "false"  # else KServe rewrites the port


@pytest.mark.parametrize("name", ["inferenceservice.yaml", "clusterservingruntime.yaml"])
def test_probes_security_and_shared_memory(name):
    obj = OBJECTS[name]
    spec = obj["spec"] if obj["kind"] == "ClusterServingRuntime" else obj["spec"]["predictor"]
    (container,) = spec["containers"]
    model_ready = "/v2/models/gptj/ready" if name == "inferenceservice.yaml" else "/v2/models/{{.Name}}/ready"
    assert container["startupProbe"]["httpGet"]["path"] == model_ready
    assert container["readinessProbe"]["httpGet"]["path"] == model_ready
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    if name == "inferenceservice.yaml":
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    else:  # a cluster-wide runtime may serve Knative-mode InferenceServices, where lifecycle is refused
        assert "lifecycle" not in container
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/cache", "/tmp", "/dev/shm"}


def test_pod_security_on_the_inferenceservices():
    for name in ("inferenceservice.yaml", "inferenceservice-runtime.yaml"):
        predictor = OBJECTS[name]["spec"]["predictor"]
        assert predictor["securityContext"]["runAsNonRoot"] is True
        assert "runAsUser" not in predictor["securityContext"]  # it would reach the storage initializer
        assert predictor["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert predictor["automountServiceAccountToken"] is False


def test_runtime_form_uses_the_cluster_serving_runtime():
    runtime = OBJECTS["clusterservingruntime.yaml"]
    model = OBJECTS["inferenceservice-runtime.yaml"]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]  # Standard mode adds the hook


def test_storage_container_for_hf_downloads():
    spec = OBJECTS["clusterstoragecontainer-hf.yaml"]["spec"]
    # pvc://: what KServe rewrites a LocalModelCache's model to (test_platform.py)
    assert spec["supportedUriFormats"] == [{"prefix": "hf://"}, {"prefix": "pvc://"}]
    assert spec["workloadType"] == "initContainer"
    container = spec["container"]
    assert container["name"] == "storage-initializer"
    memory = container["resources"]["limits"]["memory"]
    assert memory.endswith("Gi") and 4 <= int(memory[:-2]) <= 8  # KServe's default 1Gi is OOM-killed
    sc = container["securityContext"]  # what the restricted Pod Security Standard requires
    assert sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "HF_HOME", "value": "/tmp/huggingface"} in container["env"]


def test_local_model_cache_matches_the_runtime_inferenceservice():
    cache = OBJECTS["localmodelcache.yaml"]["spec"]
    model = OBJECTS["inferenceservice-runtime.yaml"]["spec"]["predictor"]["model"]
    assert cache["sourceModelUri"] == model["storageUri"] == "hf://EleutherAI/gpt-j-6b:float16"
    assert cache["nodeGroups"]


def test_the_predictor_accepts_the_manifests_args_and_env(isvc, runtime_container):
    (container,) = isvc["spec"]["predictor"]["containers"]
    settings = parse_settings(container["args"], {k: v for k, v in env_of(container).items() if k.startswith("GPTJ_")})
    assert (settings.model_name, settings.model, settings.server.http_port) == ("gptj", "/mnt/models", 8080)
    # KServe renders the runtime's container with the InferenceService's metadata ({{.Name}}).
    args = [arg.replace("{{.Name}}", "gptj") for arg in runtime_container["args"]]
    settings = parse_settings(args, env_of(runtime_container))
    assert (settings.model_name, settings.model, settings.device) == ("gptj", "/mnt/models", "cuda")
    assert (settings.operations.request_timeout_s, settings.operations.drain_timeout_s) == (290, 30)
    assert settings.server.enable_grpc is False
