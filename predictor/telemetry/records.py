"""One record per inference request: its id, outcome, token counts and times.

The HTTP layer (web.Guard) opens a record when a request arrives and closes it when the answer is
sent or the client is gone; the engine fills in tokens and times as it works. Closing it counts the
outcome, observes the durations and writes one JSON log line (no prompt or output text unless
--log_prompts).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from predictor.telemetry.metrics import Metrics

log = logging.getLogger("predictor.requests")

_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("gptj_request", default=None)


@dataclass
class RequestRecord:
    """What happened to one request. The engine thread writes the token and time fields."""

    id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int | None = None
    disconnected: bool = False
    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    queue_seconds: float | None = None  # the longest wait of its prompts
    first_token_seconds: float | None = None  # the earliest first token of its prompts
    key_slot: int | None = None  # with --api_keys_file: which key (0 = the file's first) it carried
    texts: dict[str, Any] = field(default_factory=dict)  # prompts and outputs, logged with --log_prompts

    @property
    def outcome(self) -> str:
        """success, invalid, unauthorized, overloaded, timeout, cancelled or error."""
        if self.disconnected:
            return "cancelled"
        status = self.status or 500
        if status < 400:
            return "success"
        if status == 401:
            return "unauthorized"
        if status == 429:
            return "overloaded"
        if status == 504:
            return "timeout"
        return "invalid" if status < 500 else "error"

    def waited(self, seconds: float) -> None:
        self.queue_seconds = max(self.queue_seconds or 0.0, seconds)

    def first_token(self, seconds: float) -> None:
        self.first_token_seconds = min(self.first_token_seconds or seconds, seconds)


def request_id(headers: dict[str, str]) -> str:
    """The client's X-Request-Id when it sent a sane one, else a new id."""
    given = headers.get("x-request-id", "")
    return given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex


def open_record(record: RequestRecord) -> contextvars.Token:
    return _current.set(record)


def reset_record(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> RequestRecord | None:
    """The record of the request being handled on this task, if any."""
    return _current.get()


def begin(prompts: Sequence[str], log_prompts: bool) -> RequestRecord | None:
    """The current request's record, told how many prompts it has (and, with --log_prompts, which)."""
    record = current()
    if record is not None:
        record.prompts = len(prompts)
        if log_prompts:
            record.texts["prompts"] = list(prompts)
    return record


def outputs(record: RequestRecord | None, texts: list[list[str]], log_prompts: bool) -> None:
    """Each prompt's generated texts, for the log line (with --log_prompts only)."""
    if record is not None and log_prompts:
        record.texts["outputs"] = texts


def close_record(record: RequestRecord, metrics: Metrics | None, log_prompts: bool) -> None:
    """Count and log a finished request."""
    duration = time.monotonic() - record.started
    if metrics is not None:
        metrics.requests.labels(record.outcome).inc()
        metrics.request_duration.observe(duration)
    line = {
        "event": "request",
        "request_id": record.id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "outcome": record.outcome,
        "prompts": record.prompts,
        "prompt_tokens": record.prompt_tokens,
        "generated_tokens": record.generated_tokens,
        "duration_ms": round(duration * 1000, 1),
        "queue_ms": _ms(record.queue_seconds),
        "time_to_first_token_ms": _ms(record.first_token_seconds),
    }
    if record.key_slot is not None:  # the slot, never the key
        line["key_slot"] = record.key_slot
    if log_prompts and record.texts:
        line.update(record.texts)
    log.info(json.dumps(line, ensure_ascii=False))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
