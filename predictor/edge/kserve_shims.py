"""Where we lean on KServe's internals: each workaround, and the upstream behaviour it assumes.

Written against kserve 0.21.0 (the locks' version). tests/unit/test_kserve_shims.py has one test per
assumption below, run against the installed KServe, so an upgrade that changes one fails there, by
name, rather than in a served request:

1. **Handler pinning** (``PinnedHandlers``, installed by web.install). kserve/protocol/rest/server.py:
   ``RESTServer.create_application`` calls ``_add_exception_handlers`` on kserve.model_server's ``app``
   (the FastAPI app we install on) when the server starts, after ``main()`` has run, and Starlette's
   ``add_exception_handler`` stores each with ``exception_handlers[key] = handler``; KServe's answer
   ``{"error": ...}`` bodies. Our map drops those writes for our keys, so the contract's envelope stays.
2. **Servicer swap** (``require_keys``). kserve/protocol/grpc/server.py: ``GRPCServer.start`` builds its
   servicer from the module's global ``InferenceServicer`` (from servicer.py) with fixed interceptors,
   so replacing that global before ``ModelServer.start()`` is the only way to check API keys on gRPC
   calls. Every RPC of the service is an ``async def Name(self, request, context)`` on that class, and
   each is either open (``OPEN_RPCS``) or checked (``PROTECTED_RPCS``).
3. **Prepared is a list** (``Prepared``, preprocess's result in model.py). kserve/model.py:
   ``Model.__call__`` passes preprocess's result through ``Model.validate``, which (with a
   predictor_config) asks ``"inputs" in payload`` / ``"instances" in payload``: a list answers False
   and passes unchanged; an object without ``__contains__`` or ``__iter__`` raises TypeError.
4. **gRPC errors** (grpc_status.status_error, raised by GPTJModel.__call__). kserve/protocol/grpc:
   ``ModelInfer`` builds ``InferRequest.from_grpc(request)`` (``from_grpc`` True) and calls the model
   as the HTTP v2 route does; ``ExceptionToStatusInterceptor`` passes a GrpcException's status and
   details to the client and turns an exception it does not know into INTERNAL.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kserve.protocol.infer_type import InferRequest

from predictor import errors
from predictor.core import GenerationRequest
from predictor.edge.grpc_status import status_error
from predictor.protocols import registry


class PinnedHandlers(dict):
    """An exception-handler map whose entries for our keys cannot be replaced (assumption 1).

    Pinning our keys keeps the contract's envelope on every error without copying KServe's start-up.
    """

    def __init__(self, base: Mapping[Any, Any], pinned: Mapping[Any, Any]) -> None:
        super().__init__(base)
        super().update(pinned)
        self._pinned = frozenset(pinned)

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self._pinned:
            super().__setitem__(key, value)


#: RPCs anyone may call, as the HTTP probes (auth.is_open): liveness and readiness.
OPEN_RPCS = frozenset({"ServerLive", "ServerReady", "ModelReady"})
PROTECTED_RPCS = ("ServerMetadata", "ModelMetadata", "ModelInfer", "RepositoryModelLoad", "RepositoryModelUnload")


def require_keys(keys) -> None:
    """Serve gRPC with API keys checked (``keys``: an auth.ApiKeys); call before ModelServer.start().

    KServe's servicer is replaced by a subclass that checks the call's ``authorization`` metadata
    first, exactly as web.Auth checks the header (assumption 2): the probes stay open, every other
    call (inference, metadata, repository load/unload) needs a key and otherwise gets UNAUTHENTICATED.
    """
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


class Prepared(list):
    """The GenerationRequests of one request, the v2 request they came from (if any), and the
    protocol's adapter that parsed them (which renders the answer).

    A list, because KServe's Model.validate() looks into the payload with ``in`` (assumption 3).
    """

    def __init__(
        self,
        requests: Sequence[GenerationRequest],
        infer: InferRequest | None = None,
        adapter: registry.Adapter = registry.SEED,
    ) -> None:
        super().__init__(requests)
        self.infer, self.adapter = infer, adapter
