"""What KServe v0.20.0 does with an InferenceService: its validating webhook, the pod spec and metadata
its controller builds, and the pod mutator's changes. Each rule names the file and lines of
kserve/kserve at tag v0.20.0 it follows.
"""

from __future__ import annotations

import copy
import re
from typing import Any

ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # inference_service_validation.go L46, L469-474
# pkg/constants/constants.go L559-567 (the legacy names are still parsed, L570-585).
MODES = {"Standard": "Standard", "RawDeployment": "Standard", "Knative": "Knative", "Serverless": "Knative"}
# config/configmap/inferenceservice.yaml L743-746: the cluster default without the annotation.
DEFAULT_MODE = "Knative"
AUTOSCALER_CLASSES = {"hpa", "external", "keda", "none"}  # constants.go L277-282
HPA_METRICS, KPA_METRICS = {"cpu", "memory"}, {"concurrency", "rps"}
# pkg/controller/v1beta1/inferenceservice/utils/utils.go L48 and L411-442 (ValidateStorageURI).
STORAGE_PREFIXES = (
    "gs://",
    "s3://",
    "pvc://",
    "file://",
    "https://",
    "http://",
    "hdfs://",
    "webhdfs://",
    "oci://",
    "oci+native://",
    "hf://",
)
# config/configmap/inferenceservice.yaml L748-752 (metricsAggregator) and constants.go L124-133.
SCRAPE, AGGREGATE = "serving.kserve.io/enable-prometheus-scraping", "serving.kserve.io/enable-metric-aggregation"
# Fields of spec.predictor that configure KServe rather than the pod (component.go L82-132,
# predictor.go L40-80): the rest is a corev1.PodSpec the controller copies.
KSERVE_ONLY = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleMetricType",
    "scaleTarget",
    "autoScaling",
    "canaryTrafficPercent",
    "timeout",
    "containerConcurrency",
    "batcher",
    "logger",
    "labels",
    "annotations",
    "model",
    "workerSpec",
    "deploymentStrategy",
    "storageUris",
    "storageContainerName",
}
MODEL_ONLY = {"modelFormat", "runtime", "storageUri", "storage", "protocolVersion", "runtimeVersion", "name"}


def mode(isvc: dict[str, Any]) -> str:
    return MODES.get(
        isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode", "Serverless"), "invalid"
    )


def isvc_errors(isvc: dict[str, Any]) -> list[str]:
    """validateInferenceService (pkg/apis/serving/v1beta1/inference_service_validation.go L119-181)."""
    annotations = isvc["metadata"].get("annotations", {})
    predictor = isvc["spec"]["predictor"]
    errors = []
    if not ISVC_NAME.fullmatch(isvc["metadata"]["name"]):
        errors.append(
            f'the InferenceService "{isvc["metadata"]["name"]}" is invalid: name must match {ISVC_NAME.pattern}'
        )
    if mode(isvc) == "invalid":
        errors.append(f"unknown deploymentMode {annotations['serving.kserve.io/deploymentMode']}")
    autoscaler = annotations.get("serving.kserve.io/autoscalerClass")
    if autoscaler is not None and autoscaler not in AUTOSCALER_CLASSES:  # L477-491
        errors.append(f"[{autoscaler}] is not a supported autoscaler class type")
    if len([key for key in ("containers", "model") if predictor.get(key)]) != 1:  # component.go L415-420
        errors.append("exactly one of [containers, model] must be specified in PredictorSpec")
    errors += replica_errors(predictor) + autoscaling_errors(mode(isvc), autoscaler, predictor)
    uri = storage_uri(isvc)
    if uri is not None and re.match(r"\w+?://", uri) and not uri.startswith(STORAGE_PREFIXES):
        errors.append(
            f"storageUri, must be one of: [{', '.join(STORAGE_PREFIXES)}]. StorageUri [{uri}] is not supported"
        )
    if "canaryTrafficPercent" in predictor and mode(isvc) != "Knative":
        # Only the Knative reconciler reads it (reconcilers/knative/ksvc_reconciler.go L133-153): Standard
        # mode would ignore it silently, so we refuse it rather than ship a canary that never happens.
        errors.append("canaryTrafficPercent takes effect in Knative mode only")
    return errors


def replica_errors(predictor: dict[str, Any]) -> list[str]:
    """validateReplicas (component.go L374-388)."""
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if low < 0 or high < 0:
        return ["minReplicas and maxReplicas must not be negative"]
    return ["MinReplicas cannot be greater than MaxReplicas"] if high and low > high else []


def autoscaling_errors(deployment_mode: str, autoscaler: str | None, predictor: dict[str, Any]) -> list[str]:
    """validateAutoScalingCompExtension (validation.go L446-466) and its HPA/KEDA/KPA checks (L527-668)."""
    metric, metrics = predictor.get("scaleMetric"), predictor.get("autoScaling", {}).get("metrics", [])
    if deployment_mode == "Standard" and autoscaler == "hpa":
        if (metric or "cpu") not in HPA_METRICS:
            return [f"[{metric}] is not a supported metric"]
        return [f"invalid HPA metric source type with value [{m['type']}]" for m in metrics if m["type"] != "Resource"]
    if deployment_mode == "Standard" and autoscaler == "keda":
        errors = ["ScaleMetric is not supported for KEDA"] if metric else []
        for m in metrics:
            if m["type"] == "External":
                external = m.get("external") or {}
                if not external.get("metric", {}).get("query"):
                    errors.append("the query should not be empty")
                target = external.get("target", {})
                if target.get("value") is None:
                    errors.append("the target threshold value should not be empty")
                elif target.get("type") not in (None, "Value"):
                    errors.append(f"the {target.get('type')} type should be set")
        return errors
    if deployment_mode == "Knative":
        errors = []
        if "deploymentStrategy" in predictor:
            errors.append("customizing deploymentStrategy is only supported for raw deployment mode")
        if (metric or "concurrency") not in KPA_METRICS:
            errors.append(f"[{metric}] is not a supported metric")
        return errors
    return []


def update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """validateDeploymentMode on update (validation.go L83-106, L691-700)."""
    if mode(old) != mode(new):
        return [f"update rejected: deploymentMode cannot be changed from '{mode(old)}' to '{mode(new)}'"]
    return []


def storage_uri(isvc: dict[str, Any]) -> str | None:
    """GetStorageUri: the model's storageUri, or a custom container's STORAGE_URI (predictor_custom.go L75-88)."""
    predictor = isvc["spec"]["predictor"]
    if predictor.get("model"):
        return predictor["model"].get("storageUri")
    for container in predictor.get("containers", []):
        if container["name"] == "kserve-container":
            return next((e["value"] for e in container.get("env", []) if e["name"] == "STORAGE_URI"), None)
    return None


def pod_spec(isvc: dict[str, Any], runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pod spec KServe builds (components/predictor.go L419-447): the predictor's pod fields, and in the
    model form the runtime's container with the model's container fields merged over it."""
    predictor = isvc["spec"]["predictor"]
    pod = {k: copy.deepcopy(v) for k, v in predictor.items() if k not in KSERVE_ONLY}
    if predictor.get("model"):
        assert runtime is not None, "the model form needs its ServingRuntime"
        container = copy.deepcopy(runtime["spec"]["containers"][0])
        # MergeRuntimeContainers (controller/v1beta1/inferenceservice/utils/utils.go L250-262): a strategic
        # merge patch, so env entries merge by name with the InferenceService's winning, and args are
        # the runtime's followed by the InferenceService's.
        for key, value in predictor["model"].items():
            if key == "env":
                ours = {e["name"]: e for e in value}
                merged = [ours.pop(e["name"], e) for e in container.get("env", [])]
                container["env"] = merged + list(ours.values())
            elif key == "args":
                container["args"] = container.get("args", []) + list(value)
            elif key not in MODEL_ONLY:
                container[key] = copy.deepcopy(value)
        pod["containers"] = [container]
        pod.setdefault("volumes", copy.deepcopy(runtime["spec"].get("volumes", [])))
    return pod


def pod_metadata(isvc: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations of the pod template (components/predictor.go L498-519; Knative's revision
    template gets the same, reconcilers/knative/ksvc_reconciler.go L166-205)."""
    predictor = isvc["spec"]["predictor"]
    labels = {
        **isvc["metadata"].get("labels", {}),
        **predictor.get("labels", {}),
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
        "component": "predictor",
    }
    annotations = {**isvc["metadata"].get("annotations", {}), **predictor.get("annotations", {})}
    return labels, annotations


def mutated_annotations(annotations: dict[str, str], config: dict[str, str]) -> dict[str, str]:
    """InjectMetricsAggregator (pkg/webhook/admission/pod/metrics_aggregate_injector.go L94-129): the
    annotations win over the cluster's metricsAggregator config; "true" rewrites prometheus.io/port to the
    queue-proxy's 9091, or 9088 with aggregation (constants.go L131-133)."""
    result = dict(annotations)
    aggregate = result.setdefault(AGGREGATE, config.get("enableMetricAggregation", "false"))
    if result.setdefault(SCRAPE, config.get("enablePrometheusScraping", "false")) == "true":
        result["prometheus.io/port"] = "9088" if aggregate == "true" else "9091"
        result["prometheus.io/path"] = "/metrics"
    return result


def storage_initializer_user(isvc: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """The uid KServe's injected storage-initializer runs as, None for the image's own user.

    The init container is created without a securityContext (pkg/utils/storage.go L311-334, injected by
    storage_initializer_injector.go L541-551), so a pod-level runAsUser applies to it; its image runs as
    uid 1000 with HOME /home/kserve (python/storage-initializer.Dockerfile L55, L68). pvc:// mounts
    instead of downloading (L528-540).
    """
    uri = storage_uri(isvc)
    if uri is None or uri.startswith("pvc://"):
        return None
    return pod.get("securityContext", {}).get("runAsUser")


def local_model_cache_applies(cache: dict[str, Any], isvc: dict[str, Any]) -> bool:
    """setLocalModelLabel (inference_service_defaults.go L506-514 and on): the InferenceService's storage
    URI, a model's storageUri or a custom container's STORAGE_URI alike, equal to the cache's
    sourceModelUri or below it (pkg/apis/serving/v1alpha1/storage_uri_utils.go L23-35)."""
    uri = storage_uri(isvc)
    if uri is None:
        return False
    cached, uri = cache["spec"]["sourceModelUri"].rstrip("/"), uri.rstrip("/")
    return uri == cached or uri.startswith(cached + "/")
