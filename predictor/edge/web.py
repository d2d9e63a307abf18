"""HTTP wiring on KServe's FastAPI app: one error table for every error (each protocol's body, see
error_body), a body limit, no exception ever reaching uvicorn, API keys when configured, and for
inference requests an id, a record, disconnect handling, draining and a failed engine's 503.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predictor import errors
from predictor.edge.auth import ApiKeys, is_open
from predictor.edge.kserve_shims import PinnedHandlers
from predictor.edge.lifecycle import Lifecycle
from predictor.protocols import registry
from predictor.settings import Settings
from predictor.telemetry import records
from predictor.telemetry.metrics import Metrics

log = logging.getLogger("predictor")


def error_response(exc: BaseException, path: str) -> JSONResponse:
    """The error body for ``path`` (error_body) with the status from the one table."""
    failure = errors.classify(exc)
    return JSONResponse(error_body(failure, path), status_code=failure.status, headers=failure.headers)


def error_body(failure: errors.Failure, path: str) -> dict[str, Any]:
    """The error body the clients of the path's protocol expect (protocols/registry.py).

    OpenAI's clients read its error object, KServe's v2 clients ``{"error": "..."}``; everything
    else gets the contract's envelope.
    """
    return registry.for_path(path).error(failure)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    response = error_response(exc, request.url.path)
    if response.status_code >= 500 and not isinstance(exc, errors.PredictorError):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return response


class Guard:
    """The request body limit, and a last catch for any exception.

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
            await error_response(too_large, scope["path"])(scope, receive, send)
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
                await error_response(exc, scope["path"])(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Auth:
    """With --api_keys_file: every route but probes and /metrics needs ``Authorization: Bearer <key>``.

    It sits inside the Tracker, so a refused inference request is counted (outcome ``unauthorized``)
    and logged like any other, with the matched key's slot when it is let in. Refusals on other
    routes (model metadata) have no record: they are counted here.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys, metrics: Metrics | None) -> None:
        self.app, self.keys, self.metrics = app, keys, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        record = records.current()
        try:
            slot = self.keys.slot(authorization)
        except errors.Unauthorized as exc:
            if record is None and self.metrics is not None:
                self.metrics.requests.labels("unauthorized").inc()
            await error_response(exc, scope["path"])(scope, receive, send)
            return
        if record is not None:
            record.key_slot = slot
        await self.app(scope, receive, send)


def is_inference(scope: Scope) -> bool:
    """Requests that generate (or try to): what the request metrics and logs count (registry.generates)."""
    return registry.generates(scope.get("method", ""), scope.get("path", ""))


class Tracker:
    """For inference requests: an id (X-Request-Id, returned), a record, draining, and disconnects.

    A client that disconnects while its request waits or generates cancels the request: its prompts
    leave the queue or the batch at the next step (the engine stops generating for it).
    """

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle, metrics: Metrics | None, log_prompts: bool) -> None:
        self.app, self.lifecycle, self.metrics, self.log_prompts = app, lifecycle, metrics, log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_inference(scope):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        record = records.RequestRecord(records.request_id(headers), scope["method"], scope["path"])
        token = records.open_record(record)
        self.lifecycle.active += 1
        try:
            await self._serve(scope, receive, self._with_id(send, record), record)
        finally:
            self.lifecycle.active -= 1
            records.close_record(record, self.metrics, self.log_prompts)
            records.reset_record(token)

    @staticmethod
    def _with_id(send: Send, record: records.RequestRecord) -> Send:
        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", record.id.encode())]}
            await send(message)

        return send_with_id

    async def _serve(self, scope: Scope, receive: Receive, send: Send, record: records.RequestRecord) -> None:
        if self.lifecycle.draining:
            draining = errors.NotReady("the server is shutting down; retry (another replica will answer)")
            await error_response(draining, scope["path"])(scope, receive, send)
            return
        failure = self.lifecycle.engine_failure()
        if failure is not None:  # at once, rather than after the request's deadline
            await error_response(errors.EngineUnhealthy.because(failure), scope["path"])(scope, receive, send)
            return
        body_read, gone, answered = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def app_receive() -> Message:
            if body_read.is_set():  # the body is in; only a disconnect can follow
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()  # uvicorn reports a disconnect once the answer is out: not a client leaving

        app = asyncio.create_task(self.app(scope, app_receive, app_send))  # carries the record's context

        async def watch() -> None:
            await body_read.wait()
            if (await receive())["type"] == "http.disconnect" and not app.done() and not answered.is_set():
                record.disconnected = True
                gone.set()
                app.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await app
        except asyncio.CancelledError:
            if not record.disconnected:
                raise
            log.info("client went away; request %s cancelled", record.id)
        finally:
            watcher.cancel()


def install(
    app: FastAPI,
    settings: Settings,
    metrics: Metrics | None = None,
    lifecycle: Lifecycle | None = None,
    keys: ApiKeys | None = None,
) -> None:
    """Apply our error handling, limits, API keys and request tracking to KServe's app (before it starts)."""
    pinned = {cls: _handle for cls in (*errors.HANDLED, Exception)}
    app.exception_handlers = PinnedHandlers(app.exception_handlers, pinned)  # kserve_shims: why
    if keys is not None:  # added first: innermost, inside the Guard's last catch and the Tracker's record
        app.add_middleware(Auth, keys=keys, metrics=metrics)
    app.add_middleware(Guard, max_body_bytes=settings.limits.max_body_bytes)
    if lifecycle is not None:  # added last: outermost, so it sees every answer, the Guard's too
        app.add_middleware(Tracker, lifecycle=lifecycle, metrics=metrics, log_prompts=settings.operations.log_prompts)
        app.router.lifespan_context = lifecycle.lifespan(app.router.lifespan_context)
