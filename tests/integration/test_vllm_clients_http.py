"""What clients written for OpenAI or vLLM expect of the /openai routes, against the real server:
one choice per streamed chunk, the sampled token among its top_logprobs, the context-overflow error
LangChain and litellm recognise, vLLM's tokenize/detokenize and health routes, and usage on every
chunk (stream_options.continuous_usage_stats)."""

from __future__ import annotations

import json

import openai
import pytest


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-needed", max_retries=0) as c:
        yield c


def events(server, body: dict) -> list[dict]:
    with server.client.stream("POST", "/openai/v1/completions", json={"model": "gptj", **body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "greedy copies"])
def test_n_2_streams_one_choice_per_chunk_and_a_finish_chunk_per_index(client, sampled):
    fields = {"model": "gptj", "prompt": "Once upon a time", "max_tokens": 10, "n": 2}
    fields.update({"seed": 5} if sampled else {"temperature": 0})
    chunks = list(client.completions.create(**fields, stream=True))
    assert chunks and all(len(chunk.choices) == 1 for chunk in chunks)  # a chunk.choices[0] reader sees all
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {0: [], 1: []}
    for chunk in chunks:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finishes[choice.index].append(choice.finish_reason)
    assert finishes == {0: ["length"], 1: ["length"]}
    whole = client.completions.create(**fields)
    assert [texts[0], texts[1]] == [choice.text for choice in whole.choices]


def test_logprobs_1_always_hold_the_sampled_token(client):
    """OpenAI: "the API will always return the logprob of the sampled token, so there may be up to
    logprobs+1 elements". At temperature 2 over the random model's flat distribution, most sampled
    tokens are not the likeliest: each must still be in its top_logprobs, with its own logprob."""
    outside = 0
    for seed in range(4):
        for stream in (False, True):
            fields = {"model": "gptj", "prompt": "The", "max_tokens": 12, "temperature": 2.0, "logprobs": 1}
            answer = client.completions.create(**fields, seed=seed, stream=stream)
            parts = [c.choices[0].logprobs for c in answer if c.choices] if stream else [answer.choices[0].logprobs]
            for lp in filter(None, parts):
                for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
                    assert token in top and 1 <= len(top) <= 2
                    if len(top) == 2:
                        assert top[token] == logprob and logprob < max(top.values())
                        outside += 1
    assert outside > 0  # the case the rule is for did happen


def test_a_prompt_over_the_context_is_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gptj", prompt=[[1, 2], [1] * 600], max_tokens=2)
    error = caught.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert error["type"] == "invalid_request_error" and "prompt[1]" in error["message"]
    assert error["message"].startswith("This model's maximum context length is 512 tokens. However, you requested 600")
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gptj", prompt="Hi", max_tokens=600)
    error = caught.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    assert error["message"].startswith("This model's maximum context length is 512 tokens. However, you requested")


def test_an_indexed_field_names_its_param(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gptj", prompt=[[1, 2], [1, 99999]], max_tokens=2)
    assert caught.value.body["param"] == "prompt" and caught.value.body["message"].startswith("prompt[1][1]: ")


def test_tokenize_and_detokenize_round_trip(server, client):
    text = "Tokenize me, then put me back together."
    tokenized = server.client.post("/openai/tokenize", json={"model": "gptj", "prompt": text})
    assert tokenized.status_code == 200
    body = tokenized.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] == 512
    assert client.completions.create(model="gptj", prompt=text, max_tokens=1).usage.prompt_tokens == body["count"]
    back = server.client.post("/openai/detokenize", json={"tokens": body["tokens"]})  # model is optional
    assert back.status_code == 200 and back.json() == {"prompt": text}
    strs = server.client.post("/openai/tokenize", json={"prompt": text, "return_token_strs": True}).json()
    assert strs["tokens"] == body["tokens"] and len(strs["token_strs"]) == body["count"]


@pytest.mark.parametrize(
    "path, body, status, param, message",
    [
        ("/openai/tokenize", {"prompt": 5}, 400, "prompt", "prompt: must be a string"),
        ("/openai/tokenize", {"prompt": "x", "messages": []}, 400, "messages", "messages: unknown field"),
        ("/openai/tokenize", {}, 400, "prompt", "prompt: is required"),
        ("/openai/tokenize", {"prompt": "x", "add_special_tokens": 1}, 400, "add_special_tokens", "add_special"),
        ("/openai/detokenize", {"tokens": [1, 99999]}, 400, "tokens", "tokens[1]: token id 99999 is outside"),
        ("/openai/detokenize", {"tokens": "1 2"}, 400, "tokens", "tokens: must be a list"),
        ("/openai/detokenize", [1, 2], 400, "body", "body: must be a JSON object"),
        ("/openai/tokenize", {"model": "gpt-4", "prompt": "x"}, 404, None, "model 'gpt-4' is not served here"),
    ],
)
def test_tokenizer_routes_refuse_bad_input_naming_the_field(server, path, body, status, param, message):
    response = server.client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"].startswith(message), error


def test_health_is_200_once_ready(server):
    response = server.client.get("/openai/health")
    assert response.status_code == 200 and response.content == b""


def test_continuous_usage_stats_put_usage_on_every_chunk(server):
    options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = events(
        server, {"prompt": "Count my tokens", "max_tokens": 6, "n": 2, "seed": 1, "stream_options": options}
    )
    *per_choice, last = chunks
    prompt_tokens = last["usage"]["prompt_tokens"]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 12
    seen: dict[int, list[int]] = {0: [], 1: []}
    for chunk in per_choice:
        usage, (choice,) = chunk["usage"], chunk["choices"]
        assert usage["prompt_tokens"] == prompt_tokens
        assert usage["total_tokens"] == prompt_tokens + usage["completion_tokens"]
        seen[choice["index"]].append(usage["completion_tokens"])
    for counts in seen.values():  # each choice's own count, growing to its max_tokens
        assert counts == sorted(counts) and counts[-1] == 6 and counts[0] >= 1
    plain = events(server, {"prompt": "Count my tokens", "max_tokens": 3, "stream_options": {"include_usage": True}})
    assert all(chunk["usage"] is None for chunk in plain[:-1]) and plain[-1]["usage"]["completion_tokens"] == 3
