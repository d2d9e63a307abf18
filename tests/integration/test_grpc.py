"""The v2 protocol over gRPC (--enable_grpc), with KServe's own InferenceGRPCClient: the same texts as
HTTP v2, gRPC's typed parameters, and each class of error as its gRPC status."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from .server import free_port, metrics, ready_server, wait_for

PROMPTS = ["If I was a billionaire, I would", "The weather"]


@pytest.fixture(scope="module")
def served(tiny_dir, cache_dir, tmp_path_factory):
    """gRPC beside HTTP; one sequence at a time and two prompts waiting, faults on demand."""
    port = free_port()
    with ready_server(
        tiny_dir,
        cache_dir,
        tmp_path_factory.mktemp("grpc") / "log",
        "--enable_grpc",
        "true",
        "--grpc_port",
        str(port),
        "--max_batch_size",
        "1",
        "--max_queued_requests",
        "2",
        "--max_prompts",
        "2",
        "--fault_injection",
        "true",
    ) as s:
        yield s, port


def infer(port: int, prompts: list[str], parameters: dict | None = None, timeout: float = 60, key: str | None = None):
    """One ModelInfer call; returns the response, or the grpc.aio.AioRpcError it raised."""

    async def call():
        # retries off: KServe's client retries UNAVAILABLE, and each status must be seen as sent
        client = InferenceGRPCClient(f"127.0.0.1:{port}", channel_args=[("grpc.enable_retries", 0)], timeout=timeout)
        headers = [("authorization", f"Bearer {key}")] if key else None
        try:
            request = InferRequest(
                model_name="gptj",
                parameters=parameters,
                infer_inputs=[InferInput("prompt", [len(prompts)], "BYTES", prompts)],
            )
            return await client.infer(request, headers=headers)
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
    body = {
        "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [2], "data": PROMPTS}],
        "parameters": parameters,
    }
    http = {o["name"]: o["data"] for o in server.client.post("/v2/models/gptj/infer", json=body).json()["outputs"]}
    got = outputs(answer)
    assert [t.decode() if isinstance(t, bytes) else t for t in got["text"]] == http["text"]
    assert list(got["generated_tokens"]) == http["generated_tokens"] == [8, 8]
    assert [json.loads(t) for t in got["logprobs"]] == [json.loads(t) for t in http["logprobs"]]
    # a fraction has no InferParameter type of its own: it comes as a string
    sampled = infer(port, PROMPTS[:1], {"max_new_tokens": 4, "do_sample": True, "temperature": "0.7", "seed": 3})
    again = infer(port, PROMPTS[:1], {"max_new_tokens": 4, "do_sample": True, "temperature": "0.7", "seed": 3})
    assert outputs(sampled)["text"] == outputs(again)["text"]


@pytest.mark.parametrize(
    "prompts, parameters, code, message",
    [
        (PROMPTS, {"max_new_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens: must be >= 1"),
        (PROMPTS, {"temprature": 1}, grpc.StatusCode.INVALID_ARGUMENT, "temprature: unknown field"),
        (
            PROMPTS,
            {"temperature": "warm"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameters.temperature: must be a number",
        ),
        (["[[fault:oom]]"], {"max_new_tokens": 2}, grpc.StatusCode.UNAVAILABLE, "ran out of GPU memory"),
        (["[[fault:error]]"], {"max_new_tokens": 2}, grpc.StatusCode.INTERNAL, "generation failed"),
    ],
)
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


def test_with_api_keys_grpc_calls_need_one_too(tiny_dir, cache_dir, tmp_path):
    """--api_keys_file guards gRPC as it guards HTTP: inference and metadata need a key, probes do not."""
    (tmp_path / "keys").write_text("grpc-key-1\n")
    port = free_port()
    with ready_server(
        tiny_dir,
        cache_dir,
        tmp_path / "log",
        "--enable_grpc",
        "true",
        "--grpc_port",
        str(port),
        "--api_keys_file",
        str(tmp_path / "keys"),
    ):
        for key, message in ((None, "missing API key"), ("wrong", "invalid API key")):
            error = infer(port, ["Hi"], {"max_new_tokens": 2}, key=key)
            assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in error.details()
        assert not isinstance(infer(port, ["Hi"], {"max_new_tokens": 2}, key="grpc-key-1"), grpc.aio.AioRpcError)

        async def probes_and_metadata():
            client = InferenceGRPCClient(f"127.0.0.1:{port}", channel_args=[("grpc.enable_retries", 0)])
            try:
                live, ready = await client.is_server_live(), await client.is_model_ready("gptj")
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client._client_stub.ModelMetadata(pb.ModelMetadataRequest(name="gptj"))
                return live, ready, caught.value.code()
            finally:
                await client.close()

        assert asyncio.run(probes_and_metadata()) == (True, True, grpc.StatusCode.UNAUTHENTICATED)


def test_a_deadline_is_deadline_exceeded(tiny_dir, cache_dir, tmp_path):
    port = free_port()
    with ready_server(
        tiny_dir,
        cache_dir,
        tmp_path / "log",
        "--enable_grpc",
        "true",
        "--grpc_port",
        str(port),
        "--request_timeout_seconds",
        "0.2",
    ):
        # 8 beams of 500 new tokens for each of two prompts: seconds of work even on a fast CPU
        error = infer(port, ["Slow"] * 2, {"max_length": 512, "num_beams": 8, "num_return_sequences": 8})
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "request timeout" in error.details()


def test_structured_outputs_as_json_text(served):
    """gRPC parameters are scalars: structured_outputs comes as the object's JSON text, as over HTTP v2."""
    _, port = served
    choices = ["red", "green", "blue sky"]
    parameters = {
        "max_new_tokens": 12,
        "do_sample": True,
        "seed": 2,
        "structured_outputs": json.dumps({"choice": choices}),
    }
    answer = infer(port, PROMPTS[:1], parameters)
    assert not isinstance(answer, grpc.aio.AioRpcError), answer
    (text,) = outputs(answer)["text"]
    assert (text.decode() if isinstance(text, bytes) else text).removeprefix(PROMPTS[0]) in choices
    bad = infer(port, PROMPTS[:1], {"structured_outputs": json.dumps({"regex": "(a"})})
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "structured_outputs.regex" in bad.details()
