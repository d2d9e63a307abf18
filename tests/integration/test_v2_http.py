"""The Open Inference Protocol v2 route, with raw HTTP and with KServe's own InferenceRESTClient."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

INFER = "/v2/models/gptj/infer"


def tensor(prompts: list[str]) -> dict:
    return {"name": "prompt", "datatype": "BYTES", "shape": [len(prompts)], "data": prompts}


def test_metadata_describes_the_tensors(server):
    metadata = server.client.get("/v2/models/gptj").json()
    assert metadata["name"] == "gptj"
    assert metadata["inputs"] == [{"name": "prompt", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == [
        "text",
        "finish_reason",
        "generated_tokens",
        "prompt_tokens",
        "logprobs",
    ]


def test_raw_http(server):
    prompts = ["If I was a billionaire, I would", "The weather"]
    body = {"id": "req-1", "inputs": [tensor(prompts)], "parameters": {"max_new_tokens": 8}}
    answer = server.client.post(INFER, json=body).json()
    (text,) = answer["outputs"]
    assert answer["id"] == "req-1" and answer["model_name"] == "gptj"
    assert text["name"] == "text" and text["datatype"] == "BYTES" and text["shape"] == [2]
    expected = server.predict([{"prompt": p, "max_new_tokens": 8} for p in prompts]).json()["data"]
    assert text["data"] == expected  # the same texts as the seed API


def test_details_sequences_and_notes(server):
    body = {
        "inputs": [tensor(["One", "Two"])],
        "parameters": {
            "max_new_tokens": 5,
            "do_sample": True,
            "num_return_sequences": 2,
            "seed": 1,
            "details": True,
            "length_penalty": 2.0,
        },
    }
    answer = server.client.post(INFER, json=body).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["text"]["shape"] == [2, 2] and len(outputs["text"]["data"]) == 4
    assert outputs["finish_reason"]["data"] == ["length"] * 4 and outputs["generated_tokens"]["data"] == [5] * 4
    assert outputs["prompt_tokens"]["shape"] == [2]
    assert "[1].length_penalty only applies with num_beams > 1; ignored" in answer["parameters"]["message"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"inputs": [tensor(["a"])], "parameters": {"max_new_tokens": 0}}, "max_new_tokens: must be >= 1 (got 0)"),
        ({"inputs": [tensor(["a"])], "parameters": {"temprature": 1}}, "temprature: unknown field"),
        ({"inputs": [{**tensor(["a"]), "name": "text"}]}, "inputs: unknown input(s) 'text'"),
        (
            {"inputs": [{"name": "prompt", "datatype": "INT32", "shape": [1], "data": [1]}]},
            "inputs.prompt: datatype must be BYTES (got INT32)",
        ),
        ({"inputs": [tensor([""])]}, "prompt: must not be empty"),
    ],
)
def test_bad_requests_are_400s_in_v2s_error_form(server, body, message):
    response = server.client.post(INFER, json=body)
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert message in response.json()["error"]


def infer(server, request: InferRequest):
    async def go():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            return await client.infer(server.url, request, model_name="gptj")

    return asyncio.run(go())


def test_kserves_client(server):
    request = InferRequest(
        model_name="gptj",
        infer_inputs=[InferInput("prompt", [1], "BYTES", ["Hello there"])],
        parameters={"max_new_tokens": 6},
    )
    (output,) = infer(server, request).outputs
    expected = server.predict({"prompt": "Hello there", "max_new_tokens": 6}).json()["data"]
    assert output.name == "text" and output.shape == [1] and output.data == [expected]


def test_kserves_client_with_binary_tensors(server):
    prompt = InferInput("prompt", [2], "BYTES")
    prompt.set_data_from_numpy(np.array([b"Hello", "Grüße".encode()], dtype=np.object_), binary_data=True)
    request = InferRequest(model_name="gptj", infer_inputs=[prompt], parameters={"max_new_tokens": 4})
    (output,) = infer(server, request).outputs
    texts = [t.decode() if isinstance(t, bytes) else t for t in output.data]
    assert len(texts) == 2 and texts[0].startswith("Hello") and texts[1].startswith("Grüße")


def test_kserves_client_raises_with_the_message(server):
    request = InferRequest(
        model_name="gptj", infer_inputs=[InferInput("prompt", [1], "BYTES", ["a"])], parameters={"max_new_tokens": -1}
    )
    with pytest.raises(httpx.HTTPStatusError) as caught:
        infer(server, request)
    assert caught.value.response.status_code == 400 and "max_new_tokens: must be >= 1" in str(caught.value)
