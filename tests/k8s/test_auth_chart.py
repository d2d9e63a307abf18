"""The chart's API keys (auth.existingSecret) and engine health: the Secret mounted as the keys file,
the helm test and NOTES using it, prod turning it on; the liveness timing and the engine alert."""

from __future__ import annotations

import helm_python
import pytest

from predictor.settings import parse_settings

from .kube import by_kind, env_of, objects, render, validate, values_for

SECRET = {"auth": {"existingSecret": "team-keys", "existingSecretKey": "api-keys.txt"}}


def predictor(objs):
    (isvc,) = by_kind(objs, "InferenceService")
    (container,) = isvc["spec"]["predictor"]["containers"]
    return isvc["spec"]["predictor"], container


def settings_of(container):
    return parse_settings(container["args"], {k: v for k, v in env_of(container).items() if k.startswith("GPTJ_")})


def test_off_by_default():
    objs = objects(render())
    pod, container = predictor(objs)
    assert "GPTJ_API_KEYS_FILE" not in env_of(container) and settings_of(container).operations.api_keys_file is None
    assert all(v["name"] != "api-keys" for v in pod["volumes"])
    (test_pod,) = by_kind(objs, "Pod")
    assert "env" not in test_pod["spec"]["containers"][0]


def test_the_secret_is_mounted_read_only_as_the_keys_file():
    objs = objects(render(SECRET))
    for obj in objs:
        validate(obj)
    pod, container = predictor(objs)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"] == {
        "secretName": "team-keys",
        "items": [{"key": "api-keys.txt", "path": "keys"}],
        "defaultMode": 0o440,
    }
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    assert mount == {"name": "api-keys", "mountPath": "/etc/gptj/auth", "readOnly": True}  # no subPath: updates arrive
    assert str(settings_of(container).operations.api_keys_file) == "/etc/gptj/auth/keys"


def test_the_helm_test_and_the_notes_use_the_key():
    rendered = render(SECRET)
    (test_pod,) = by_kind(objects(rendered), "Pod")
    (container,) = test_pod["spec"]["containers"]
    assert container["env"] == [{"name": "GPTJ_API_KEYS_FILE", "value": "/etc/gptj/auth/keys"}]
    assert container["volumeMounts"] == [{"name": "api-keys", "mountPath": "/etc/gptj/auth", "readOnly": True}]
    (volume,) = test_pod["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "team-keys"  # a file, not an environment variable (CKV_K8S_35)
    notes = rendered["gptj/templates/NOTES.txt"]
    template = '{{index .data "api-keys.txt" | base64decode}}'
    assert f"kubectl -n ml get secret team-keys -o go-template='{template}'" in notes
    assert '-H "Authorization: Bearer ${API_KEY}"' in notes


def test_the_runtime_form_mounts_it_too():
    objs = objects(render({**SECRET, "predictorForm": "runtime", "servingRuntime": {"create": True}}))
    (runtime,) = by_kind(objs, "ServingRuntime")
    assert any(v["name"] == "api-keys" for v in runtime["spec"]["volumes"])
    assert any(m["name"] == "api-keys" for m in runtime["spec"]["containers"][0]["volumeMounts"])
    (isvc,) = by_kind(objs, "InferenceService")
    assert {"name": "GPTJ_API_KEYS_FILE", "value": "/etc/gptj/auth/keys"} in isvc["spec"]["predictor"]["model"]["env"]


def test_prod_turns_it_on():
    _, container = predictor(objects(render(values_for("prod"))))
    assert env_of(container)["GPTJ_API_KEYS_FILE"] == "/etc/gptj/auth/keys"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"auth": {"secret": "x"}}, "additional properties 'secret' not allowed"),
        ({"auth": {"existingSecret": "x", "existingSecretKey": "a/b"}}, "/auth/existingSecretKey"),
        ({"serving": {"engineStallSeconds": 0}}, "/serving/engineStallSeconds"),
    ],
)
def test_schema_rejects_bad_values(values, message):
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(values)
    assert message in str(caught.value)


def test_a_failed_engine_restarts_the_pod_within_about_a_minute():
    _, container = predictor(objects(render({"serving": {"engineStallSeconds": 60}})))
    assert settings_of(container).operations.engine_stall_s == 60
    probe = container["livenessProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/live"  # 503 once the engine failed
    assert probe["periodSeconds"] * probe["failureThreshold"] == 60


def test_the_engine_alert():
    (rule,) = by_kind(objects(render(values_for("prod"))), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    alert = alerts["GPTJEngineUnhealthy"]
    assert alert["expr"].strip() == (
        'min by (pod) (min_over_time(gptj_engine_healthy{namespace="ml", pod=~"gptj-predictor.*"}[15m])) == 0'
    )
    assert alert["labels"]["severity"] == "critical" and "for" not in alert
    assert alert["annotations"]["summary"] == "GPT-J's engine failed in pod {{ $labels.pod }}; liveness restarts it"
