"""What the rest of the platform does with a release: the GPU pod's device, the runtime's flags, node
drains, Prometheus (scrape jobs, KEDA's query, alerts), Istio, and autoscaling against a slow cold start.
Each rule names the upstream file it follows; ``release_errors`` runs them all over rendered objects.
"""

from __future__ import annotations

import re
from typing import Any

from . import kserve_rules as kserve
from .kube import ROOT

#: Scheduling, pulling the image, downloading 12 GB and loading: what a new pod costs without a cache.
COLD_START_SECONDS = 900
#: A GPU pod's CPU is mostly idle: an HPA utilization target below this scales to max at once.
MIN_UTILIZATION_PERCENT = 50
# istio 1.29 pkg/kube/inject/webhook.go applyPrometheusMerge (L884-921): the agent's status port;
# pilot/pkg/model/listener.go L42: ambient's HBONE port.
ISTIO_AGENT_PORT, HBONE_PORT = 15020, 15008
_METRIC = re.compile(r"\b(gptj_[a-z_]+)\s*\{")


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage that the predictor reads (GPTJ_*)."""
    text = ROOT.joinpath("Dockerfile").read_text().split("\nFROM ")[-1].replace("\\\n", " ")
    return dict(re.findall(r"\b(GPTJ_[A-Z_]+)=(\S+)", text))


def settings_of(container: dict[str, Any], isvc_name: str):
    """What the predictor makes of a container's args and env, on top of the image's env (``{{.Name}}``
    rendered as KServe does for a runtime, with the InferenceService's metadata)."""
    from predictor.settings import parse_settings

    args = [arg.replace("{{.Name}}", isvc_name) for arg in container.get("args", [])]
    env = {**image_env(), **{e["name"]: e["value"] for e in container.get("env", []) if e["name"].startswith("GPTJ_")}}
    return parse_settings(args, env)


def gpu_errors(isvc: dict[str, Any], runtime: dict[str, Any] | None = None) -> list[str]:
    """A pod that asks for a GPU must refuse to start without one (predictor/loading/device.py)."""
    (container,) = kserve.pod_spec(isvc, runtime)["containers"]
    limits = container.get("resources", {}).get("limits", {})
    if not any(name.endswith("/gpu") for name in limits):
        return []
    device = settings_of(container, isvc["metadata"]["name"]).device
    if device != "cuda":
        return [f"the pod asks for a GPU but runs with --device {device}: without CUDA it would go Ready on the CPU"]
    return []


def runtime_setting_errors(runtime: dict[str, Any]) -> list[str]:
    """A runtime's args beat the InferenceService's env (a flag wins over its variable, and KServe only
    appends args, kserve v0.20.0 utils.go MergeRuntimeContainers L250-262); and gRPC is said, not implied."""
    from predictor.settings import _OPTIONS

    ours = {f"--{flag}": env for flag, env, *_ in _OPTIONS}
    (container,) = runtime["spec"]["containers"]
    errors = []
    for arg in container.get("args", []):
        flag = arg.split("=", 1)[0]
        if flag in ours:
            errors.append(f"runtime arg {arg} overrides every InferenceService's {ours[flag]} (flags beat env)")
    settings = settings_of(container, "gptj")
    declared = {p["containerPort"] for p in container.get("ports", [])}
    if settings.server.enable_grpc and settings.server.grpc_port not in declared:
        errors.append(f"gRPC listens on {settings.server.grpc_port}, a port the runtime does not declare")
    return errors


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def pdb_errors(isvc: dict[str, Any], pdbs: list[dict[str, Any]]) -> list[str]:
    """Two or more replicas: a drain may take one at a time (maxUnavailable 1), and a pod that is not
    Ready must not block it (unhealthyPodEvictionPolicy AlwaysAllow). One replica: no budget."""
    labels, _ = kserve.pod_metadata(isvc)
    mine = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
    replicas = isvc["spec"]["predictor"].get("minReplicas", 1)
    if replicas < 2:
        return ["a PodDisruptionBudget for one replica blocks drains or protects nothing"] if mine else []
    if not mine:
        return [f"{replicas} replicas and no PodDisruptionBudget: one node drain may evict them all"]
    errors = []
    for pdb in mine:
        if pdb["spec"].get("maxUnavailable") != 1:
            errors.append("the PodDisruptionBudget must allow exactly one pod down (maxUnavailable: 1)")
        if pdb["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            errors.append("the PodDisruptionBudget lets a pod that is not Ready block a drain (AlwaysAllow)")
    return errors


def monitoring_errors(
    isvc: dict[str, Any], podmonitors: list[dict[str, Any]], servicemonitors: list[dict[str, Any]], mesh: str
) -> list[str]:
    """One scrape job per pod, with targets: Prometheus keeps a copy of every series per job that finds
    the pod (the annotations' job, the Service KServe annotates in Standard mode (kserve v0.20.0
    reconcilers/service/service_reconciler.go createDefaultSvc, ObjectMeta: componentMeta), a PodMonitor)."""
    labels, annotations = kserve.pod_metadata(isvc)
    pods = [m for m in podmonitors if selects(m["spec"]["selector"], labels)]
    errors = []
    if pods and servicemonitors:
        errors.append("a PodMonitor and a ServiceMonitor scrape the same pods: every series twice")
    if pods and annotations.get("prometheus.io/scrape") == "true" and mesh != "istio-sidecar":
        errors.append("a PodMonitor beside prometheus.io/scrape annotations: two scrape jobs, every series twice")
    if servicemonitors and kserve.mode(isvc) == "Knative":
        # knative/serving v0.48.1 pkg/reconciler/serverlessservice/resources/services.go: its Services
        # target queue-proxy (8012/8013, 8112, 9090, 9091), never the user container's port.
        errors.append("a ServiceMonitor finds no targets in Knative mode (Knative's Services target queue-proxy)")
    for monitor in pods:
        ports = {e.get("portNumber") for e in monitor["spec"]["podMetricsEndpoints"]}
        if mesh == "istio-sidecar" and ports != {ISTIO_AGENT_PORT}:
            errors.append(f"under an Istio sidecar STRICT mTLS refuses a plain scrape of {ports}: scrape 15020")
    return errors


def keda_query_errors(isvc: dict[str, Any]) -> list[str]:
    """Every series in KEDA's query is taken once per pod (max by (pod)) before it is summed."""
    errors = []
    for metric in isvc["spec"]["predictor"].get("autoScaling", {}).get("metrics", []):
        query = (metric.get("external") or {}).get("metric", {}).get("query", "")
        for match in _METRIC.finditer(query):
            if not re.search(r"max by \(pod\)\s*\(\s*$", query[: match.start()]):
                errors.append(f"KEDA's query sums {match.group(1)} over every scrape job's copy (max by (pod) first)")
    return errors


def alert_errors(isvc: dict[str, Any], rules: list[dict[str, Any]]) -> list[str]:
    """With pods that should be there, losing their metrics must page: every other alert goes quiet."""
    if not rules or isvc["spec"]["predictor"].get("minReplicas", 1) == 0:
        return []
    exprs = [r.get("expr", "") for rule in rules for g in rule["spec"]["groups"] for r in g["rules"]]
    if not any(re.search(r"absent_over_time\(gptj_engine_healthy\{[^}]*\}\[10m\]\)", e) for e in exprs):
        return ["no alert fires when the metrics disappear (absent_over_time(gptj_engine_healthy{...}[10m]))"]
    return []


def network_policy_errors(policies: list[dict[str, Any]], mesh: str, monitoring_namespace: str) -> list[str]:
    """What a mesh needs through the NetworkPolicy: Prometheus to the sidecar's agent, peers over HBONE."""
    errors = []
    for policy in policies:
        rules = policy["spec"].get("ingress", [])
        if mesh == "istio-sidecar" and not _allows(rules, ISTIO_AGENT_PORT, monitoring_namespace):
            errors.append(f"Prometheus ({monitoring_namespace}) cannot reach the Istio agent's 15020")
        if mesh == "istio-ambient" and not _allows(rules, HBONE_PORT, monitoring_namespace):
            errors.append("meshed peers (ambient) cannot reach the pod's HBONE port 15008")
    return errors


def _allows(rules: list[dict[str, Any]], port: int, namespace: str) -> bool:
    for rule in rules:
        ports = {p.get("port") for p in rule.get("ports", [])}
        peers = [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in rule.get("from", [])]
        if port in ports and {"kubernetes.io/metadata.name": namespace} in peers:
            return True
    return False


def autoscaling_errors(isvc: dict[str, Any]) -> list[str]:
    """Scale-down sized for a slow start, a utilization target that is one, and no scale to zero that
    the activator cannot wait for (knative/serving v0.48.1 cmd/activator/main.go L232-246)."""
    predictor, annotations = isvc["spec"]["predictor"], isvc["metadata"].get("annotations", {})
    autoscaler = annotations.get("serving.kserve.io/autoscalerClass")
    errors = []
    if kserve.mode(isvc) == "Knative":
        delay = _seconds(annotations.get("autoscaling.knative.dev/scale-down-delay", "0s"))
        if delay < COLD_START_SECONDS:
            errors.append(f"Knative's scale-down-delay {delay} s is shorter than a {COLD_START_SECONDS} s cold start")
        if predictor.get("minReplicas", 1) == 0 and predictor.get("timeout", 300) < COLD_START_SECONDS:
            errors.append(
                f"scale to zero: the activator holds a request at most timeoutSeconds ({predictor.get('timeout', 300)}),"
                f" less than a {COLD_START_SECONDS} s cold start"
            )
    elif autoscaler in ("keda", "hpa"):
        window = predictor.get("autoScaling", {}).get("behavior", {}).get("scaleDown", {})
        if window.get("stabilizationWindowSeconds", 300) < COLD_START_SECONDS:
            errors.append(
                f"{autoscaler}'s scale-down stabilization is shorter than a {COLD_START_SECONDS} s cold start"
            )
    if autoscaler == "hpa" and predictor.get("scaleTarget", 80) < MIN_UTILIZATION_PERCENT:
        # reconcilers/hpa/hpa_reconciler.go L105-136: scaleTarget is the averageUtilization in percent.
        errors.append(f"the HPA would aim at {predictor['scaleTarget']}% utilization: scaleTarget is a percentage")
    return errors


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, f"not a duration: {duration}"
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def release_errors(
    objs: list[dict[str, Any]],
    runtime: dict[str, Any] | None = None,
    *,
    mesh: str = "none",
    monitoring_namespace: str = "monitoring",
) -> list[str]:
    """Every rule here over one rendered release (its InferenceService and what lies beside it)."""

    def kind(name: str) -> list[dict[str, Any]]:
        return [o for o in objs if o["kind"] == name]

    (isvc,) = kind("InferenceService")
    errors = gpu_errors(isvc, runtime) + pdb_errors(isvc, kind("PodDisruptionBudget"))
    errors += monitoring_errors(isvc, kind("PodMonitor"), kind("ServiceMonitor"), mesh)
    errors += keda_query_errors(isvc) + alert_errors(isvc, kind("PrometheusRule")) + autoscaling_errors(isvc)
    errors += network_policy_errors(kind("NetworkPolicy"), mesh, monitoring_namespace)
    if runtime is not None:
        errors += runtime_setting_errors(runtime)
    return errors
