"""Scoring through the official `openai` client: logprobs, echo scoring, token-id prompts, streamed
logprobs, and an evaluation harness's loglikelihood flow, checked against a plain forward pass."""

from __future__ import annotations

import json

import openai
import pytest
import torch

from .server import ready_server

CONTEXT = "The capital of the country is"


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="not-needed", max_retries=0) as c:
        yield c


def forward(reference, ids: list[int]) -> torch.Tensor:
    """log-softmax at every position of a plain forward pass of the model (no server code)."""
    with torch.inference_mode():
        return torch.log_softmax(reference.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def test_logprobs_5_report_each_generated_tokens_step_distribution(client, reference):
    answer = client.completions.create(model="gptj", prompt=CONTEXT, max_tokens=6, temperature=0, logprobs=5)
    (choice,) = answer.choices
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == len(CONTEXT)  # offsets count from the prompt's start, echo or not
    offsets = zip(lp.text_offset[:-1], lp.text_offset[1:], lp.tokens[:-1], strict=True)
    assert all(end - start == len(token) for start, end, token in offsets)
    ids = reference.tokenizer(CONTEXT + choice.text).input_ids
    expected = forward(reference, ids)
    start = len(reference.tokenizer(CONTEXT).input_ids) - 1
    for step, (logprob, top) in enumerate(zip(lp.token_logprobs, lp.top_logprobs, strict=True)):
        row = expected[start + step]
        assert logprob == pytest.approx(row[ids[start + step + 1]].item(), abs=1e-4)
        assert len(top) == 5 and max(top.values()) == pytest.approx(logprob, abs=1e-6)  # greedy: the likeliest
        assert sorted(top.values(), reverse=True) == pytest.approx(row.topk(5).values.tolist(), abs=1e-4)


def test_echo_scoring_with_no_new_tokens_equals_a_forward_pass(client, reference):
    answer = client.completions.create(model="gptj", prompt=CONTEXT, echo=True, max_tokens=0, logprobs=1, temperature=0)
    (choice,) = answer.choices
    lp = choice.logprobs
    ids = reference.tokenizer(CONTEXT).input_ids
    assert choice.text == CONTEXT and answer.usage.completion_tokens == 0
    assert "".join(lp.tokens) == CONTEXT and lp.text_offset[0] == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    expected = forward(reference, ids)
    for position in range(1, len(ids)):
        assert lp.token_logprobs[position] == pytest.approx(expected[position - 1, ids[position]].item(), abs=1e-4)
        # OpenAI's rule: the prompt's own token is among its top_logprobs, so 1 or 2 entries
        top = lp.top_logprobs[position]
        assert lp.tokens[position] in top and 1 <= len(top) <= 2


@pytest.fixture(scope="module")
def chunked(tiny_dir, cache_dir, tmp_path_factory):
    """A client of a server that prefills prompts 3 tokens at a time (a chunk per engine step)."""
    log = tmp_path_factory.mktemp("chunked") / "server.log"
    with (
        ready_server(tiny_dir, cache_dir, log, "--max_prefill_tokens", "3") as s,
        openai.OpenAI(base_url=f"{s.url}/openai/v1", api_key="not-needed", max_retries=0) as c,
    ):
        yield c


def test_prompts_prefilled_in_chunks_score_and_generate_as_in_one_piece(chunked, client, reference):
    ids = reference.tokenizer(CONTEXT).input_ids
    assert len(ids) > 2 * 3  # three chunks at least
    answer = chunked.completions.create(model="gptj", prompt=CONTEXT, echo=True, max_tokens=0, logprobs=1)
    lp, expected = answer.choices[0].logprobs, forward(reference, ids)
    for position in range(1, len(ids)):
        assert lp.token_logprobs[position] == pytest.approx(expected[position - 1, ids[position]].item(), abs=1e-4)
    asked = {"model": "gptj", "prompt": CONTEXT, "max_tokens": 12, "temperature": 0}
    assert chunked.completions.create(**asked).choices[0].text == client.completions.create(**asked).choices[0].text


def test_token_id_prompts_one_or_several(client, reference):
    ids = reference.tokenizer(CONTEXT).input_ids
    as_text = client.completions.create(model="gptj", prompt=CONTEXT, max_tokens=5, temperature=0)
    as_ids = client.completions.create(model="gptj", prompt=ids, max_tokens=5, temperature=0)
    assert as_ids.choices[0].text == as_text.choices[0].text
    assert as_ids.usage.prompt_tokens == len(ids)
    several = client.completions.create(model="gptj", prompt=[ids, ids[:2]], max_tokens=3, temperature=0, echo=True)
    assert several.choices[0].text.startswith(CONTEXT) and len(several.choices) == 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gptj", prompt=[ids, [1, 99999]], max_tokens=3)
    assert "prompt[1][1]: token id 99999 is outside the vocabulary" in str(caught.value)


def test_streamed_chunks_carry_logprobs(client):
    fields = {"model": "gptj", "prompt": CONTEXT, "max_tokens": 8, "temperature": 0, "logprobs": 2}
    whole = client.completions.create(**fields).choices[0]
    chunks = [c for c in client.completions.create(**fields, stream=True) if c.choices]
    tokens, offsets, text = [], [], ""
    for chunk in chunks:
        (choice,) = chunk.choices
        text += choice.text
        if choice.logprobs is not None:
            tokens += choice.logprobs.tokens
            offsets += choice.logprobs.text_offset
    assert text == whole.text and tokens == whole.logprobs.tokens and offsets == whole.logprobs.text_offset
    assert sum(1 for c in chunks if c.choices[0].logprobs and c.choices[0].logprobs.tokens) > 1  # not only at the end
    echoed = [c for c in client.completions.create(**{**fields, "max_tokens": 0}, stream=True, echo=True) if c.choices]
    first = echoed[0].choices[0]
    assert first.text == CONTEXT and first.logprobs.token_logprobs[0] is None


def test_an_evaluation_harness_picks_the_likelier_continuation(client, reference):
    """lm-evaluation-harness's local-completions loglikelihood: token ids, echo, max_tokens 0, logprobs 1."""
    context = reference.tokenizer(CONTEXT).input_ids
    continuations = [reference.tokenizer(" Paris").input_ids, reference.tokenizer(" banana bread").input_ids]
    answer = client.completions.create(
        model="gptj", prompt=[context + c for c in continuations], echo=True, max_tokens=0, logprobs=1, temperature=0
    )
    served, expected = [], []
    for choice, continuation in zip(sorted(answer.choices, key=lambda c: c.index), continuations, strict=True):
        served.append(sum(choice.logprobs.token_logprobs[len(context) :]))
        ids = context + continuation
        row = forward(reference, ids)
        expected.append(sum(row[i - 1, ids[i]].item() for i in range(len(context), len(ids))))
    assert served == pytest.approx(expected, abs=1e-3)
    assert served.index(max(served)) == expected.index(max(expected))


def test_seed_details_and_v2_report_logprobs(server):
    data = server.predict({"prompt": CONTEXT, "max_new_tokens": 4, "logprobs": 2}).json()["data"]
    assert data["text"].startswith(CONTEXT) and len(data["logprobs"]["tokens"]) == data["generated_tokens"] == 4
    assert all(len(top) == 2 for top in data["logprobs"]["top_logprobs"])
    body = {
        "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": [CONTEXT]}],
        "parameters": {"max_new_tokens": 4, "logprobs": 2},
    }
    outputs = {o["name"]: o for o in server.client.post("/v2/models/gptj/infer", json=body).json()["outputs"]}
    (text,) = outputs["logprobs"]["data"]
    assert json.loads(text) == data["logprobs"]  # greedy: the same tokens and numbers as the seed API
    metadata = server.client.get("/v2/models/gptj").json()
    assert {"name": "logprobs", "datatype": "BYTES", "shape": [-1]} in metadata["outputs"]
    refused = server.predict({"prompt": CONTEXT, "num_beams": 2, "num_beam_groups": 2, "logprobs": 1})
    assert (
        refused.status_code == 400 and "logprobs: not available with diverse beam search" in refused.json()["message"]
    )
