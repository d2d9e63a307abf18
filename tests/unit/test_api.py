"""Body decoding and request validation: one row per rule."""

from __future__ import annotations

import pytest

from predictor.errors import BadRequest
from predictor.protocols import envelope, seed

MAX_PROMPTS = 4


# --- decoding raw bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, content_type, expected",
    [
        (b'{"prompt": "hi"}', None, {"prompt": "hi"}),
        (b'{"prompt": "hi"}', "application/json; charset=utf-8", {"prompt": "hi"}),
        (b'{"prompt": "hi"}', "application/json; charset=UTF-8", {"prompt": "hi"}),
        (b'{"prompt": "hi"}', 'application/json; charset="utf-8"', {"prompt": "hi"}),
        ('{"prompt": "\u00e9t\u00e9"}'.encode("latin-1"), "text/plain; charset=latin-1", {"prompt": "\u00e9t\u00e9"}),
        (
            '{"prompt": "\u00e9t\u00e9 \U0001f642"}'.encode(),
            "application/x-www-form-urlencoded",
            {"prompt": "\u00e9t\u00e9 \U0001f642"},
        ),
        (b'[{"prompt": "a"}, {"prompt": "b"}]', None, [{"prompt": "a"}, {"prompt": "b"}]),
    ],
)
def test_decode_body_accepts(body, content_type, expected):
    assert seed.decode_body(body, content_type) == expected


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b'{"prompt": ', None, "not valid JSON"),
        (b"", None, "not valid JSON"),
        (b'{"prompt": "hi", "temperature": NaN}', None, "NaN is not a JSON number"),
        (b'{"prompt": "hi", "temperature": Infinity}', None, "Infinity is not a JSON number"),
        (b'{"prompt": "\xff\xfe"}', "application/json; charset=utf-8", "not valid utf-8"),
        (b'{"prompt": "hi"}', "application/json; charset=klingon", "unknown charset 'klingon'"),
        (b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
        (b'{"max_length": ' + b"9" * 5000 + b"}", None, "not valid JSON"),
    ],
)
def test_decode_body_rejects(body, content_type, message):
    with pytest.raises(BadRequest) as caught:
        seed.decode_body(body, content_type)
    assert message in caught.value.message


# --- body forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, prompts",
    [
        ([{"prompt": "a"}], ["a"]),  # the documented form
        ({"prompt": "a"}, ["a"]),  # what the original server parsed
        ({"instances": [{"prompt": "a"}, {"prompt": "b"}]}, ["a", "b"]),  # KServe v1
        ([{"prompt": "a", "max_length": None}], ["a"]),  # null means "not given"
    ],
)
def test_parse_body_forms(body, prompts):
    assert [r.prompt for r in seed.parse(body, MAX_PROMPTS)] == prompts


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "the request list is empty"),
        ({"instances": []}, "the request list is empty"),
        ([{"prompt": "a"}] * 5, "too many request objects: at most 4 per request (got 5)"),
        ("hello", "body must be a JSON list of request objects"),
        (42, "got a number"),
        (None, "got null"),
        ({"instances": {"prompt": "a"}}, "instances: must be a list"),
        ({"instances": [{"prompt": "a"}], "parameters": {}}, "unknown top-level field(s) 'parameters'"),
        (["just a string"], "body: must be a JSON object with a 'prompt' (got a string)"),
        ([{"prompt": "a"}, 3], "[1]: must be a JSON object"),
    ],
)
def test_parse_rejects_bad_shapes(body, message):
    with pytest.raises(BadRequest) as caught:
        seed.parse(body, MAX_PROMPTS)
    assert message in caught.value.message


# --- one request object: every field's type and bound --------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, "prompt: is required"),
        ({"prompt": 5}, "prompt: must be a string (got 5)"),
        ({"prompt": None}, "prompt: must be a string (got null)"),
        ({"prompt": "a", "temprature": 0.5}, "temprature: unknown field (allowed: prompt, max_length"),
        ({"prompt": "a", "max_length": 0}, "max_length: must be >= 1 (got 0)"),
        ({"prompt": "a", "max_length": "50"}, 'max_length: must be an integer (got "50")'),
        ({"prompt": "a", "max_length": 50.0}, "max_length: must be an integer (got 50.0)"),
        ({"prompt": "a", "max_length": True}, "max_length: must be an integer (got true)"),
        ({"prompt": "a", "min_length": -1}, "min_length: must be >= 0 (got -1)"),
        ({"prompt": "a", "do_sample": 1}, "do_sample: must be true or false (got 1)"),
        ({"prompt": "a", "do_sample": "yes"}, "do_sample: must be true or false"),
        ({"prompt": "a", "early_stopping": "never"}, "early_stopping: must be true or false"),
        ({"prompt": "a", "num_beams": 0}, "num_beams: must be >= 1 (got 0)"),
        ({"prompt": "a", "temperature": -0.1}, "temperature: must be >= 0 (got -0.1)"),
        ({"prompt": "a", "temperature": "hot"}, "temperature: must be a number"),
        ({"prompt": "a", "top_k": -1}, "top_k: must be >= 0 (got -1)"),
        ({"prompt": "a", "top_p": 1.5}, "top_p: must be <= 1 (got 1.5)"),
        ({"prompt": "a", "top_p": -0.5}, "top_p: must be >= 0"),
        ({"prompt": "a", "repetition_penalty": 0}, "repetition_penalty: must be >= 0.01 (got 0)"),
        ({"prompt": "a", "repetition_penalty": 1e-300}, "repetition_penalty: must be >= 0.01"),
        ({"prompt": "a", "repetition_penalty": 1e300}, "repetition_penalty: must be <= 100"),
        ({"prompt": "a", "length_penalty": 1e300}, "length_penalty: must be <= 10"),
        ({"prompt": "a", "length_penalty": -11}, "length_penalty: must be >= -10"),
        ({"prompt": "a", "temperature": 1e-300}, "temperature: must be 0 (greedy) or >= 1e-05"),
        ({"prompt": "a", "temperature": 101}, "temperature: must be <= 100"),
        ({"prompt": "a", "diversity_penalty": 1e300}, "diversity_penalty: must be <= 1000"),
        ({"prompt": "a\ud800b"}, "prompt: must be valid Unicode text (lone surrogate at character 1)"),
        ({"prompt": "a", "length_penalty": [1]}, "length_penalty: must be a number (got a list)"),
        ({"prompt": "a", "encoder_no_repeat_ngram_size": -2}, "encoder_no_repeat_ngram_size: must be >= 0"),
        ({"prompt": "a", "num_return_sequences": 0}, "num_return_sequences: must be >= 1"),
        ({"prompt": "a", "max_time": 0}, "max_time: must be > 0 (got 0)"),
        ({"prompt": "a", "num_beam_groups": 0}, "num_beam_groups: must be >= 1"),
        ({"prompt": "a", "diversity_penalty": -1.0}, "diversity_penalty: must be >= 0"),
        ({"prompt": "a", "remove_invalid_values": "true"}, "remove_invalid_values: must be true or false"),
        ({"prompt": "a", "temperature": 1e400}, "temperature: must be a finite number"),
        ({"prompt": {"text": "a"}}, "prompt: must be a string (got an object)"),
        ({"prompt": "a", "max_new_tokens": 0}, "max_new_tokens: must be >= 1 (got 0)"),
        ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop: must hold at most 4 strings (got 5)"),
        ({"prompt": "a", "stop": [""]}, "stop: strings must be 1 to 100 characters long"),
        ({"prompt": "a", "stop": 5}, "stop: must be a string or a list of strings (got a number)"),
        ({"prompt": "a", "stop": ["a", 5]}, "stop: must be a string or a list of strings (got a list)"),
        ({"prompt": "a", "seed": -1}, "seed: must be >= 0 (got -1)"),
        ({"prompt": "a", "seed": 2**64}, "seed: must be <= 9223372036854775807"),
        ({"prompt": "a", "details": "yes"}, "details: must be true or false"),
    ],
)
def test_parse_rejects_each_field(fields, message):
    with pytest.raises(BadRequest) as caught:
        seed.parse(fields, MAX_PROMPTS)
    assert message in caught.value.message


def test_parse_names_the_request_index_when_there_are_several():
    with pytest.raises(BadRequest) as caught:
        seed.parse([{"prompt": "a"}, {"prompt": "b", "top_k": -1}], MAX_PROMPTS)
    assert caught.value.message.startswith("[1].top_k: must be >= 0")


def test_parse_lists_every_problem_but_bounded():
    with pytest.raises(BadRequest) as caught:
        seed.parse(
            {"prompt": 1, "max_length": 0, "min_length": -1, "num_beams": 0, "top_k": -1, "top_p": 2, "nonsense": 1},
            MAX_PROMPTS,
        )
    assert caught.value.message.count(";") == 4  # five shown ...
    assert "(and 2 more)" in caught.value.message  # ... and the rest counted


def test_parse_accepts_every_parameter():
    every = {
        "prompt": "a",
        "max_length": 20,
        "min_length": 5,
        "do_sample": True,
        "early_stopping": True,
        "num_beams": 2,
        "temperature": 0.7,
        "top_k": 5,
        "top_p": 0.9,
        "repetition_penalty": 1.2,
        "length_penalty": -0.5,
        "encoder_no_repeat_ngram_size": 2,
        "num_return_sequences": 2,
        "max_time": 1.5,
        "num_beam_groups": 1,
        "diversity_penalty": 0.0,
        "remove_invalid_values": True,
        "max_new_tokens": 10,
        "stop": ["\n", "END"],
        "seed": 42,
        "details": True,
        "logprobs": 2,
        "min_p": 0.05,
        "stop_token_ids": [3, 7],
        "structured_outputs": {"regex": "a+"},
    }
    (parsed,) = seed.parse(every, MAX_PROMPTS)
    assert parsed.model_dump(exclude_none=True, by_alias=True) == every
    assert set(every) == set(seed.FIELDS)  # the contract's 16 parameters, the prompt, and 8 extensions


def test_integer_accepted_where_a_float_is_expected():
    (parsed,) = seed.parse({"prompt": "a", "temperature": 1, "max_time": 2}, MAX_PROMPTS)
    assert parsed.temperature == 1.0 and parsed.max_time == 2.0


# --- response shape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "texts, wants_list, data",
    [
        ([["one"]], [False], "one"),
        ([["a", "b"]], [True], ["a", "b"]),
        ([["p1"], ["p2"]], [False, False], ["p1", "p2"]),
        ([["a1", "a2"], ["b1", "b2"]], [True, True], [["a1", "a2"], ["b1", "b2"]]),
        ([["a1", "a2"], ["b"]], [True, False], [["a1", "a2"], "b"]),
    ],
)
def test_shape(texts, wants_list, data):
    assert envelope.shape(texts, wants_list) == data
