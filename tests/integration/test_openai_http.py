"""The official `openai` package against the real server's /openai/v1 routes."""

from __future__ import annotations

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-needed", max_retries=0) as c:
        yield c


def test_models(client):
    (model,) = client.models.list().data
    assert model.id == "gptj" and model.object == "model"
    assert client.models.retrieve("gptj").id == "gptj"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_a_completion(client, server):
    prompt = "If I was a billionaire, I would"
    answer = client.completions.create(model="gptj", prompt=prompt, max_tokens=12, temperature=0)
    (choice,) = answer.choices
    assert choice.index == 0 and choice.finish_reason == "length" and choice.text
    greedy = server.predict({"prompt": prompt, "max_new_tokens": 12}).json()["data"]
    assert prompt + choice.text == greedy  # temperature 0 is greedy, as on the seed API
    assert answer.usage.completion_tokens == 12 and answer.usage.total_tokens == answer.usage.prompt_tokens + 12
    assert answer.object == "text_completion" and answer.model == "gptj" and answer.id.startswith("cmpl-")


def test_n_and_several_prompts(client):
    answer = client.completions.create(model="gptj", prompt=["One", "Two"], max_tokens=6, n=3, seed=4)
    assert [choice.index for choice in answer.choices] == list(range(6))
    assert len({choice.text for choice in answer.choices[:3]}) > 1  # sampled: n different answers
    assert answer.usage.completion_tokens == 36


def test_seed_stop_and_echo(client):
    fields = {"model": "gptj", "prompt": "The weather", "max_tokens": 20, "temperature": 0.9, "seed": 123}
    first, second = client.completions.create(**fields), client.completions.create(**fields)
    assert first.choices[0].text == second.choices[0].text  # same seed, same text
    text = first.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stopped = client.completions.create(**fields, stop=[stop], echo=True).choices[0]
    assert stopped.text == "The weather" + text[: text.index(stop)] and stopped.finish_reason == "stop"


def test_streaming(client):
    fields = {"model": "gptj", "prompt": ["A", "B"], "max_tokens": 15, "n": 2, "seed": 8}
    chunks = list(client.completions.create(**fields, stream=True, stream_options={"include_usage": True}))
    texts, finish = {}, {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert finish == {i: "length" for i in range(4)}
    whole = client.completions.create(**fields)
    assert [texts[i] for i in range(4)] == [choice.text for choice in whole.choices]  # seeded: the same texts
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 60


def test_a_stream_ends_with_done(server):
    body = {"model": "gptj", "prompt": "Hi", "max_tokens": 3, "stream": True}
    with server.client.stream("POST", "/openai/v1/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: {") for line in lines[:-1])


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"logprobs": 6}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_bad_requests_are_400s_in_openais_format(client, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**{"model": "gptj", "prompt": "Hi", **fields})
    error = caught.value.body
    assert caught.value.status_code == 400 and error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"].startswith(f"{param}: ")


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gpt-4", prompt="Hi")
    assert "model 'gpt-4' is not served here" in caught.value.body["message"]


def test_errors_are_openai_errors_for_raw_http_too(server):
    response = server.client.post(
        "/openai/v1/completions", content=b"{not json", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("request body is not valid")
    response = httpx.get(f"{server.url}/openai/v1/completions")
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"
