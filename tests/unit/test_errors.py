"""The one status table."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError
from kserve import errors as kserve_errors
from starlette.exceptions import HTTPException

from predictor import errors
from predictor.protocols import envelope


@pytest.mark.parametrize(
    "exc, status, message",
    [
        (errors.BadRequest("max_length: must be >= 1"), 400, "max_length: must be >= 1"),
        (errors.PayloadTooLarge("too big"), 413, "too big"),
        (errors.NotReady("loading"), 503, "loading"),
        (errors.GenerationFailed("generation failed"), 500, "generation failed"),
        (kserve_errors.InvalidInput("bad json"), 400, "bad json"),
        (kserve_errors.ModelNotFound("foo"), 404, "Model with name foo does not exist."),
        (kserve_errors.ModelNotReady("gptj"), 503, "Model with name gptj is not ready."),
        (kserve_errors.ServerNotReady(), 503, "Server is not ready."),
        (NotImplementedError("explain"), 501, "not implemented"),
        (HTTPException(404, "Not Found"), 404, "Not Found"),
        (
            RequestValidationError([{"loc": ("body", "inputs"), "msg": "Field required", "type": "missing"}]),
            400,
            "body.inputs: Field required",
        ),
        (KeyError("secret internals"), 500, "internal server error; see the server log"),
        (ZeroDivisionError(), 500, "internal server error; see the server log"),
    ],
)
def test_classify(exc, status, message):
    failure = errors.classify(exc)
    assert (failure.status, failure.message) == (status, message)


def test_headers_are_kept():
    assert errors.classify(HTTPException(405, "Method Not Allowed", {"Allow": "POST"})).headers == {"Allow": "POST"}


def test_envelopes():
    assert envelope.failed("x") == {"status": "failed", "data": None, "message": "x"}
    assert envelope.succeeded("text") == {"status": "success", "data": "text", "message": None}
