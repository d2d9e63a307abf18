"""Our routes on KServe's FastAPI app, next to KServe's own v1/v2 routes (registered before them).

- ``POST /v1/models/{name}:stream``: the seed API as server-sent events (sse.py)
- ``GET /openai/v1/models``, ``GET /openai/v1/models/{id}``, ``POST /openai/v1/completions`` (openai_routes.py)

The v2 inference protocol needs no route of ours: KServe's ``/v2/models/{name}/infer`` calls the
model's preprocess/predict/postprocess with an InferRequest (model.py, v2.py).
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from predictor.edge import openai_routes
from predictor.protocols import sse


def register(app: FastAPI, model) -> None:
    """Add the routes for ``model`` (a GPTJModel) to ``app``."""

    async def seed_stream(model_name: str, request: Request):
        return await sse.seed_stream(model, model_name, request)

    async def openai_models():
        return await openai_routes.list_models(model)

    async def openai_model(model_id: str):
        return await openai_routes.get_model(model, model_id)

    async def openai_completions(request: Request):
        return await openai_routes.completions(model, request)

    app.add_api_route("/v1/models/{model_name}:stream", seed_stream, methods=["POST"], tags=["V1"])
    app.add_api_route("/openai/v1/models", openai_models, methods=["GET"], tags=["OpenAI"])
    app.add_api_route("/openai/v1/models/{model_id}", openai_model, methods=["GET"], tags=["OpenAI"])
    app.add_api_route("/openai/v1/completions", openai_completions, methods=["POST"], tags=["OpenAI"])
