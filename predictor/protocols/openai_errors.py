"""OpenAI's error object, ``{"error": {"message", "type", "param", "code"}}``, for any failure.

``param`` is the request field the error was raised for (errors.BadRequest's ``field``: set where
the check fails, never read back out of the message); ``code`` is OpenAI's machine-readable kind
where there is one (``context_length_exceeded``, ``invalid_api_key``), else the HTTP status.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from predictor.errors import Failure


def error(failure: Failure) -> dict[str, Any]:
    """An error in OpenAI's format: its clients read ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": failure.message,
            "type": _error_type(failure.status),
            "param": failure.param,
            "code": failure.code or _error_code(failure.status),
        }
    }


def _error_type(status: int) -> str:
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def _error_code(status: int) -> int | str:
    # OpenAI answers a bad key with code "invalid_api_key" (its clients raise AuthenticationError on
    # the 401 whatever the code; scripts that log the body can tell this case by it).
    return "invalid_api_key" if status == HTTPStatus.UNAUTHORIZED else status
