"""One test per upstream assumption that predictor/edge/kserve_shims.py lists, against the installed KServe.

Each fails if KServe changes the behaviour the workaround relies on (its docstring says which file and
why); the integration tests (test_errors_http, test_grpc, test_auth_http) show the user-visible result.
"""

from __future__ import annotations

import asyncio
import inspect

import grpc
import pytest
from fastapi import FastAPI
from grpc_interceptor.exceptions import GrpcException
from kserve import Model
from kserve import errors as kserve_errors
from kserve.constants.constants import PredictorProtocol
from kserve.predictor_config import PredictorConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import interceptors, servicer
from kserve.protocol.grpc import server as grpc_server
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import RESTServer

from predictor.core import GenerationRequest, Sampling
from predictor.edge import kserve_shims
from predictor.edge.grpc_status import status_error
from predictor.errors import BadRequest


def _ours(request, exc):  # stands for web._handle
    raise AssertionError("not called")


# 1. Handler pinning.


def test_kserve_registers_its_error_handlers_on_the_app_by_item_assignment_and_ours_stay():
    app = FastAPI()
    app.exception_handlers = kserve_shims.PinnedHandlers(app.exception_handlers, {Exception: _ours, BadRequest: _ours})
    # What RESTServer.create_application does to kserve.model_server's app when the server starts.
    RESTServer._add_exception_handlers(RESTServer.__new__(RESTServer), app)
    assert app.exception_handlers[Exception] is _ours and app.exception_handlers[BadRequest] is _ours
    # KServe still registers through the map (so it would replace ours without the pin): its handler
    # for an error type we did not pin is there.
    assert app.exception_handlers[kserve_errors.ModelNotFound] is not _ours
    source = inspect.getsource(RESTServer.create_application)
    assert '"kserve.model_server:app"' in source and "self._add_exception_handlers(app)" in source


# 2. Servicer swap.


def test_grpc_server_builds_its_servicer_from_the_module_global_we_replace():
    names = inspect.getclosurevars(grpc_server.GRPCServer.start).globals
    assert names.get("InferenceServicer") is servicer.InferenceServicer, (
        "GRPCServer.start no longer reads kserve.protocol.grpc.server.InferenceServicer: require_keys's swap is dead"
    )


def test_every_grpc_rpc_is_either_open_or_key_checked_and_has_the_signature_we_wrap():
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    rpcs = {method.name for method in service.methods}
    assert rpcs == kserve_shims.OPEN_RPCS | set(kserve_shims.PROTECTED_RPCS)
    for name in rpcs:
        rpc = getattr(servicer.InferenceServicer, name)
        assert inspect.iscoroutinefunction(rpc), name
        assert list(inspect.signature(rpc).parameters) == ["self", "request", "context"], name


def test_require_keys_swaps_in_a_subclass_that_checks_every_protected_rpc(monkeypatch):
    monkeypatch.setattr(grpc_server, "InferenceServicer", servicer.InferenceServicer)
    kserve_shims.require_keys(keys=None)
    keyed = grpc_server.InferenceServicer
    assert issubclass(keyed, servicer.InferenceServicer) and keyed is not servicer.InferenceServicer
    assert {name for name in vars(keyed) if not name.startswith("__")} == set(kserve_shims.PROTECTED_RPCS)


# 3. Prepared is a list.


@pytest.mark.parametrize("protocol", [PredictorProtocol.REST_V1, PredictorProtocol.REST_V2, None])
def test_model_call_passes_a_prepared_payload_through_validate_unchanged(protocol):
    seen = []

    class Echo(Model):
        predictor_config = property(lambda self: protocol and PredictorConfig("host", protocol.value))

        async def preprocess(self, payload, headers=None):
            return kserve_shims.Prepared([GenerationRequest("p", (1,), Sampling(max_length=2))])

        async def predict(self, payload, headers=None):
            seen.append(payload)
            return {}

    asyncio.run(Echo("m")({}))
    assert len(seen) == 1 and isinstance(seen[0], kserve_shims.Prepared) and seen[0][0].prompt == "p"
    if protocol is PredictorProtocol.REST_V2:  # why a list: validate asks `"inputs" in payload`
        with pytest.raises(TypeError):
            Echo("m").validate(object())


# 4. gRPC errors.


class _Context:
    """A grpc.aio ServicerContext's abort: records the status and ends the call, as the real one does."""

    def __init__(self):
        self.aborted = None

    def code(self):
        return None

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def _aborted(exc: Exception) -> tuple:
    context = _Context()
    with pytest.raises(Exception):  # noqa: B017  (abort raises; the interceptor may re-raise)
        asyncio.run(interceptors.ExceptionToStatusInterceptor().handle_exception(exc, None, context, "ModelInfer"))
    return context.aborted


def test_kserves_interceptor_passes_our_grpc_status_and_message_through():
    error = status_error(BadRequest("max_length: must be >= 1 (got 0)"))
    assert isinstance(error, GrpcException)
    assert _aborted(error) == (grpc.StatusCode.INVALID_ARGUMENT, "max_length: must be >= 1 (got 0)")
    # Without our translation a client's mistake would read as a server fault:
    assert _aborted(BadRequest("max_length: must be >= 1 (got 0)"))[0] == grpc.StatusCode.INTERNAL


def test_model_infer_marks_its_request_as_from_grpc():
    request = InferRequest.from_grpc(pb.ModelInferRequest(model_name="m", id="1"))
    assert request.from_grpc is True
    assert "InferRequest.from_grpc(request)" in inspect.getsource(servicer.InferenceServicer.ModelInfer)
