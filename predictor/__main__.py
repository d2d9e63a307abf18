"""``python -m predictor``: parse settings, register the model, load it in the background, serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Sequence

log = logging.getLogger("predictor")

# KServe ModelServer constructor arguments, by the name of the flag that carries each.
_SERVER_ARGS = (
    "http_port",
    "grpc_port",
    "workers",
    "max_threads",
    "max_asyncio_workers",
    "enable_grpc",
    "enable_docs_url",
    "enable_latency_logging",
    "access_log_format",
    "event_loop",
    "timeout_keep_alive",
    "ssl_certfile",
    "ssl_keyfile",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until stopped. Readiness turns 200 once the weights are on their device."""
    from predictor.settings import parse_settings

    settings = parse_settings(argv)
    _configure_logging(settings.server)
    _quiet_upstream_warnings()

    from kserve import ModelServer
    from kserve.model_server import app

    from predictor.edge import routes, web
    from predictor.edge.auth import ApiKeys
    from predictor.edge.lifecycle import Lifecycle
    from predictor.edge.model import GPTJModel
    from predictor.telemetry.metrics import Metrics

    keys = None
    if settings.operations.api_keys_file is not None:
        try:
            keys = ApiKeys(settings.operations.api_keys_file).load()
        except ValueError as exc:  # a server that was meant to be private must not start open
            log.error("%s", exc)
            return 1
    metrics = Metrics()
    if _cuda():
        metrics.watch_gpu_memory()
    model = GPTJModel(settings, metrics)
    # Our drain (lifecycle.py) already waited for in-flight requests: uvicorn's own wait after it only
    # closes connections, so keep it short and SIGTERM-to-exit stays within drain timeout + 2 s.
    server = ModelServer(grace_period=2, **{name: getattr(settings.server, name) for name in _SERVER_ARGS})
    web.install(app, settings, metrics, Lifecycle(model, settings.operations.drain_timeout_s), keys)
    if keys is not None and settings.server.enable_grpc:  # gRPC calls need the same keys
        from predictor.edge.kserve_shims import require_keys

        require_keys(keys)
    routes.register(app, model)  # before ModelServer.start() adds KServe's routes: ours match first
    # ModelServer.start() registers only models that are already ready; register first, load in
    # the background, and let /v2/models/<name>/ready answer 503 until load() sets `ready`.
    server.register_model(model)
    threading.Thread(target=_load_or_exit, args=(model,), name="loader", daemon=True).start()
    log.info("serving model %r (source %s) on port %d", settings.model_name, settings.model, settings.server.http_port)
    server.start([])
    return 0


def _load_or_exit(model) -> None:
    from predictor.loading.sources import one_line

    # A pod that can never become ready should restart with the reason in its log, not hang.
    try:
        model.load()
    except BaseException as exc:
        problem = one_line(model.settings.model, exc)
        if problem is None:
            log.exception("loading the model failed; exiting")
        else:
            # A mistake in the settings, not a bug: one line that names it and the fix; the traceback
            # only at debug level (KSERVE_LOGLEVEL=DEBUG).
            log.error("cannot load the model: %s", problem)
            log.debug("loading the model failed here", exc_info=True)
        os._exit(1)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _quiet_upstream_warnings() -> None:
    import warnings

    from fastapi.exceptions import FastAPIDeprecationWarning

    # KServe 0.21's routes return ORJSONResponse, which FastAPI deprecates; the warning is for
    # KServe's maintainers and would otherwise land in every operator's log.
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)


def _configure_logging(args: argparse.Namespace) -> None:
    from kserve import logging as kserve_logging

    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    ours, theirs = logging.getLogger("predictor"), logging.getLogger(kserve_logging.KSERVE_LOGGER_NAME)
    if not ours.handlers and theirs.handlers:  # same format and level as KServe's lines
        for handler in theirs.handlers:
            ours.addHandler(handler)
        ours.setLevel(theirs.level)
        ours.propagate = False
    requests = logging.getLogger("predictor.requests")
    if not requests.handlers:  # one JSON object per line on stdout, for log pipelines to parse
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        requests.addHandler(handler)
        requests.setLevel(logging.INFO)
        requests.propagate = False


if __name__ == "__main__":
    sys.exit(main())
