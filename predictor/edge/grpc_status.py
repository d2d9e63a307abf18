"""KServe's gRPC inference service (``--enable_grpc``) on our model: errors as gRPC statuses.

KServe serves the Open Inference Protocol's gRPC form from the same process and event loop as HTTP
(kserve/protocol/grpc/servicer.py): ``ModelInfer`` builds an InferRequest (``from_grpc`` set) and
calls the model exactly as the HTTP v2 route does, so preprocess/predict/postprocess need nothing
else (v2.py reads gRPC's typed parameters). Only errors differ: KServe's interceptor
(interceptors.py) knows its own exception types and turns everything else into INTERNAL, so a
client's mistake would look like a server fault. ``status_error`` gives our errors the gRPC status
that matches their HTTP status (errors.GRPC_CODES), with the same message.

API keys (--api_keys_file): HTTP middleware (web.Auth) never sees a gRPC call, and KServe builds its
gRPC server with fixed interceptors (kserve/protocol/grpc/server.py, GRPCServer.start), so
``require_keys`` puts a subclass of KServe's servicer in its place that checks the call's
``authorization`` metadata first, exactly as web.Auth checks the header: the probes (ServerLive,
ServerReady, ModelReady) stay open, every other call (inference, metadata, repository load/unload)
needs a key and otherwise gets UNAUTHENTICATED.
"""

from __future__ import annotations

import logging

import grpc
from grpc_interceptor.exceptions import GrpcException

from predictor import errors
from predictor.protocols import registry

log = logging.getLogger("predictor")


def status_error(exc: BaseException) -> GrpcException:
    """The exception KServe's interceptor turns into this gRPC status and message."""
    failure = errors.classify(exc)
    if failure.status >= 500 and not isinstance(exc, errors.PredictorError):
        log.error("a gRPC inference request failed", exc_info=exc)
    code, details = registry.GRPC.error(failure)
    return GrpcException(status_code=getattr(grpc.StatusCode, code), details=details)


#: RPCs anyone may call, as the HTTP probes (auth.is_open): liveness and readiness.
OPEN_RPCS = frozenset({"ServerLive", "ServerReady", "ModelReady"})
PROTECTED_RPCS = ("ServerMetadata", "ModelMetadata", "ModelInfer", "RepositoryModelLoad", "RepositoryModelUnload")


def require_keys(keys) -> None:
    """Serve gRPC with API keys checked (``keys``: an auth.ApiKeys); call before ModelServer.start()."""
    from kserve.protocol.grpc import server as grpc_server

    upstream = grpc_server.InferenceServicer
    checked = {name: _checked(getattr(upstream, name), keys) for name in PROTECTED_RPCS}
    grpc_server.InferenceServicer = type("KeyedInferenceServicer", (upstream,), checked)


def _checked(rpc, keys):
    async def call(self, request, context):
        metadata = dict(context.invocation_metadata() or ())
        try:
            keys.slot(metadata.get("authorization"))
        except errors.Unauthorized as exc:
            raise status_error(exc) from None
        return await rpc(self, request, context)

    call.__name__ = rpc.__name__
    return call
