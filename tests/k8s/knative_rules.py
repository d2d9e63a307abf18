"""Knative Serving's admission rules for the pod spec KServe copies into a Knative Service.

Written from knative.dev/serving v0.48.1, the version kserve/kserve v0.20.0 requires (go.mod L54). Each
rule names the file and lines it follows. KServe copies the predictor's pod spec into the Knative
Service's revision template unchanged (kserve v0.20.0
pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go L192-216), so every field
Knative's webhook refuses makes the InferenceService fail in Knative mode. Knative's masks *copy* the
allowed fields and CheckDisallowedFields reports whatever the copy dropped: modelled here as
"every key present must be in the allowed set".
"""

from __future__ import annotations

import re
from typing import Any

# pkg/apis/config/features.go L82-117: the flags that are on unless config-features turns them off.
DEFAULT_ON = frozenset({"multi-container", "kubernetes.podspec-volumes-emptydir"})

# pkg/apis/serving/fieldmask.go L226-235 (PodSpecMask, always allowed) and L237-288 (behind a flag).
POD_ALWAYS = {
    "serviceAccountName",
    "containers",
    "volumes",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",
}
POD_BY_FLAG = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
    "hostIPC": "kubernetes.podspec-hostipc",
    "hostPID": "kubernetes.podspec-hostpid",
    "hostNetwork": "kubernetes.podspec-hostnetwork",
}
# fieldmask.go L306-341 (ContainerMask): lifecycle, stdin, tty and volumeDevices are dropped.
CONTAINER_FIELDS = {
    "name",
    "args",
    "command",
    "env",
    "workingDir",
    "envFrom",
    "image",
    "imagePullPolicy",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
    "startupProbe",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
}
# fieldmask.go L707-738 (SecurityContextMask); privileged only when false (L728-731).
CONTAINER_SECURITY = {
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "seccompProfile",
    "privileged",
}
# fieldmask.go L663-702 (PodSecurityContextMask, with kubernetes.podspec-securitycontext).
POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile"}
# fieldmask.go L51-86 (VolumeSourceMask).
VOLUME_ALWAYS = {"secret", "configMap", "projected"}
VOLUME_BY_FLAG = {
    "emptyDir": "kubernetes.podspec-volumes-emptydir",
    "persistentVolumeClaim": "kubernetes.podspec-persistent-volume-claim",
    "hostPath": "kubernetes.podspec-volumes-hostpath",
    "csi": "kubernetes.podspec-volumes-csi",
    "image": "kubernetes.podspec-volumes-image",
}
# fieldmask.go L375-391 (ProbeMask) and L396-409 (HandlerMask).
PROBE_FIELDS = {
    "exec",
    "httpGet",
    "tcpSocket",
    "grpc",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
    "terminationGracePeriodSeconds",
}
# k8s_validation.go L44-67: reserved paths, container names, env vars and ports (queue-proxy's 8012,
# 8013, 8022, 9090, 9091 and the profiling port 8008, knative.dev/networking's constants).
RESERVED_PATHS = {"/", "/dev", "/dev/log"}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
PORT_NAMES = {"", "h2c", "http1"}  # k8s_validation.go L75-79
# pkg/apis/config/defaults.go L44-45: max-revision-timeout-seconds unless config-defaults raises it.
MAX_REVISION_TIMEOUT = 600
# pkg/deployment/config.go L46-48: a revision not ready within this fails (deploy.go L366-372 reads the
# serving.knative.dev/progress-deadline annotation instead when set).
DEFAULT_PROGRESS_DEADLINE = 600
PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"


def _extra(obj: dict[str, Any], allowed: set[str], path: str) -> list[str]:
    return [f"must not set the field(s): {path}.{key}" for key in sorted(set(obj) - allowed)]


def pod_spec_errors(pod: dict[str, Any], flags: frozenset[str]) -> list[str]:
    """ValidatePodSpec (pkg/apis/serving/k8s_validation.go L391-436) on a revision template's spec."""
    flags = flags | DEFAULT_ON
    path = "spec.template.spec"
    allowed = POD_ALWAYS | {field for field, flag in POD_BY_FLAG.items() if flag in flags}
    errors = _extra(pod, allowed, path)
    if pod.get("automountServiceAccountToken") is True:  # fieldmask.go L232-235: only false
        errors.append(f"must not set the field(s): {path}.automountServiceAccountToken")
    if "securityContext" in pod and "kubernetes.podspec-securitycontext" in flags:
        errors += _extra(pod["securityContext"], POD_SECURITY, f"{path}.securityContext")
    volume_sources = VOLUME_ALWAYS | {source for source, flag in VOLUME_BY_FLAG.items() if flag in flags}
    for i, volume in enumerate(pod.get("volumes", [])):
        errors += _extra(volume, volume_sources | {"name"}, f"{path}.volumes[{i}]")
    containers = pod.get("containers", [])
    ports = [port for c in containers for port in c.get("ports", [])]
    if len(ports) > 1:  # k8s_validation.go L501-533: one serving port across all containers
        errors.append("more than one container port is set")
    for i, container in enumerate(containers):
        errors += container_errors(container, flags, f"{path}.containers[{i}]")
    return errors


def container_errors(container: dict[str, Any], flags: frozenset[str], path: str) -> list[str]:
    """validate and ValidateUserContainer (k8s_validation.go L589-646, L686-807, L809-910)."""
    errors = _extra(container, CONTAINER_FIELDS, path)
    if container.get("name") == "queue-proxy":
        errors.append(f'{path}.name: "queue-proxy" is a reserved container name')
    errors += [
        f'{path}.env: "{e["name"]}" is a reserved environment variable'
        for e in container.get("env", [])
        if e["name"] in RESERVED_ENV
    ]
    security = container.get("securityContext", {})
    errors += _extra(security, CONTAINER_SECURITY, f"{path}.securityContext")
    if security.get("privileged") is True:
        errors.append(f"must not set the field(s): {path}.securityContext.privileged")
    if security.get("capabilities", {}).get("add") and "kubernetes.containerspec-addcapabilities" not in flags:
        errors.append(f"must not set the field(s): {path}.securityContext.capabilities.add")
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"].rstrip("/") in RESERVED_PATHS or mount["mountPath"] == "/":
            errors.append(f'{path}.volumeMounts: mountPath "{mount["mountPath"]}" is a reserved path')
    port_name = ""
    if container.get("ports"):
        port = container["ports"][0]
        port_name = port.get("name", "")
        if port.get("containerPort") in RESERVED_PORTS:
            errors.append(f"{path}.ports.containerPort: {port['containerPort']} is a reserved port")
        if port_name not in PORT_NAMES:
            errors.append(f"{path}.ports: Port name {port_name} is not allowed")
        if port.get("protocol", "TCP") != "TCP":
            errors.append(f"{path}.ports.protocol: invalid value")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if probe is None:
            continue
        errors += _extra(probe, PROBE_FIELDS, f"{path}.{probe_name}")
        port = probe.get("httpGet", {}).get("port")
        if probe_name != "startupProbe" and isinstance(port, str) and port != port_name:
            errors.append(f"{path}.{probe_name}.httpGet.port: Probe port must match container port")
    return errors


def revision_errors(annotations: dict[str, str], timeout: int | None) -> list[str]:
    """RevisionSpec/RevisionTemplateSpec checks (pkg/apis/serving/v1/revision_validation.go L66-78,
    L173-184 for the timeout, L222-245 for the progress deadline)."""
    errors = []
    if timeout is not None and not 0 <= timeout <= MAX_REVISION_TIMEOUT:
        errors.append(f"expected 0 <= {timeout} <= {MAX_REVISION_TIMEOUT}: spec.template.spec.timeoutSeconds")
    deadline = annotations.get(PROGRESS_DEADLINE)
    if deadline is not None and progress_deadline_seconds(annotations) is None:
        errors.append(f"invalid value: {deadline}: metadata.annotations.{PROGRESS_DEADLINE}")
    # pkg/apis/autoscaling/annotation_validation.go L135-148: a Go duration in [0, WindowMax = 1h]
    # (register.go L144), at second precision.
    delay = annotations.get(SCALE_DOWN_DELAY)
    if delay is not None:
        seconds = progress_deadline_seconds({PROGRESS_DEADLINE: delay})
        if seconds is None:
            errors.append(f"invalid value: {delay}: metadata.annotations.{SCALE_DOWN_DELAY}")
        elif seconds > 3600:
            errors.append(f"expected 0s <= {delay} <= 1h0m0s: metadata.annotations.{SCALE_DOWN_DELAY}")
    return errors


SCALE_DOWN_DELAY = "autoscaling.knative.dev/scale-down-delay"


def progress_deadline_seconds(annotations: dict[str, str]) -> int | None:
    """The revision's progress deadline: the annotation (a Go duration at second precision) or 600 s."""
    value = annotations.get(PROGRESS_DEADLINE)
    if value is None:
        return DEFAULT_PROGRESS_DEADLINE
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
    if not value or not match:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds
