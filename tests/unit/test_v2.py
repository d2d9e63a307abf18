"""The v2 protocol's tensors: a BYTES `prompt` in, a BYTES `text` out (with details, more outputs)."""

from __future__ import annotations

import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from predictor.core import Completion
from predictor.errors import BadRequest
from predictor.protocols import v2


def infer(*inputs: InferInput, parameters=None) -> InferRequest:
    return InferRequest(model_name="gptj", infer_inputs=list(inputs), parameters=parameters)


def prompt(data, shape=None, datatype="BYTES", name="prompt") -> InferInput:
    return InferInput(name=name, shape=shape or [len(data)], datatype=datatype, data=data)


def test_each_element_becomes_a_request_object_with_the_parameters():
    request = infer(prompt(["Hello", b"W\xc3\xb6rld"]), parameters={"max_new_tokens": 5, "do_sample": True})
    assert v2.request_objects(request) == [
        {"prompt": "Hello", "max_new_tokens": 5, "do_sample": True},
        {"prompt": "Wörld", "max_new_tokens": 5, "do_sample": True},
    ]


@pytest.mark.parametrize(
    "request_, message",
    [
        (infer(prompt(["a"]), prompt(["b"], name="context")), "inputs: unknown input(s) 'context'"),
        (infer(prompt(["a"], name="text")), "inputs: unknown input(s) 'text'"),
        (infer(prompt([1], datatype="INT32")), "inputs.prompt: datatype must be BYTES (got INT32)"),
        (infer(prompt(["a", "b"], shape=[1, 2])), "inputs.prompt: shape must be [N] with N prompts"),
        (infer(prompt([b"\xff"])), "inputs.prompt: every element must be UTF-8 text"),
        (infer(prompt(["a"]), parameters={"prompt": "b"}), "parameters: 'prompt' belongs in the inputs"),
    ],
)
def test_malformed_tensors_are_named(request_, message):
    with pytest.raises(BadRequest) as caught:
        v2.request_objects(request_)
    assert message in caught.value.message


def test_response_tensors():
    completions = [
        [Completion("A x", " x", "length", 1, 1), Completion("A y", " y", "eos", 1, 3)],
        [Completion("B z", " z", "stop", 2, 2), Completion("B w", " w", "length", 2, 1)],
    ]
    plain = v2.response("gptj", "id-1", completions)
    assert plain.id == "id-1" and [o.name for o in plain.outputs] == ["text"]
    assert plain.outputs[0].shape == [2, 2] and plain.outputs[0].data == ["A x", "A y", "B z", "B w"]
    detailed = v2.response("gptj", None, completions, details=True, notes=["seed only applies with sampling"])
    outputs = {o.name: (o.shape, o.data) for o in detailed.outputs}
    assert outputs["finish_reason"] == ([2, 2], ["length", "eos", "stop", "length"])
    assert outputs["generated_tokens"] == ([2, 2], [1, 3, 2, 1]) and outputs["prompt_tokens"] == ([2], [1, 2])
    assert detailed.parameters == {"message": "seed only applies with sampling"}


def test_grpcs_typed_parameters_read_as_json_values():
    """gRPC's InferParameter has bool, int64 and string values only: a fraction comes as a string."""
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter

    typed = {
        "max_new_tokens": InferParameter(int64_param=5),
        "do_sample": InferParameter(bool_param=True),
        "stop": InferParameter(string_param="\n"),
        "temperature": InferParameter(string_param="0.7"),
        "top_p": InferParameter(int64_param=1),
    }
    assert v2.plain_parameters(typed) == {
        "max_new_tokens": 5,
        "do_sample": True,
        "stop": "\n",
        "temperature": 0.7,
        "top_p": 1,
    }
    assert v2.plain_parameters({"temperature": 0.7}) == {"temperature": 0.7}  # HTTP: JSON values as they are
    with pytest.raises(BadRequest, match="parameters.temperature: must be a number"):
        v2.plain_parameters({"temperature": InferParameter(string_param="warm")})
