"""The v2 protocol over gRPC (--enable_grpc), with KServe's own InferenceGRPCClient: the same texts as
HTTP v2, gRPC's typed parameters, and each class of error as its gRPC status."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest

from .server import free_port, metrics, ready_server, wait_for

PROMPTS = ["If I was a billionaire, I would", "The weather"]


@pytest.fixture(scope="module")
def served(tiny_dir, cache_dir, tmp_path_factory):
    """gRPC beside HTTP; one sequence at a time and two prompts waiting, faults on demand, a 2 s deadline."""
    port = free_port()
    with ready_server(tiny_dir, cache_dir, tmp_path_factory.mktemp("grpc") / "log", "--enable_grpc", "true",
                      "--grpc_port", str(port), "--max_batch_size", "1", "--max_queued_requests", "2",
                      "--max_prompts", "2", "--fault_injection", "true", "--request_timeout_seconds", "2") as s:
        yield s, port


def infer(port: int, prompts: list[str], parameters: dict | None = None, timeout: float = 60):
    """One ModelInfer call; returns the response, or the grpc.aio.AioRpcError it raised."""
    async def call():
        # retries off: KServe's client retries UNAVAILABLE, and each status must be seen as sent
        client = InferenceGRPCClient(f"127.0.0.1:{port}", channel_args=[("grpc.enable_retries", 0)], timeout=timeout)
        try:
            request = InferRequest(model_name="gptj", parameters=parameters,
                                   infer_inputs=[InferInput("prompt", [len(prompts)], "BYTES", prompts)])
            return await client.infer(request)
        except grpc.aio.AioRpcError as exc:
            return exc
        finally:
            await client.close()

    return asyncio.run(call())


def outputs(response) -> dict:
    return {o.name: o.data for o in response.outputs}


def test_the_same_texts_as_http_v2_with_typed_parameters(served):
    server, port = served
    parameters = {"max_new_tokens": 8, "details": True, "logprobs": 1}
    answer = infer(port, PROMPTS, parameters)
    assert not isinstance(answer, grpc.aio.AioRpcError), answer
    body = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [2], "data": PROMPTS}], "parameters": parameters}
    http = {o["name"]: o["data"] for o in server.client.post("/v2/models/gptj/infer", json=body).json()["outputs"]}
    got = outputs(answer)
    assert [t.decode() if isinstance(t, bytes) else t for t in got["text"]] == http["text"]
    assert list(got["generated_tokens"]) == http["generated_tokens"] == [8, 8]
    assert [json.loads(t) for t in got["logprobs"]] == [json.loads(t) for t in http["logprobs"]]
    # a fraction has no InferParameter type of its own: it comes as a string
    sampled = infer(port, PROMPTS[:1], {"max_new_tokens": 4, "do_sample": True, "temperature": "0.7", "seed": 3})
    again = infer(port, PROMPTS[:1], {"max_new_tokens": 4, "do_sample": True, "temperature": "0.7", "seed": 3})
    assert outputs(sampled)["text"] == outputs(again)["text"]


@pytest.mark.parametrize("prompts, parameters, code, message", [
    (PROMPTS, {"max_new_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens: must be >= 1"),
    (PROMPTS, {"temprature": 1}, grpc.StatusCode.INVALID_ARGUMENT, "temprature: unknown field"),
    (PROMPTS, {"temperature": "warm"}, grpc.StatusCode.INVALID_ARGUMENT, "parameters.temperature: must be a number"),
    (["[[fault:oom]]"], {"max_new_tokens": 2}, grpc.StatusCode.UNAVAILABLE, "ran out of GPU memory"),
    (["[[fault:error]]"], {"max_new_tokens": 2}, grpc.StatusCode.INTERNAL, "generation failed"),
    (["Slow"] * 2, {"max_length": 512, "do_sample": True, "num_return_sequences": 8},
     grpc.StatusCode.DEADLINE_EXCEEDED, "request timeout"),
])
def test_each_error_class_has_its_grpc_status(served, prompts, parameters, code, message):
    server, port = served
    error = infer(port, prompts, parameters)
    assert isinstance(error, grpc.aio.AioRpcError), f"expected {code}, got an answer"
    assert error.code() == code and message in error.details()
    assert not isinstance(infer(port, ["still there?"], {"max_new_tokens": 2}), grpc.aio.AioRpcError)


def test_a_full_queue_is_resource_exhausted(served):
    server, port = served
    with ThreadPoolExecutor(1) as pool:  # one prompt generating, one waiting: no room for two more
        busy = pool.submit(server.predict, [{"prompt": "busy", "max_length": 512}] * 2)
        wait_for(lambda: metrics(server)["gptj_queue_size"] == 1)
        error = infer(port, PROMPTS, {"max_new_tokens": 2})
        busy.result()
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the queue is full" in error.details()
