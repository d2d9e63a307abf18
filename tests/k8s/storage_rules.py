"""How KServe v0.20.0 gets the weights into a predictor pod: which ClusterStorageContainer it picks, what a
LocalModelCache does to the URI, and whether the storage-initializer it injects survives a restricted
namespace and a 12 GB download. Each rule names the file and lines of kserve/kserve at v0.20.0.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from . import kserve_rules as kserve

# config/storagecontainers/default.yaml: what a cluster has unless an administrator changed it.
DEFAULT_STORAGE_CONTAINER: dict[str, Any] = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "ClusterStorageContainer",
    "metadata": {"name": "default"},
    "spec": {
        "container": {
            "name": "storage-initializer",
            "resources": {"requests": {"memory": "100Mi", "cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": "1"}},
        },
        "supportedUriFormats": [{"prefix": p} for p in ("gs://", "s3://", "hdfs://", "hf://", "webhdfs://")]
        + [{"regex": "https?://(.+)/(.+)"}],
        "workloadType": "initContainer",
    },
}
#: GPT-J-6B's float16 checkpoint; huggingface_hub streams it, but 1 GiB is less than one shard's buffers.
MIN_DOWNLOAD_MEMORY = 4 << 30
_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}


def uri_supported(spec: dict[str, Any], uri: str) -> bool:
    """StorageContainerSpec.IsStorageUriSupported (pkg/apis/serving/v1alpha1/storage_container_types.go L87-104)."""
    for fmt in spec["supportedUriFormats"]:
        if fmt.get("prefix"):
            if uri.startswith(fmt["prefix"]):
                return True
        elif fmt.get("regex") and re.search(fmt["regex"], uri):  # Go's regexp.MatchString: unanchored
            return True
    return False


def pick(uri: str, name: str | None, containers: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """GetStorageContainerSpec (pkg/webhook/admission/pod/storage_initializer_injector.go L123-152) and, for a
    name, GetStorageContainerSpecByName (L158-183): (the container or None, the webhook's error or None).
    A name has no fallback; without one the first match wins, in the order the API server lists: by name."""
    if name:
        found = [c for c in containers if c["metadata"]["name"] == name]
        if not found:
            return None, f'ClusterStorageContainer "{name}" not found'
        (chosen,) = found
        if chosen.get("disabled"):
            return None, f'ClusterStorageContainer "{name}" is disabled'
        if chosen["spec"].get("workloadType", "initContainer") != "initContainer":
            return None, f'ClusterStorageContainer "{name}" has workloadType "{chosen["spec"]["workloadType"]}"'
        if not uri_supported(chosen["spec"], uri):
            return None, f'ClusterStorageContainer "{name}" does not support storageUri "{uri}"'
        return chosen, None
    for candidate in sorted(containers, key=lambda c: c["metadata"]["name"]):
        spec = candidate["spec"]
        usable = not candidate.get("disabled") and spec.get("workloadType", "initContainer") == "initContainer"
        if usable and uri_supported(spec, uri):
            return candidate, None
    return None, None


def cached_uri(isvc: dict[str, Any], cache: dict[str, Any]) -> str:
    """The URI the pod mutator uses for a cached model (InjectStorageInitializer L716-737): the cache's PVC
    (named <cache>-<first node group>, inference_service_defaults.go L525-541), under models/<storage key>
    (local_model_cache_types.go GetStorageKey, L27-32), plus what the URI has below sourceModelUri."""
    source = cache["spec"]["sourceModelUri"]
    sub = (kserve.storage_uri(isvc) or "").removeprefix(source)
    sub = sub if sub.startswith("/") else "/" + sub
    pvc = f"{cache['metadata']['name']}-{cache['spec']['nodeGroups'][0]}"
    return f"pvc://{pvc}/models/{hashlib.sha256(source.encode()).hexdigest()[:16]}{sub}"


def storage_errors(
    isvc: dict[str, Any],
    containers: list[dict[str, Any]],
    caches: list[dict[str, Any]] = (),
    *,
    restricted: bool = False,
) -> list[str]:
    """What the pod mutator refuses, and what would kill the storage-initializer, for this InferenceService
    on a cluster with these ClusterStorageContainers (KServe's default among them) and LocalModelCaches."""
    uri = kserve.storage_uri(isvc)
    if uri is None:
        return []
    name = isvc["spec"]["predictor"].get("storageContainerName")
    cache = next((c for c in caches if kserve.local_model_cache_applies(c, isvc)), None)
    if cache is not None:
        uri = cached_uri(isvc, cache)
    chosen, error = pick(uri, name, [DEFAULT_STORAGE_CONTAINER, *containers])
    if error:
        return [error]
    if uri.startswith("pvc://") or chosen is None:
        return []  # the PVC is mounted; no init container is made (L526-540)
    return initializer_errors(chosen["spec"]["container"], chosen["metadata"]["name"], restricted)


def initializer_errors(container: dict[str, Any], name: str, restricted: bool) -> list[str]:
    """The injected init container is the storage container's spec.container merged over KServe's
    (pkg/utils/storage.go CreateInitContainerWithConfig L311-334, which sets no securityContext)."""
    errors = []
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory is None or quantity(memory) < MIN_DOWNLOAD_MEMORY:
        errors.append(
            f"storage container {name}: memory limit {memory} is too small for a 12 GB download (at least 4Gi)"
        )
    if restricted:
        errors += restricted_errors(container.get("securityContext", {}), f"storage container {name}")
    return errors


def restricted_errors(security: dict[str, Any], what: str) -> list[str]:
    """The restricted Pod Security Standard's per-container rules (runAsNonRoot and seccomp may come from
    the pod, which our InferenceServices set; these two may not)."""
    errors = []
    if security.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{what}: the restricted Pod Security Standard needs allowPrivilegeEscalation: false")
    if "ALL" not in security.get("capabilities", {}).get("drop", []):
        errors.append(f"{what}: the restricted Pod Security Standard needs capabilities.drop [ALL]")
    return errors


def uninstall_errors(storage_container: dict[str, Any], created_by_release: bool) -> list[str]:
    """A container a release creates is deleted with it, and every other release that names it then fails
    ("not found", GetStorageContainerSpecByName L160-163): Helm must keep it."""
    policy = storage_container["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
    if created_by_release and policy != "keep":
        return [
            f"ClusterStorageContainer {storage_container['metadata']['name']} would be deleted with the release "
            "that created it (helm.sh/resource-policy: keep is missing)"
        ]
    return []


def quantity(text: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([KMGT]i|[kMGT])?", str(text))
    assert match, f"not a quantity: {text}"
    return float(match.group(1)) * _UNITS[match.group(2) or ""]
