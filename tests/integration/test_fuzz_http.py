"""Property-based fuzzing of the request body over HTTP: whatever a client sends, no 5xx, an envelope."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictor.api import FIELDS

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 90), st.sampled_from([0, 1, 511, 512, 513, 10**12]),
                    st.floats(-2, 2, allow_nan=False), st.sampled_from([1e-300, 1e300, -0.0]),
                    st.text(max_size=20))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                            max_size=3), max_leaves=6)
KEYS = st.sampled_from([*FIELDS, "temprature", "instances", "", "prompt "])
REQUEST = st.fixed_dictionaries({}, optional={"prompt": st.text(max_size=40) | VALUES}).flatmap(
    lambda base: st.dictionaries(KEYS, VALUES, max_size=4).map(lambda extra: {**extra, **base}))
# Plausible requests: the right types, values around and beyond every bound; these reach the engine.
PLAUSIBLE = st.fixed_dictionaries({"prompt": st.text(min_size=1, max_size=30)}, optional={
    "max_length": st.integers(1, 90) | st.sampled_from([512, 600]), "min_length": st.integers(0, 70),
    "do_sample": st.booleans(), "early_stopping": st.booleans(), "num_beams": st.integers(1, 9),
    "temperature": st.sampled_from([0, 1e-5, 0.5, 1.0, 100.0]), "top_k": st.integers(0, 60),
    "top_p": st.sampled_from([0.0, 0.5, 1.0]), "repetition_penalty": st.sampled_from([0.01, 1.0, 1.3, 100.0]),
    "length_penalty": st.sampled_from([-10.0, 0.0, 2.0, 10.0]), "encoder_no_repeat_ngram_size": st.integers(0, 4),
    "num_return_sequences": st.integers(1, 9), "max_time": st.sampled_from([0.001, 0.05, 5.0]),
    "num_beam_groups": st.integers(1, 4), "diversity_penalty": st.sampled_from([0.0, 1.0, 1000.0]),
    "remove_invalid_values": st.booleans()})
BODIES = st.one_of(PLAUSIBLE, st.lists(PLAUSIBLE, min_size=1, max_size=3), REQUEST, st.lists(REQUEST, max_size=3), st.fixed_dictionaries({"instances": st.lists(REQUEST, max_size=3)}),
                   VALUES)
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None,
                                 "application/octet-stream", "application/json; charset=latin-1"])


def check(response) -> None:
    """A real status (never 5xx) and the envelope; and the server keeps serving (autouse fixture)."""
    assert response.status_code < 500, response.text
    body = response.json()
    assert set(body) == {"status", "data", "message"}
    assert body["status"] == ("success" if response.status_code == 200 else "failed")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, content_type=CONTENT_TYPES)
def test_json_bodies_never_cause_a_5xx(server, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    check(server.client.post("/v1/models/gptj:predict", content=json.dumps(body).encode(), headers=headers))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), content_type=CONTENT_TYPES)
def test_arbitrary_bytes_never_cause_a_5xx(server, raw, content_type):
    headers = {"content-type": content_type} if content_type else {}
    check(server.client.post("/v1/models/gptj:predict", content=raw, headers=headers))
