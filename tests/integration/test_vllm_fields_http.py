"""vLLM's sampling extensions through the real server: each does what vLLM says, on /openai/v1 (and
min_p / stop_token_ids on the seed API); bad values are 400s naming the field."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

PROMPT = "If I was a billionaire, I would"
EOS_TEXT = "<|endoftext|>"


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-needed", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def eos_server(eos_dir, cache_dir, tmp_path_factory):
    """A model for which EOS is the likeliest token at every step."""
    from .server import ready_server

    with ready_server(eos_dir, cache_dir, tmp_path_factory.mktemp("eos-vllm") / "log") as s:
        yield s


@pytest.fixture(scope="module")
def eos_client(eos_server):
    with openai.OpenAI(base_url=f"{eos_server.url}/openai/v1", api_key="not-needed", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def greedy(reference) -> tuple[list[int], int]:
    """transformers' greedy continuation of PROMPT (12 token ids), and a position whose token is new there."""
    ids = torch.tensor([reference.tokenizer(PROMPT).input_ids])
    with torch.inference_mode():
        out = reference.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=reference.eos,
            eos_token_id=reference.eos,
        )
    tokens = out[0, ids.shape[1] :].tolist()
    at = next(i for i in range(2, len(tokens)) if tokens[i] not in tokens[:i])
    return tokens, at


def decode(reference, tokens) -> str:
    return reference.tokenizer.decode(tokens, skip_special_tokens=True)


def complete(client, **fields):
    (choice,), usage = (answer := client.completions.create(model="gptj", **fields)).choices, answer.usage
    return choice.text, choice.finish_reason, usage.completion_tokens


def test_stop_token_ids_end_the_completion_before_the_token(client, reference, greedy):
    tokens, at = greedy
    fields = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    assert complete(client, **fields) == (decode(reference, tokens), "length", 12)  # without: all 12
    stopped = complete(client, **fields, extra_body={"stop_token_ids": [tokens[at], 1]})
    assert stopped == (decode(reference, tokens[:at]), "stop", at)
    kept = complete(client, **fields, extra_body={"stop_token_ids": [tokens[at]], "include_stop_str_in_output": True})
    assert kept == (decode(reference, tokens[: at + 1]), "stop", at + 1)
    chunks = list(
        client.completions.create(model="gptj", **fields, stream=True, extra_body={"stop_token_ids": [tokens[at]]})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == decode(reference, tokens[:at])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_the_seed_api_takes_stop_token_ids_too(server, reference, greedy):
    tokens, at = greedy
    body = server.predict(
        {"prompt": PROMPT, "max_new_tokens": 12, "stop_token_ids": [tokens[at]], "details": True}
    ).json()
    assert body["status"] == "success", body
    assert body["data"]["text"] == PROMPT + decode(reference, tokens[:at]) and body["data"]["finish_reason"] == "stop"
    assert body["data"]["generated_tokens"] == at


def test_min_tokens_holds_off_eos_and_stop_ids(eos_client, client, greedy):
    assert complete(eos_client, prompt=PROMPT, max_tokens=10, temperature=0) == ("", "stop", 0)  # EOS at once
    text, finish, generated = complete(
        eos_client, prompt=PROMPT, max_tokens=10, temperature=0, extra_body={"min_tokens": 4}
    )
    assert (finish, generated) == ("stop", 4) and EOS_TEXT not in text
    fields = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    first = greedy[0][0]  # the greedy first token: as a stop id it ends the completion at once
    assert complete(client, **fields, extra_body={"stop_token_ids": [first]}) == ("", "stop", 0)
    assert complete(client, **fields, extra_body={"stop_token_ids": [first], "min_tokens": 5})[2] >= 5


def test_ignore_eos_generates_max_tokens_and_skip_special_tokens_shows_eos(eos_client):
    fields = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0}
    assert complete(eos_client, **fields, extra_body={"ignore_eos": True}) == ("", "length", 6)  # EOS's text is special
    shown = complete(eos_client, **fields, extra_body={"ignore_eos": True, "skip_special_tokens": False})
    assert shown == (EOS_TEXT * 6, "length", 6)
    scored = eos_client.completions.create(model="gptj", **fields, logprobs=1, extra_body={"ignore_eos": True})
    assert scored.choices[0].logprobs.tokens == [EOS_TEXT] * 6  # every generated token is reported
    sampled = complete(
        eos_client, **{**fields, "temperature": 1.0}, seed=5, extra_body={"ignore_eos": True, "min_p": 0.5}
    )
    assert sampled[1:] == ("length", 6)


def test_extreme_min_p_and_top_k_sample_greedily(client, reference, greedy):
    expected = decode(reference, greedy[0])
    for extension in ({"min_p": 1.0}, {"top_k": 1}, {"top_k": 1, "min_p": 0.3}):
        for seed in (1, 2):
            text = complete(client, prompt=PROMPT, max_tokens=12, temperature=1.0, seed=seed, extra_body=extension)[0]
            assert text == expected, extension


def test_top_k_minus_one_and_min_p_zero_are_off(client):
    fields = {"prompt": PROMPT, "max_tokens": 12, "temperature": 1.0, "seed": 9}
    plain = complete(client, **fields)
    assert complete(client, **fields, extra_body={"top_k": -1, "min_p": 0.0}) == plain
    assert complete(client, **fields, extra_body={"top_k": 0}) == plain


def test_repetition_penalty_is_transformers_on_both_routes(client, server, reference):
    expected = reference.generate(PROMPT, max_new_tokens=12, repetition_penalty=1.8)[0]
    text = complete(client, prompt=PROMPT, max_tokens=12, temperature=0, extra_body={"repetition_penalty": 1.8})[0]
    assert PROMPT + text == expected
    assert (
        server.predict({"prompt": PROMPT, "max_new_tokens": 12, "repetition_penalty": 1.8}).json()["data"] == expected
    )


def test_seed_api_min_p_one_is_greedy(server):
    greedy_text = server.predict({"prompt": PROMPT, "max_new_tokens": 12}).json()["data"]
    body = {"prompt": PROMPT, "max_new_tokens": 12, "do_sample": True, "min_p": 1.0}
    assert [server.predict({**body, "seed": s}).json()["data"] for s in (1, 2)] == [greedy_text] * 2


@pytest.mark.parametrize(
    "fields, param, message",
    [
        ({"min_p": 2}, "min_p", "min_p: must be <= 1 (got 2)"),
        ({"top_k": -5}, "top_k", "top_k: must be >= -1 (got -5)"),
        ({"min_tokens": 9, "max_tokens": 8}, "min_tokens", "min_tokens: must be <= max_tokens (8) (got 9)"),
        ({"repetition_penalty": 0}, "repetition_penalty", "repetition_penalty: must be >= 0.01 (got 0)"),
        ({"ignore_eos": "yes"}, "ignore_eos", "ignore_eos: must be true or false"),
        ({"stop_token_ids": [-1]}, "stop_token_ids", "stop_token_ids: token ids must be >= 0"),
        (
            {"stop_token_ids": [10**6]},
            "stop_token_ids",
            "stop_token_ids[0]: token id 1000000 is outside the vocabulary",
        ),
        ({"top_a": 1}, "top_a", "top_a: unknown field"),
    ],
)
def test_bad_extensions_are_400s_naming_the_field(server, fields, param, message):
    response = server.client.post("/openai/v1/completions", json={"model": "gptj", "prompt": "Hi", **fields})
    error = response.json()["error"]
    assert response.status_code == 400 and message in error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"min_p": 1.5}, "min_p: must be <= 1 (got 1.5)"),
        ({"stop_token_ids": [10**6]}, "stop_token_ids[0]: token id 1000000 is outside the vocabulary"),
        ({"stop_token_ids": [3], "num_beams": 2}, "stop_token_ids: not available with beam search"),
        ({"ignore_eos": True}, "ignore_eos: unknown field"),
    ],
)
def test_bad_seed_fields_are_400s_in_the_envelope(server, fields, message):
    response = server.predict({"prompt": "Hi", **fields})
    body = response.json()
    assert response.status_code == 400 and body["status"] == "failed" and message in body["message"], body


def test_a_raw_request_with_every_extension(server):
    body = {
        "model": "gptj",
        "prompt": PROMPT,
        "max_tokens": 5,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "min_tokens": 2,
        "ignore_eos": True,
        "stop_token_ids": [3],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }
    response = httpx.post(f"{server.url}/openai/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("length", "stop")
