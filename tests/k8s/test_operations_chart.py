"""The chart's operational parts: shutdown timing, serving settings, dashboard and alerts."""

from __future__ import annotations

import json
import re

import helm_python
import promql_parser
import pytest
from prometheus_client import CollectorRegistry

from predictor.settings import parse_settings
from predictor.telemetry.metrics import Metrics

from .kube import by_kind, env_of, objects, render, validate, values_for


def exported_metric_names() -> set[str]:
    """Every series name the predictor exports (histograms and counters with their suffixes)."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = {"gptj_gpu_memory_bytes"}  # exported on CUDA only (Metrics.watch_gpu_memory)
    for family in registry.collect():
        names |= {sample.name for sample in family.samples}
        names.add(family.name)
    return names


def queried_metrics(promql: str) -> set[str]:
    return set(re.findall(r"\b(gptj_[a-z_]+)", promql))


def parsed_selectors(promql: str) -> list:
    """The vector selectors of a PromQL expression, parsed as Prometheus parses it (ValueError if invalid)."""
    selectors = []
    promql_parser.walk(
        promql_parser.parse(promql),
        lambda node: selectors.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return selectors


@pytest.fixture(scope="module")
def prod():
    return objects(render(values_for("prod")))


def test_stop_sequence_fits_the_grace_period(prod):
    # Standard mode: our preStop sleep, then the drain, within the pod's grace period.
    (isvc,) = by_kind(objects(render({})), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    drain = int(env_of(container)["GPTJ_DRAIN_TIMEOUT_SECONDS"])
    assert predictor["terminationGracePeriodSeconds"] >= 5 + drain + 5
    # Knative mode: Knative's preStop waits for queue-proxy's 30 s drain; the grace period is the timeout.
    (isvc,) = by_kind(prod, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert "lifecycle" not in container and "terminationGracePeriodSeconds" not in predictor
    assert predictor["timeout"] >= 30 + int(env_of(container)["GPTJ_DRAIN_TIMEOUT_SECONDS"]) + 5


@pytest.mark.parametrize(
    "values, message",
    [
        ({"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds (30) must be at least"),
        ({"serving": {"requestTimeoutSeconds": 300}}, "serving.requestTimeoutSeconds must be below timeoutSeconds"),
    ],
)
def test_inconsistent_timing_is_refused(values, message):
    with pytest.raises(helm_python.HelmRenderError) as caught:
        render(values)
    assert message in str(caught.value)


def test_serving_settings_reach_the_predictor(prod):
    (isvc,) = by_kind(prod, "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    settings = parse_settings(container["args"], {k: v for k, v in env_of(container).items() if k.startswith("GPTJ_")})
    # auto: on the GPU the KV cache sized from the free memory sets the bound (32 where none is sized)
    assert settings.batch.auto_batch_size and settings.batch.max_batch_size == 32
    assert settings.batch.max_batch_tokens == 16384
    ops = settings.operations
    assert (ops.max_queued_requests, ops.request_timeout_s, ops.drain_timeout_s, ops.log_prompts) == (
        256,
        290,
        30,
        False,
    )
    speed = settings.speed
    assert (speed.decode_path, speed.cuda_graphs, speed.kv_cache_memory_fraction) == ("auto", True, 0.92)


def test_the_decode_path_settings_reach_the_predictor():
    (isvc,) = by_kind(
        objects(render({"serving": {"decodePath": "dynamic", "cudaGraphs": False, "kvCacheMemoryFraction": 0.5}})),
        "InferenceService",
    )
    (container,) = isvc["spec"]["predictor"]["containers"]
    speed = parse_settings(
        container["args"], {k: v for k, v in env_of(container).items() if k.startswith("GPTJ_")}
    ).speed
    assert (speed.decode_path, speed.cuda_graphs, speed.kv_cache_memory_fraction) == ("dynamic", False, 0.5)


def test_a_batch_bound_given_in_the_values_reaches_the_predictor_as_set():
    (isvc,) = by_kind(objects(render({"serving": {"maxBatchSize": 64}})), "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    batch = parse_settings(
        container["args"], {k: v for k, v in env_of(container).items() if k.startswith("GPTJ_")}
    ).batch
    assert (batch.max_batch_size, batch.auto_batch_size) == (64, False)


def test_dashboard_is_a_labelled_configmap_querying_real_metrics(prod):
    (configmap,) = by_kind(prod, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["gptj.json"])
    titles = {panel["title"] for panel in dashboard["panels"]}
    for needed in (
        "Requests per second by outcome",
        "Generated tokens per second",
        "Request time (arrival to answer)",
        "Time to first token",
        "Queue and running requests",
        "Batch size (sequences per decode step)",
        "Errors by outcome",
        "GPU memory",
    ):
        assert needed in titles
    queried = set().union(*(queried_metrics(t["expr"]) for p in dashboard["panels"] for t in p["targets"]))
    assert queried and queried <= exported_metric_names(), queried - exported_metric_names()


def test_alerts(prod):
    (rule,) = by_kind(prod, "PrometheusRule")
    validate(rule)
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "GPTJHighErrorRate",
        "GPTJQueueSaturated",
        "GPTJHighLatency",
        "GPTJEngineUnhealthy",
        "GPTJMetricsAbsent",
    }
    queried = {selector.name for r in alerts.values() for selector in parsed_selectors(r["expr"])}
    assert queried <= exported_metric_names(), queried - exported_metric_names()
    assert "> 204.8" in alerts["GPTJQueueSaturated"]["expr"]  # 0.8 x 256 queued prompts
    assert "> 0.05" in alerts["GPTJHighErrorRate"]["expr"] and "> 30" in alerts["GPTJHighLatency"]["expr"]
    assert 'namespace="ml", pod=~"gptj-predictor.*"' in alerts["GPTJHighLatency"]["expr"]


def test_a_misspelled_alert_field_is_caught(prod):
    import jsonschema

    (rule,) = by_kind(prod, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["labelz"] = {}
    with pytest.raises(jsonschema.ValidationError, match="labelz"):
        validate(rule)


# --- KEDA: scaling on the predictor's own queue -----------------------------------------------------

KEDA = {"autoscaling": {"standardClass": "keda"}, "replicas": {"min": 1, "max": 4}}


def keda_metric(values):
    (isvc,) = by_kind(objects(render(values)), "InferenceService")
    validate(isvc)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4) and "scaleMetric" not in predictor
    (metric,) = predictor["autoScaling"]["metrics"]
    return metric


def test_keda_scales_on_prompts_waiting_and_generating_in_this_release():
    metric = keda_metric(KEDA)
    assert metric["type"] == "External"
    external = metric["external"]
    assert external["metric"]["backend"] == "prometheus"
    assert external["metric"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert external["target"] == {"type": "Value", "value": "32"}  # KServe passes it as KEDA's threshold
    selectors = parsed_selectors(external["metric"]["query"])
    assert {s.name for s in selectors} == {"gptj_queue_size", "gptj_requests_running"} <= exported_metric_names()
    for selector in selectors:  # only this release's predictor pods, as named by KServe
        matchers = {m.name: (m.op, m.value) for m in selector.matchers.matchers}
        assert matchers["namespace"] == (promql_parser.MatchOp.Equal, "ml")
        op, pattern = matchers["pod"]
        assert op == promql_parser.MatchOp.Re and re.fullmatch(pattern, "gptj-predictor-7d9f8-x2k4p")
        assert not re.fullmatch(pattern, "gptj-other-predictor-7d9f8-x2k4p")


def test_keda_settings_reach_the_inferenceservice():
    query = "sum(gptj_queue_size)"
    metric = keda_metric(
        {
            **KEDA,
            "autoscaling": {
                "standardClass": "keda",
                "keda": {"serverAddress": "https://prom.example:9091/prefix", "query": query, "target": 8},
            },
        }
    )
    assert metric["external"]["metric"]["query"] == query
    assert metric["external"]["metric"]["serverAddress"] == "https://prom.example:9091/prefix"
    assert metric["external"]["target"]["value"] == "8"


@pytest.mark.parametrize(
    "query", ['sum(gptj_queue_size{namespace="ml"', "sum by (pod gptj_queue_size)", "rate(gptj_queue_size)"]
)
def test_invalid_promql_is_caught(query):
    with pytest.raises(ValueError):
        parsed_selectors(query)


def test_a_query_over_a_metric_we_do_not_export_is_caught():
    metric = keda_metric(
        {**KEDA, "autoscaling": {"standardClass": "keda", "keda": {"query": "sum(gptj_queue_length)"}}}
    )
    names = {s.name for s in parsed_selectors(metric["external"]["metric"]["query"])}
    assert names - exported_metric_names() == {"gptj_queue_length"}
