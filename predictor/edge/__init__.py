"""The edge: HTTP and KServe glue, where a request comes in and its answer goes out.

Owns the kserve.Model (model.py, thin), the one factory that builds the stack from settings
(stack.py), our routes on KServe's FastAPI app (routes.py; seed_routes.py for ``:stream``,
openai_routes.py, vllm_routes.py for vLLM's health and tokenizer routes) and the ``Serving``
interface they call the model through (serving.py), the middleware (web.py: error bodies, body
limit, API keys with auth.py, request records, disconnects), graceful shutdown (lifecycle.py)
and every workaround that leans on KServe's internals (kserve_shims.py, each assumption tested).
``predictor/__main__.py`` (settings -> stack -> server) stands above it.

May import: every layer below (protocols, engine, generation, loading, telemetry, errors, settings,
core). Nothing below imports the edge (tests/unit/test_layers.py).
"""
