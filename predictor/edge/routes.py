"""Our routes on KServe's FastAPI app, next to KServe's own v1/v2 routes (registered before them).

Each is tagged with the protocol its path resolves to in protocols/registry.py (the lookup error
bodies and request tracking use), and one under no protocol's prefix fails at start-up.

- ``POST /v1/models/{name}:stream``: the seed API as server-sent events (seed_routes.py)
- ``GET /openai/v1/models``, ``GET /openai/v1/models/{id}``, ``POST /openai/v1/completions`` (openai_routes.py)
- ``GET /openai/health``, ``POST /openai/tokenize``, ``POST /openai/detokenize``: vLLM's (vllm_routes.py)
- ``GET /v2/health/live``, ``GET /`` (liveness) and ``GET /v2/health/ready``: KServe's answer 200
  whatever the engine's state (DataPlane.live, kserve/protocol/dataplane.py); ours answer 503 once
  the engine failed, so Kubernetes restarts the pod. Per-model readiness needs no route of ours:
  KServe asks GPTJModel.healthy().

The v2 inference protocol needs no route of ours: KServe's ``/v2/models/{name}/infer`` calls the
model's preprocess/predict/postprocess with an InferRequest (model.py, v2.py).

A wrong method on an inference route answers 405 with ``Allow``. Starlette does that by itself only
where no other route matches the path: KServe's ``GET /v1/models/{model_name}`` (model health) also
matches ``/v1/models/gptj:predict``, so a GET there answered 404 "Model with name gptj:predict does
not exist". ``_refuse_other_methods`` registers the other methods of each such route first.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException

from predictor.edge import openai_routes, seed_routes, vllm_routes
from predictor.edge.serving import Serving
from predictor.errors import EngineUnhealthy
from predictor.protocols import registry


def _alive(model: Serving) -> None:
    failure = model.engine_failure()
    if failure is not None:
        raise EngineUnhealthy.because(failure)


def register(app: FastAPI, model: Serving) -> None:
    """Add the routes for ``model`` (edge/model.py's GPTJModel) to ``app``."""

    async def seed_stream(model_name: str, request: Request):
        return await seed_routes.seed_stream(model, model_name, request)

    async def openai_models():
        return await openai_routes.list_models(model)

    async def openai_model(model_id: str):
        return await openai_routes.get_model(model, model_id)

    async def openai_completions(request: Request):
        return await openai_routes.completions(model, request)

    async def openai_health():
        return await vllm_routes.health(model)

    async def openai_tokenize(request: Request):
        return await vllm_routes.tokenize(model, request)

    async def openai_detokenize(request: Request):
        return await vllm_routes.detokenize(model, request)

    async def live():  # the bodies KServe's routes answer (ServerLiveResponse, DataPlane.live)
        _alive(model)
        return {"live": True}

    async def root_live():
        _alive(model)
        return {"status": "alive"}

    async def server_ready():
        _alive(model)
        return {"ready": True}

    add = _adder(app)
    add("/v2/health/live", live, "GET")
    app.add_api_route("/", root_live, methods=["GET"])
    add("/v2/health/ready", server_ready, "GET")
    _refuse_other_methods(app)
    add("/v1/models/{model_name}:stream", seed_stream, "POST")
    add("/openai/v1/models", openai_models, "GET")
    add("/openai/v1/models/{model_id}", openai_model, "GET")
    add("/openai/v1/completions", openai_completions, "POST")
    add("/openai/health", openai_health, "GET")
    add("/openai/tokenize", openai_tokenize, "POST")
    add("/openai/detokenize", openai_detokenize, "POST")


def _adder(app: FastAPI):
    """Add a route tagged with its protocol, the one the registry resolves its path to (errors and
    request tracking use the same lookup): a route outside every prefix fails here, at start-up."""

    def add(path: str, endpoint, method: str) -> None:
        adapter = registry.for_path(path)
        if not path.startswith(adapter.prefixes):
            raise ValueError(f"route {path} is under no protocol's prefix (protocols/registry.py)")
        app.add_api_route(path, endpoint, methods=[method], tags=[adapter.tag])

    return add


#: Inference routes (ours and KServe's) and the methods they take.
INFERENCE_ROUTES = {
    "/v1/models/{model_name}:predict": ("POST",),
    "/v1/models/{model_name}:explain": ("POST",),
    "/v1/models/{model_name}:stream": ("POST",),
    "/v2/models/{model_name}/infer": ("POST",),
    "/v2/models/{model_name}/versions/{model_version}/infer": ("POST",),
    "/openai/v1/completions": ("POST",),
}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _refuse_other_methods(app: FastAPI) -> None:
    for path, allowed in INFERENCE_ROUTES.items():
        app.add_api_route(
            path, _refuser(allowed), methods=[m for m in _METHODS if m not in allowed], include_in_schema=False
        )


def _refuser(allowed: tuple[str, ...]):
    async def refuse():
        raise HTTPException(405, "Method Not Allowed", headers={"Allow": ", ".join(allowed)})

    return refuse
