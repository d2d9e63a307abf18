"""Typed errors, and the one table that maps any failure to an HTTP status, message and headers.

Our own code raises the :class:`PredictorError` family; KServe and Starlette raise their own types
on the same routes (model not ready, unknown route, body too large...), so the table covers those
too. Each protocol renders a :class:`Failure` in its own body (its adapter: protocols/registry.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable

from fastapi.exceptions import RequestValidationError
from kserve import errors as kserve_errors
from starlette.exceptions import HTTPException

log = logging.getLogger("predictor")


class PredictorError(Exception):
    """Base of our typed errors; ``status`` is the HTTP status a client gets."""

    status: int = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(PredictorError):
    """The request is malformed or a value is out of bounds (the message names field and bound).

    The raise site also says where, for protocols whose error bodies carry it (OpenAI's ``param``):
    ``field`` is the request field the message names first (``max_tokens``; ``prompt`` for
    ``prompt[1][3]``), ``index`` the position in that field the message names (``prompt[1]`` -> 1,
    ``stop_token_ids[0]`` -> 0), ``item`` which request object of a list body (the seed API's ``[2].``).
    None where the message names no field (a body that is not JSON).
    """

    status = HTTPStatus.BAD_REQUEST

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        index: int | None = None,
        item: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.field, self.index, self.item = field, index, item

    def within(self, item: int | None) -> BadRequest:
        """The same error in request object ``item`` of several (its message gains ``[item].``)."""
        if item is None:
            return self
        return BadRequest(f"[{item}].{self.message}", field=self.field, index=self.index, item=item)


class ContextLengthExceeded(BadRequest):
    """A prompt, or a prompt and the tokens asked for, does not fit the context window. ``param`` is
    the request field to change; OpenAI's clients (LangChain, litellm) recognise the case by ``code``
    (OpenAI's error body carries both: protocols/openai.py)."""

    code = "context_length_exceeded"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message, field=param)


class Unauthorized(PredictorError):
    """No API key, or one that is not accepted (only when --api_keys_file is set)."""

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str, *, invalid: bool) -> None:
        # RFC 6750 section 3.1: a request without credentials gets the bare challenge; one with a
        # wrong token gets error="invalid_token" too.
        challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class NotFound(PredictorError):
    """No model of that name here."""

    status = HTTPStatus.NOT_FOUND


class PayloadTooLarge(PredictorError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class _RetryLater(PredictorError):
    """A failure that passes: the client gets ``Retry-After`` seconds with it."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Overloaded(_RetryLater):
    """The queue is full: try again after ``Retry-After`` seconds."""

    status = HTTPStatus.TOO_MANY_REQUESTS


class NotReady(PredictorError):
    """The model is not loaded yet, or the server is draining."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class EngineUnhealthy(PredictorError):
    """The engine failed for good (its thread died, a step stalled, the GPU is in an error state).

    Liveness answers 503 too, so Kubernetes restarts the pod; another replica can take the retry.
    """

    status = HTTPStatus.SERVICE_UNAVAILABLE

    @classmethod
    def because(cls, reason: str) -> EngineUnhealthy:
        return cls(
            f"the model engine failed: {reason}; this replica is restarting, retry (another replica will answer)"
        )


class ResourceExhausted(_RetryLater):
    """The GPU ran out of memory for this batch; the engine freed it and serves on."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class DeadlineExceeded(PredictorError):
    """The request was not finished within --request_timeout_seconds (its generation was stopped)."""

    status = HTTPStatus.GATEWAY_TIMEOUT


class GenerationFailed(PredictorError):
    """Generation raised; the details are in the server log, never in the body."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR


@dataclass(frozen=True)
class Failure:
    """What a client is told about an exception."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None  # a machine-readable kind, where a protocol has one (OpenAI's ``code``)
    param: str | None = None  # the request field at fault, where the error knows it (BadRequest.field)


def _http_exception(exc: HTTPException) -> Failure:
    # Starlette raises these for unknown routes (404) and wrong methods (405, with an Allow header).
    return Failure(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def _request_validation(exc: RequestValidationError) -> Failure:
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return Failure(HTTPStatus.BAD_REQUEST, "; ".join(parts[:5]) or "invalid request")


def _predictor(exc: PredictorError) -> Failure:
    return Failure(exc.status, exc.message, exc.headers, getattr(exc, "code", None), getattr(exc, "field", None))


# The one table. Order matters only between a class and its subclasses (first match wins).
_TABLE: tuple[tuple[type[BaseException], Callable[[Any], Failure]], ...] = (
    (PredictorError, _predictor),
    (kserve_errors.InvalidInput, lambda e: Failure(HTTPStatus.BAD_REQUEST, str(e))),
    (kserve_errors.ModelNotFound, lambda e: Failure(HTTPStatus.NOT_FOUND, str(e))),
    (kserve_errors.ModelNotReady, lambda e: Failure(HTTPStatus.SERVICE_UNAVAILABLE, str(e))),
    (kserve_errors.ServerNotReady, lambda e: Failure(HTTPStatus.SERVICE_UNAVAILABLE, str(e))),
    (kserve_errors.ServerNotLive, lambda e: Failure(HTTPStatus.SERVICE_UNAVAILABLE, str(e))),
    (kserve_errors.UnsupportedProtocol, lambda e: Failure(HTTPStatus.NOT_IMPLEMENTED, str(e))),
    (NotImplementedError, lambda e: Failure(HTTPStatus.NOT_IMPLEMENTED, "not implemented")),
    (HTTPException, _http_exception),
    (RequestValidationError, _request_validation),
)

#: Exception types with a row in the table (web.install registers a handler for each).
HANDLED: tuple[type[BaseException], ...] = tuple(cls for cls, _ in _TABLE)


#: The gRPC status for each HTTP status we send (the table above decides the HTTP one), as KServe's
#: own interceptor maps its errors (kserve/protocol/grpc/interceptors.py) and as
#: https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.txt pairs them.
GRPC_CODES = {
    HTTPStatus.BAD_REQUEST: "INVALID_ARGUMENT",
    HTTPStatus.UNAUTHORIZED: "UNAUTHENTICATED",
    HTTPStatus.FORBIDDEN: "PERMISSION_DENIED",
    HTTPStatus.NOT_FOUND: "NOT_FOUND",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "INVALID_ARGUMENT",
    HTTPStatus.TOO_MANY_REQUESTS: "RESOURCE_EXHAUSTED",
    HTTPStatus.NOT_IMPLEMENTED: "UNIMPLEMENTED",
    HTTPStatus.SERVICE_UNAVAILABLE: "UNAVAILABLE",
    HTTPStatus.GATEWAY_TIMEOUT: "DEADLINE_EXCEEDED",
}


def grpc_code(failure: Failure) -> str:
    """The name of the grpc.StatusCode a gRPC client gets for ``failure`` (INTERNAL if none fits)."""
    return GRPC_CODES.get(failure.status, "INTERNAL")


def classify(exc: BaseException) -> Failure:
    """Map any exception to the status, message and headers a client sees.

    Anything not in the table is a bug or an upstream failure: 500 with a generic message (the
    traceback goes to the server log, never into the body).
    """
    for cls, describe in _TABLE:
        if isinstance(exc, cls):
            return describe(exc)
    return Failure(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error; see the server log")
