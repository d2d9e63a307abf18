"""HTTP wiring on KServe's FastAPI app: the envelope for every error, a body limit, and no exception
ever reaching uvicorn.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import errors
from .settings import Settings

log = logging.getLogger("predictor")


class _PinnedHandlers(dict):
    """An exception-handler map whose entries for our keys cannot be replaced.

    KServe's RESTServer registers its own handlers (``{"error": ...}`` bodies) when the server
    starts, after ``main()`` has run, and Starlette stores them with ``exception_handlers[key] = ...``.
    Pinning our keys keeps the contract's envelope on every error without copying KServe's start-up.
    """

    def __init__(self, base: Mapping[Any, Any], pinned: Mapping[Any, Any]) -> None:
        super().__init__(base)
        super().update(pinned)
        self._pinned = frozenset(pinned)

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self._pinned:
            super().__setitem__(key, value)


def envelope_response(exc: BaseException) -> JSONResponse:
    """The failed envelope for ``exc`` with the status from the one table."""
    failure = errors.classify(exc)
    return JSONResponse(errors.failed(failure.message), status_code=failure.status, headers=failure.headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    response = envelope_response(exc)
    if response.status_code >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return response


class Guard:
    """Outermost of our middleware: the request body limit, and a last catch for any exception.

    The limit is ours because FastAPI's ``max_body_size`` answers in plain text and replaces whatever
    the app sends. The catch is ours because Starlette hands exceptions without a handler to
    ServerErrorMiddleware, which answers and then re-raises into uvicorn, and uvicorn then drops
    the keep-alive connection; this middleware sits inside it, so the exception ends here.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = errors.PayloadTooLarge(f"request body is too large: at most {self.max_body_bytes} bytes")
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await envelope_response(too_large)(scope, receive, send)
            return
        received, started = 0, False

        async def limited() -> Message:  # bodies without Content-Length (chunked) are counted
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise too_large  # inside the route: the handlers turn it into the 413 envelope
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except Exception as exc:
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if not started:  # once headers are out there is no way to send an envelope
                await envelope_response(exc)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def install(app: FastAPI, settings: Settings) -> None:
    """Apply our error handling and limits to KServe's app (before the server starts)."""
    pinned = {cls: _handle for cls in (*errors.HANDLED, Exception)}
    app.exception_handlers = _PinnedHandlers(app.exception_handlers, pinned)
    app.add_middleware(Guard, max_body_bytes=settings.limits.max_body_bytes)
