"""Open Inference Protocol v2 (KServe's /v2/models/<name>/infer) over the same contract.

A request carries a BYTES tensor named ``prompt`` of shape [N] (one prompt per element) and, as
request parameters, the contract's generation parameters; they are validated exactly like the seed
API's request objects. The answer is a BYTES tensor ``text`` of shape [N] (the full texts), or
[N, n] with ``num_return_sequences`` n. Notes about capped or ignored parameters go in the
response's ``parameters.message``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Mapping, Sequence

from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictor.core import Completion
from predictor.errors import BadRequest, Failure
from predictor.protocols import logprobs, seed

INPUTS = [{"name": "prompt", "datatype": "BYTES", "shape": [-1]}]
# [-1, n] with num_return_sequences n; the next three only with the parameter details: true (or
# logprobs); ``logprobs`` only with the parameter logprobs: N (0-5), each element one sequence's
# logprobs object as JSON text (protocols/logprobs.py): a tensor's elements must be of one type.
# (The metadata's tensor objects have only name, datatype and shape, in REST and gRPC alike.)
OUTPUTS = [
    {"name": "text", "datatype": "BYTES", "shape": [-1]},
    {"name": "finish_reason", "datatype": "BYTES", "shape": [-1]},
    {"name": "generated_tokens", "datatype": "INT64", "shape": [-1]},
    {"name": "prompt_tokens", "datatype": "INT64", "shape": [-1]},
    {"name": "logprobs", "datatype": "BYTES", "shape": [-1]},
]


def parse(request: InferRequest, max_prompts: int) -> list[seed.PromptRequest]:
    """A v2 request as validated request objects (the seed API's, one per prompt), or a 400."""
    return seed.parse(request_objects(request), max_prompts)


def request_objects(request: InferRequest) -> list[dict[str, Any]]:
    """The seed API's request objects for a v2 request, its tensors checked (seed.parse validates them)."""
    prompts = [tensor for tensor in request.inputs if tensor.name == "prompt"]
    others = sorted({tensor.name for tensor in request.inputs} - {"prompt"})
    if others:
        raise BadRequest(
            f"inputs: unknown input(s) {', '.join(map(repr, others))}; send one BYTES input 'prompt'", field="inputs"
        )
    if len(prompts) != 1:
        raise BadRequest(
            "inputs: send exactly one BYTES input named 'prompt' (shape [N], one prompt each)", field="inputs"
        )
    (tensor,) = prompts
    if tensor.datatype != "BYTES":
        raise BadRequest(f"inputs.prompt: datatype must be BYTES (got {tensor.datatype})", field="inputs")
    if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data or []):
        raise BadRequest(
            f"inputs.prompt: shape must be [N] with N prompts (got {tensor.shape} for {len(tensor.data or [])} values)",
            field="inputs",
        )
    parameters = plain_parameters(request.parameters or {})
    if "prompt" in parameters:
        raise BadRequest("parameters: 'prompt' belongs in the inputs", field="parameters")
    return [{"prompt": _text(value), **parameters} for value in tensor.data]


#: Request fields that take a number with a fraction: gRPC's InferParameter has no such type
#: (bool, int64 and string only, kserve/protocol/grpc/grpc_predict_v2.proto), so they come as strings.
_FRACTIONAL = frozenset(
    name for name, field in seed.PromptRequest.model_fields.items() if field.annotation == (float | None)
)


def plain_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Request parameters as JSON values: over HTTP they are already; over gRPC each is a typed
    InferParameter, whose value is its one set field (a fractional number arrives as a string)."""
    plain = {}
    for name, value in parameters.items():
        if isinstance(value, InferParameter):
            kind = value.WhichOneof("parameter_choice")
            value = None if kind is None else getattr(value, kind)
            if kind == "string_param" and name in _FRACTIONAL:
                value = _number(name, value)
        if name == "structured_outputs" and isinstance(value, str):
            value = _object(name, value)  # gRPC has no object parameter: the object as JSON text
        plain[name] = value
    return plain


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadRequest(f"parameters.{name}: must be a number (got {text!r})", field="parameters") from None


def _object(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest(
            f"parameters.{name}: must be an object or its JSON text (got {text[:40]!r})", field="parameters"
        ) from None


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("inputs.prompt: every element must be UTF-8 text", field="inputs") from None
    return value  # a string, or a wrong type that validation names


def error(failure: Failure) -> dict[str, Any]:
    """An error as KServe's v2 clients expect it: ``{"error": "..."}``."""
    return {"error": failure.message}


def response(
    model_name: str,
    request_id: str | None,
    completions: Sequence[Sequence[Completion]],
    details: bool = False,
    notes: Sequence[str] = (),
    prompts: Sequence[str] = (),
) -> InferResponse:
    """The ``text`` tensor (full texts, one row per prompt); with ``details`` also finish reasons and counts."""
    width = len(completions[0])  # the same for every prompt: they share the request's parameters
    shape = [len(completions)] if width == 1 else [len(completions), width]
    flat = [completion for sequences in completions for completion in sequences]
    outputs = [InferOutput(name="text", shape=shape, datatype="BYTES", data=[c.text for c in flat])]
    if details:
        outputs += [
            InferOutput(name="finish_reason", shape=shape, datatype="BYTES", data=[c.finish_reason for c in flat]),
            InferOutput(
                name="generated_tokens", shape=shape, datatype="INT64", data=[c.generated_tokens for c in flat]
            ),
            InferOutput(
                name="prompt_tokens",
                shape=[len(completions)],
                datatype="INT64",
                data=[sequences[0].prompt_tokens for sequences in completions],
            ),
        ]
    if flat[0].logprobs is not None:  # every prompt shares the request's parameters
        texts = [
            json.dumps(logprobs.of_completion(c, prompt, False))
            for prompt, sequences in zip(prompts, completions, strict=True)
            for c in sequences
        ]
        outputs.append(InferOutput(name="logprobs", shape=shape, datatype="BYTES", data=texts))
    return InferResponse(
        response_id=request_id or uuid.uuid4().hex,
        model_name=model_name,
        infer_outputs=outputs,
        parameters={"message": "; ".join(notes)} if notes else None,
    )
