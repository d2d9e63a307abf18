"""The OpenAI completions request: validation in OpenAI's terms, translation, and the response."""

from __future__ import annotations

import re

import pytest

from predictor.core import Completion, GenerationRequest, Sampling
from predictor.errors import BadRequest, ContextLengthExceeded, classify
from predictor.protocols import openai as oa
from predictor.settings import Limits

BASE = {"model": "gptj", "prompt": "Hello"}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"logprobs": 6}, "logprobs: must be <= 5 (got 6)"),
        ({"logprobs": -1}, "logprobs: must be >= 0 (got -1)"),
        ({"logprobs": True}, "logprobs: must be an integer"),
        ({"best_of": 2}, "best_of: not supported"),
        ({"suffix": "x"}, "suffix: not supported"),
        ({"logit_bias": {"50256": -100}}, "logit_bias: not supported"),
        ({"max_tokens": 0}, "max_tokens: must be >= 1 (got 0); 0 is for scoring a prompt, with echo: true"),
        ({"max_tokens": -1}, "max_tokens: must be >= 0 (got -1)"),
        ({"temperature": 2.5}, "temperature: must be <= 2 (got 2.5)"),
        ({"top_p": 0}, "top_p: must be > 0 (got 0)"),
        ({"presence_penalty": -3}, "presence_penalty: must be >= -2 (got -3)"),
        ({"frequency_penalty": 2.1}, "frequency_penalty: must be <= 2 (got 2.1)"),
        ({"n": 9}, "n: must be <= 8 (got 9)"),
        (
            {"prompt": [1, "a"]},
            "prompt: must be a string, a list of strings, a list of token ids, or a list of "
            "lists of token ids (got a list)",
        ),
        ({"prompt": [True, 2]}, "prompt: must be a string, a list of strings, a list of token ids"),
        ({"prompt": [[1], [2.5]]}, "prompt: must be a string, a list of strings, a list of token ids"),
        (
            {"prompt": 5},
            "prompt: must be a string, a list of strings, a list of token ids, or a list of lists "
            "of token ids (got a number)",
        ),
        ({"prompt": []}, "prompt: must hold at least one prompt"),
        ({"prompt": [[1], []]}, "prompt: must hold at least one prompt, and a token-id prompt at least one token"),
        ({"prompt": [[1]] * 17}, "prompt: at most 16 prompts per request (got 17)"),
        ({"prompt": ["a"] * 17}, "prompt: at most 16 prompts per request (got 17)"),
        ({"max_tokens": "5"}, "max_tokens: must be an integer"),
        ({"temprature": 1}, "temprature: unknown field (allowed: model, prompt, max_tokens"),
        ({"model": None}, "model: must be a string"),
    ],
)
def test_parse_rejects_naming_the_field(fields, message):
    with pytest.raises(BadRequest) as caught:
        oa.parse({**BASE, **fields}, Limits())
    assert message in caught.value.message


def test_parse_accepts_off_values_of_unsupported_fields():
    req = oa.parse({**BASE, "best_of": 1, "logit_bias": {}, "user": "someone"}, Limits())
    assert req.best_of == 1


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({}, {"do_sample": True, "temperature": 1.0, "top_k": 0}),
        ({"temperature": 0, "n": 3}, {}),  # greedy: one answer, copied n times
        (
            {"temperature": 0.5, "top_p": 0.9, "n": 2, "seed": 7, "stop": ["\n"], "max_tokens": 5},
            {
                "max_length": 3 + 5,
                "do_sample": True,
                "temperature": 0.5,
                "top_p": 0.9,
                "top_k": 0,
                "seed": 7,
                "num_return_sequences": 2,
                "stop": ("\n",),
            },
        ),
        (
            {"presence_penalty": 0.5, "frequency_penalty": -1, "stop": "x"},
            {
                "do_sample": True,
                "temperature": 1.0,
                "top_k": 0,
                "presence_penalty": 0.5,
                "frequency_penalty": -1,
                "stop": ("x",),
            },
        ),
    ],
)
def test_one_translation_into_the_engines_request(fields, expected):
    (generation,) = oa.requests(oa.parse({**BASE, **fields}, Limits()), ["Hello"], [[1, 2, 3]], Limits())
    assert generation.prompt == "Hello" and generation.input_ids == (1, 2, 3) and generation.notes == ()
    assert generation.sampling == Sampling(**{"max_length": 3 + 16, **expected})
    assert generation.wants_list == (expected.get("num_return_sequences", 1) > 1)


@pytest.mark.parametrize(
    "prompt, prompts",
    [("Hello", ["Hello"]), (["a", "b"], ["a", "b"]), ([5, 6], [[5, 6]]), ([[5], [6, 7]], [[5], [6, 7]])],
)
def test_token_id_prompts_are_one_or_many(prompt, prompts):
    assert oa.prompts_of(oa.parse({**BASE, "prompt": prompt}, Limits())) == prompts


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([5, 50257], "prompt[1]: token id 50257 is outside the vocabulary (0 to 50256)"),
        ([[5], [6, -1]], "prompt[1][1]: token id -1 is outside the vocabulary (0 to 50256)"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_named(prompt, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        oa.check_vocabulary(oa.parse({**BASE, "prompt": prompt}, Limits()), 50257)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"prompt": ["fine", "bad \ud800"]}, "prompt[1]: must be valid Unicode text (lone surrogate at character 4)"),
        ({"prompt": "bad \ud800"}, "prompt: must be valid Unicode text (lone surrogate at character 4)"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop: must hold at most 4 strings (got 5)"),
        ({"stop": ""}, "stop: strings must be 1 to 100 characters long"),
        ({"temperature": 1e-6}, "temperature: must be 0 (greedy) or >= 1e-05"),
    ],
)
def test_the_seed_apis_bounds_hold_in_openais_names(fields, message):
    with pytest.raises(BadRequest) as caught:
        oa.parse({**BASE, **fields}, Limits())
    assert caught.value.message == message


def test_greedy_n_copies_one_answer():
    assert oa.copies(oa.parse({**BASE, "temperature": 0, "n": 3}, Limits())) == 3
    assert oa.copies(oa.parse({**BASE, "n": 3}, Limits())) == 1  # sampling draws n answers


@pytest.mark.parametrize(
    "prompts, token_ids, message",
    [
        (["a", ""], [[1], []], "prompt[1]: must not be empty"),
        ("", [[]], "prompt: must not be empty"),
    ],
)
def test_empty_prompts_are_400s_naming_the_prompt(prompts, token_ids, message):
    req = oa.parse({**BASE, "prompt": prompts, "max_tokens": 10}, Limits())
    with pytest.raises(BadRequest) as caught:
        oa.requests(req, oa.prompts_of(req), token_ids, Limits())
    assert caught.value.message == message


@pytest.mark.parametrize(
    "prompts, token_ids, message, param",
    [
        (
            ["a", "b"],
            [[1], list(range(512))],
            "This model's maximum context length is 512 tokens. However, you requested 512 tokens in "
            "prompt[1], which leaves no room for the completion (a prompt may have at most 511 tokens). "
            "Please reduce the length of the prompt.",
            "prompt",
        ),
        (
            ["a", "b"],
            [[1], list(range(503))],
            "This model's maximum context length is 512 tokens. However, you requested 513 tokens (503 in "
            "prompt[1], 10 in the completion). Please reduce the length of the prompt or completion (max_tokens).",
            "max_tokens",
        ),
        (
            "a",
            [list(range(503))],
            "This model's maximum context length is 512 tokens. However, you requested 513 tokens (503 in "
            "the prompt, 10 in the completion). Please reduce the length of the prompt or completion (max_tokens).",
            "max_tokens",
        ),
    ],
)
def test_prompts_that_do_not_fit_are_context_length_errors_in_openais_words(prompts, token_ids, message, param):
    """LangChain and litellm tell an overflow by the code and the message's opening (OpenAI's, vLLM's)."""
    req = oa.parse({**BASE, "prompt": prompts, "max_tokens": 10}, Limits())
    with pytest.raises(ContextLengthExceeded) as caught:
        oa.requests(req, oa.prompts_of(req), token_ids, Limits())
    assert caught.value.message == message
    body = oa.error(classify(caught.value))["error"]
    assert body == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "context_length_exceeded",
    }


def test_indexed_fields_name_their_param():
    with pytest.raises(BadRequest) as caught:
        oa.check_vocabulary(oa.parse({**BASE, "prompt": [[1], [2, 3, 4, 99999]]}, Limits()), 50257)
    assert caught.value.message == "prompt[1][3]: token id 99999 is outside the vocabulary (0 to 50256)"
    failure = classify(caught.value)
    assert oa.error(failure)["error"]["param"] == "prompt" and oa.error(failure)["error"]["code"] == 400


def test_param_is_the_field_the_error_was_raised_with_not_read_from_its_message():
    assert oa.error(classify(BadRequest("max_tokens: must be >= 1")))["error"]["param"] is None
    assert oa.error(classify(BadRequest("a message", field="top_p")))["error"]["param"] == "top_p"


def test_a_prompt_that_just_fits_the_context():
    req = oa.parse({**BASE, "max_tokens": 10}, Limits())
    (generation,) = oa.requests(req, oa.prompts_of(req), [list(range(502))], Limits())
    assert generation.sampling.max_length == 512


def generation(prompt: str, tokens: int) -> GenerationRequest:
    return GenerationRequest(prompt, tuple(range(tokens)), Sampling(max_length=tokens + 16))


def test_response_orders_choices_by_prompt_then_n_and_counts_usage():
    req = oa.parse({**BASE, "prompt": ["A", "B"], "n": 2, "echo": True}, Limits())
    completions = [
        [Completion("A1", "1", "length", 3, 4), Completion("A22", "22", "eos", 3, 2)],
        [Completion("B3", "3", "stop", 5, 1), Completion("B4", "4", "time", 5, 6)],
    ]
    answer = oa.response(oa.Ids("gptj"), req, [generation("A", 3), generation("B", 5)], completions)
    assert [(c["index"], c["text"], c["finish_reason"]) for c in answer["choices"]] == [
        (0, "A1", "length"),
        (1, "A22", "stop"),
        (2, "B3", "stop"),
        (3, "B4", "length"),
    ]
    assert answer["usage"] == {"prompt_tokens": 8, "completion_tokens": 13, "total_tokens": 21}
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-") and answer["model"] == "gptj"


def test_greedy_copies_count_in_usage():
    req = oa.parse({**BASE, "temperature": 0, "n": 3}, Limits())
    answer = oa.response(oa.Ids("gptj"), req, [generation("Hello", 2)], [[Completion("Hello x", " x", "length", 2, 1)]])
    assert [c["text"] for c in answer["choices"]] == [" x"] * 3 and answer["usage"]["completion_tokens"] == 3
