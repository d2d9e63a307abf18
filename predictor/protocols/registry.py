"""Which protocol a request speaks, decided in one place: the route-prefix registry and each protocol's adapter.

An adapter holds what differs between protocols: how a body is parsed into the engine's requests,
how outputs and stream chunks are rendered, and how an error is rendered (the status comes from the
one table, errors.classify; the body is the protocol's). Error bodies (edge/web.py, for every error,
401s from edge/auth.py's keys included), the request tracking (which routes generate) and the model's
parse/render dispatch (edge/model.py) all look the protocol up here rather than testing paths or
types themselves.

Over HTTP the path decides (``for_path``): ``/openai/`` is OpenAI's API, ``/v2/`` KServe's Open
Inference Protocol, anything else the seed contract (``/v1/`` and unknown routes alike: the envelope).
KServe calls the model without the path, so ``for_payload`` tells the same protocols from the body
KServe built: an InferRequest for v2, with ``from_grpc`` set for a gRPC ``ModelInfer`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from kserve.protocol.infer_type import InferRequest

from predictor import errors
from predictor.core import Completion, GenerationRequest
from predictor.errors import Failure
from predictor.protocols import envelope, openai, openai_errors, openai_stream, seed, v2


@dataclass(frozen=True)
class Adapter:
    """One protocol. ``parse``/``render``/``stream`` have the protocol's own signatures: the seed API,
    v2 and gRPC share model.py's (``parse(payload, content_type, max_prompts)`` -> request objects,
    ``render(model_name, prepared, completions)``); OpenAI's are openai.parse, openai.response and
    openai_stream.Stream, which its routes (edge/openai_routes.py) call through this adapter."""

    name: str
    prefixes: tuple[str, ...]  # the HTTP paths it serves start with one of these (gRPC: none)
    inference: tuple[str, ...]  # POST routes under these generate: the request metrics and logs count them
    error: Callable[[Failure], Any]  # the error body (gRPC: its status code's name and details)
    parse: Callable[..., Any]
    render: Callable[..., Any]
    stream: Callable[..., Any] | None = None  # one stream chunk (or the object that renders them)
    tag: str = ""  # the OpenAPI tag of its routes


def _seed_parse(payload: Any, content_type: str | None, max_prompts: int) -> list[seed.PromptRequest]:
    return seed.parse(seed.body_of(payload, content_type), max_prompts)


def _seed_render(model_name: str, prepared: Sequence[GenerationRequest], completions: Sequence[Sequence[Completion]]):
    return envelope.answer(prepared, completions)


def _v2_parse(payload: InferRequest, content_type: str | None, max_prompts: int) -> list[seed.PromptRequest]:
    return v2.parse(payload, max_prompts)


def _v2_render(model_name: str, prepared: Any, completions: Sequence[Sequence[Completion]]) -> Any:
    """``prepared`` carries the InferRequest it came from (``infer``): the response echoes its id."""
    notes = [note for req in prepared for note in req.notes]
    details = any(r.details for r in prepared)
    return v2.response(model_name, prepared.infer.id, completions, details, notes, [r.prompt for r in prepared])


def _grpc_error(failure: Failure) -> tuple[str, str]:
    return errors.grpc_code(failure), failure.message


SEED = Adapter(
    "seed",
    ("/v1/",),
    ("/v1/models/",),
    lambda failure: envelope.failed(failure.message),
    _seed_parse,
    _seed_render,
    envelope.stream_event,
    "V1",
)
V2 = Adapter("v2", ("/v2/",), ("/v2/models/",), v2.error, _v2_parse, _v2_render, None, "V2")
OPENAI = Adapter(
    "openai",
    ("/openai/",),
    ("/openai/",),
    openai_errors.error,
    openai.parse,
    openai.response,
    openai_stream.Stream,
    "OpenAI",
)
GRPC = Adapter("grpc", (), (), _grpc_error, _v2_parse, _v2_render)

#: Every protocol, looked up by path in this order (no prefix is another's prefix).
PROTOCOLS = (OPENAI, V2, SEED, GRPC)

#: POST routes under an inference prefix that never generate (vLLM's tokenizer routes).
NOT_INFERENCE = ("/openai/tokenize", "/openai/detokenize")


def for_path(path: str) -> Adapter:
    """The protocol of an HTTP request: the first whose prefix starts ``path``; the seed contract otherwise."""
    return next((adapter for adapter in PROTOCOLS if path.startswith(adapter.prefixes)), SEED)


def for_payload(payload: Any) -> Adapter:
    """The protocol of a body KServe hands the model (it passes no path): v2's InferRequest, over
    HTTP or gRPC (``from_grpc``), or the seed API's bytes or JSON."""
    if isinstance(payload, InferRequest):
        return GRPC if payload.from_grpc else V2
    return SEED


def generates(method: str, path: str) -> bool:
    """Requests that generate (or try to): POST under a protocol's inference prefix."""
    inference = tuple(prefix for adapter in PROTOCOLS for prefix in adapter.inference)
    return method == "POST" and path.startswith(inference) and path not in NOT_INFERENCE
