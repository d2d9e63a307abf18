"""KServe's gRPC inference service (``--enable_grpc``) on our model: errors as gRPC statuses.

KServe serves the Open Inference Protocol's gRPC form from the same process and event loop as HTTP
(kserve/protocol/grpc/servicer.py): ``ModelInfer`` builds an InferRequest (``from_grpc`` set) and
calls the model exactly as the HTTP v2 route does, so preprocess/predict/postprocess need nothing
else (v2.py reads gRPC's typed parameters). Only errors differ: KServe's interceptor
(interceptors.py) knows its own exception types and turns everything else into INTERNAL, so a
client's mistake would look like a server fault. ``status_error`` gives our errors the gRPC status
that matches their HTTP status (errors.GRPC_CODES), with the same message.

API keys on gRPC calls: kserve_shims.require_keys (it swaps KServe's servicer).
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
