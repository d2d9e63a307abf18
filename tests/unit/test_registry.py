"""One adapter per protocol: every route resolves to its protocol, and error bodies, 401s, request
tracking and the model's dispatch agree on it (protocols/registry.py); BadRequest knows its field."""

from __future__ import annotations

import grpc
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from kserve.protocol.infer_type import InferInput, InferRequest

from predictor import errors
from predictor.edge import grpc_status, routes, web
from predictor.protocols import openai as oa
from predictor.protocols import plan, registry, seed
from predictor.settings import Limits

#: KServe's own routes beside ours (kserve/protocol/rest/server.py), and the protocol each speaks.
KSERVE_ROUTES = {
    "/v1/models": "seed",
    "/v1/models/{model_name}": "seed",
    "/v1/models/{model_name}:predict": "seed",
    "/v2": "seed",  # v2 server metadata: no trailing slash, so the envelope (as before the registry)
    "/v2/models": "v2",
    "/v2/models/{model_name}/infer": "v2",
    "/v2/models/{model_name}/versions/{model_version}/infer": "v2",
    "/v2/models/{model_name}/ready": "v2",
}
TAGS = {"V1": "seed", "V2": "v2", "OpenAI": "openai"}


def our_routes() -> list[APIRoute]:
    app = FastAPI()
    routes.register(app, model=None)  # the model is only read when a route is called
    return [route for route in app.routes if isinstance(route, APIRoute) and route.include_in_schema]


def test_every_route_we_serve_is_under_its_protocols_prefix_and_tagged_with_it():
    served = our_routes()
    assert {route.path for route in served} >= {"/openai/v1/completions", "/v1/models/{model_name}:stream"}
    for route in served:
        if route.path == "/":  # liveness: no protocol's, the envelope
            assert registry.for_path(route.path) is registry.SEED
            continue
        adapter = registry.for_path(route.path)
        assert route.path.startswith(adapter.prefixes) and route.tags == [adapter.tag], route.path
        assert TAGS[adapter.tag] == adapter.name


@pytest.mark.parametrize("path, name", [*KSERVE_ROUTES.items(), *((p, None) for p in routes.INFERENCE_ROUTES)])
def test_kserves_routes_and_the_inference_routes_resolve_to_their_protocol(path, name):
    expected = name or {"/v1/": "seed", "/v2/": "v2", "/openai/": "openai"}[path[: path.index("/", 1) + 1]]
    assert registry.for_path(path).name == expected


def test_the_inference_routes_are_what_tracking_counts():
    for path in routes.INFERENCE_ROUTES:
        assert web.is_inference({"method": "POST", "path": path.replace("{model_name}", "gptj")})
        assert not web.is_inference({"method": "GET", "path": path})
    assert not web.is_inference({"method": "POST", "path": "/openai/tokenize"})
    assert not web.is_inference({"method": "POST", "path": "/v2/repository/index"})


def test_no_prefix_shadows_another():
    prefixes = [prefix for adapter in registry.PROTOCOLS for prefix in adapter.prefixes]
    assert all(not a.startswith(b) for a in prefixes for b in prefixes if a != b)


UNKNOWN = errors.BadRequest("top_a: unknown field", field="top_a")


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/models/gptj:predict", {"status": "failed", "data": None, "message": "top_a: unknown field"}),
        ("/v1/models/gptj:stream", {"status": "failed", "data": None, "message": "top_a: unknown field"}),
        ("/v2/models/gptj/infer", {"error": "top_a: unknown field"}),
        (
            "/openai/v1/completions",
            {
                "error": {
                    "message": "top_a: unknown field",
                    "type": "invalid_request_error",
                    "param": "top_a",
                    "code": 400,
                }
            },
        ),
        ("/nowhere", {"status": "failed", "data": None, "message": "top_a: unknown field"}),
    ],
)
def test_an_unknown_field_gets_each_protocols_own_body_from_its_adapter(path, body):
    response = web.error_response(UNKNOWN, path)
    assert response.status_code == 400 and response.body == web.JSONResponse(body).body
    assert registry.for_path(path).error(errors.classify(UNKNOWN)) == body
    # a 401 on the same path takes the same adapter (edge/auth.py's refusals go through error_response)
    refused = errors.classify(errors.Unauthorized("invalid API key", invalid=True))
    assert web.error_body(refused, path) == registry.for_path(path).error(refused)


def test_grpc_gets_the_status_matching_the_http_one():
    assert registry.GRPC.error(errors.classify(UNKNOWN)) == ("INVALID_ARGUMENT", "top_a: unknown field")
    status = grpc_status.status_error(UNKNOWN)
    assert status.status_code == grpc.StatusCode.INVALID_ARGUMENT and status.details == "top_a: unknown field"


def infer(from_grpc: bool) -> InferRequest:
    prompt = InferInput("prompt", [1], "BYTES", ["Hi"])
    return InferRequest(model_name="gptj", infer_inputs=[prompt], from_grpc=from_grpc)


def test_the_model_dispatches_on_the_adapter_of_its_payload():
    assert registry.for_payload(infer(from_grpc=True)) is registry.GRPC
    assert registry.for_payload(infer(from_grpc=False)) is registry.V2
    assert registry.for_payload(b'{"prompt": "Hi"}') is registry.SEED
    assert registry.for_payload([{"prompt": "Hi"}]) is registry.SEED
    (parsed,) = registry.V2.parse(infer(False), None, 8)
    assert parsed == registry.SEED.parse(b'{"prompt": "Hi"}', "application/json", 8)[0]


@pytest.mark.parametrize(
    "raise_it, field, index, item",
    [
        (lambda: seed.parse([{"prompt": "a"}, {"prompt": "b", "top_k": -1}], 8), "top_k", None, 1),
        (lambda: seed.parse({"prompt": "a", "stop_token_ids": [1, -2]}, 8), "stop_token_ids", None, None),
        (
            lambda: plan.check_vocabulary(
                seed.parse([{"prompt": "a"}, {"prompt": "b", "stop_token_ids": [1, 10**6]}], 8), 100
            ),
            "stop_token_ids",
            1,
            1,
        ),
        (lambda: oa.parse({"model": "gptj", "prompt": ["a", "\ud800"]}, Limits()), "prompt", 1, None),
        (lambda: oa.parse({"model": "gptj", "prompt": "a", "n": 99}, Limits()), "n", None, None),
        (
            lambda: oa.parse({"model": "gptj", "prompt": "a", "structured_outputs": {}}, Limits()),
            "structured_outputs",
            None,
            None,
        ),
        (lambda: oa.parse({"model": "gptj", "prompt": "a", "min_tokens": 20}, Limits()), "min_tokens", None, None),
    ],
)
def test_a_bad_request_carries_its_field_from_where_it_was_raised(raise_it, field, index, item):
    with pytest.raises(errors.BadRequest) as caught:
        raise_it()
    assert (caught.value.field, caught.value.index, caught.value.item) == (field, index, item), caught.value.message
