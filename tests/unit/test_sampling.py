"""The pure request -> generation settings mapping, without a model: one row per rule."""

from __future__ import annotations

import pytest

from predictor.core import Sampling
from predictor.errors import BadRequest
from predictor.generation.runner import generation_config
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits

LIMITS = Limits()  # max_length 512, min_length 64, 50 new tokens by default, 8 beams, 8 sequences
PROMPT_TOKENS = 8


def run(prompt_tokens: int = PROMPT_TOKENS, limits: Limits = LIMITS, **fields):
    return plan(PromptRequest(prompt="p", **fields), prompt_tokens, limits)


# --- accepted requests: the settings they produce and what the client is told ---------------------


@pytest.mark.parametrize(
    "fields, expected, notes",
    [
        # lengths
        ({}, {"max_length": PROMPT_TOKENS + 50}, ()),  # the documented default: 50 new tokens
        ({"max_length": 50}, {"max_length": 50}, ()),
        ({"max_length": 512}, {"max_length": 512}, ()),
        ({"max_length": 600}, {"max_length": 512}, ("max_length 600 is over the limit of 512; capped to 512",)),
        ({"min_length": 20, "max_length": 30}, {"min_length": 20, "max_length": 30}, ()),
        (
            {"min_length": 100},
            {"min_length": 64, "max_length": 64},  # the default stretches to min_length
            ("min_length 100 is over the limit of 64; capped to 64",),
        ),
        (
            {"min_length": 100, "max_length": 1000},
            {"min_length": 64, "max_length": 512},
            (
                "min_length 100 is over the limit of 64; capped to 64",
                "max_length 1000 is over the limit of 512; capped to 512",
            ),
        ),
        # greedy versus sampling
        ({"temperature": 0}, {"do_sample": False, "temperature": None}, ()),
        (
            {"temperature": 0, "do_sample": True},
            {"do_sample": False, "temperature": None},
            ("temperature 0 means greedy decoding; do_sample ignored",),
        ),
        (
            {"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9},
            {"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9},
            (),
        ),
        (
            {"temperature": 0.7, "top_p": 0.9},
            {"do_sample": False, "temperature": None, "top_p": None},
            ("temperature, top_p only apply with do_sample: true; ignored",),
        ),
        # beams
        ({"num_beams": 4, "num_return_sequences": 4}, {"num_beams": 4, "num_return_sequences": 4}, ()),
        ({"do_sample": True, "num_return_sequences": 3}, {"do_sample": True, "num_return_sequences": 3}, ()),
        (
            {"num_beams": 2, "early_stopping": True, "length_penalty": 2.0},
            {"early_stopping": True, "length_penalty": 2.0},
            (),
        ),
        (
            {"early_stopping": True, "length_penalty": 2.0},
            {"early_stopping": None, "length_penalty": None},
            ("early_stopping, length_penalty only apply with num_beams > 1; ignored",),
        ),
        (
            {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.5},
            {"num_beam_groups": 2, "diversity_penalty": 1.5},
            (),
        ),
        (
            {"diversity_penalty": 1.5},
            {"diversity_penalty": None},
            ("diversity_penalty only applies with num_beam_groups > 1; ignored",),
        ),
        # extensions
        ({"max_new_tokens": 20}, {"max_length": PROMPT_TOKENS + 20}, ()),
        (
            {"max_new_tokens": 600},
            {"max_length": 512},
            (
                f"max_new_tokens 600 with the prompt's {PROMPT_TOKENS} tokens is over the limit of 512; "
                f"capped to {512 - PROMPT_TOKENS}",
            ),
        ),
        ({"stop": "END"}, {"stop": ("END",)}, ()),
        ({"stop": ["a", "bc"]}, {"stop": ("a", "bc")}, ()),
        ({"do_sample": True, "seed": 7}, {"seed": 7}, ()),
        ({"seed": 7}, {"seed": None}, ("seed only applies with do_sample: true; ignored",)),
        # passed through untouched
        (
            {
                "repetition_penalty": 1.3,
                "encoder_no_repeat_ngram_size": 2,
                "max_time": 2.5,
                "remove_invalid_values": True,
            },
            {
                "repetition_penalty": 1.3,
                "encoder_no_repeat_ngram_size": 2,
                "max_time": 2.5,
                "remove_invalid_values": True,
            },
            (),
        ),
    ],
)
def test_plan_accepts(fields, expected, notes):
    sampling, told = run(**fields)
    assert {k: getattr(sampling, k) for k in expected} == expected
    assert told == notes


@pytest.mark.parametrize("size, kept", [(PROMPT_TOKENS, PROMPT_TOKENS), (PROMPT_TOKENS + 1, None), (10**11, None)])
def test_ngram_longer_than_the_prompt_is_ignored(size, kept):
    sampling, notes = run(encoder_no_repeat_ngram_size=size)
    assert sampling.encoder_no_repeat_ngram_size == kept
    assert bool(notes) == (kept is None)
    if notes:
        assert notes == (f"encoder_no_repeat_ngram_size {size} is longer than the prompt (8 tokens); ignored",)


def test_default_length_respects_the_limit():
    sampling, notes = run(prompt_tokens=500)
    assert sampling.max_length == 512 and notes == ()


# --- rejected requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt_tokens, fields, message",
    [
        (8, {"max_length": 8}, "max_length: must be greater than the prompt's 8 tokens to generate anything (got 8)"),
        (8, {"max_length": 3}, "max_length: must be greater than the prompt's 8 tokens"),
        (
            512,
            {},
            "prompt: 512 tokens is too long: max_length (prompt + new tokens) is limited to 512, "
            "so a prompt may have at most 511 tokens",
        ),
        (3000, {"max_length": 4000}, "prompt: 3000 tokens is too long"),  # never reaches the rotary table
        (8, {"min_length": 40, "max_length": 30}, "min_length: must be <= max_length (30) (got 40)"),
        (8, {"min_length": 100, "max_length": 30}, "min_length: must be <= max_length (30) (got 64)"),
        (8, {"num_beams": 9}, "num_beams: must be <= 8 (got 9)"),
        (8, {"max_new_tokens": 5, "max_length": 20}, "max_new_tokens: give max_length or max_new_tokens, not both"),
        (600, {"max_new_tokens": 5}, "prompt: 600 tokens is too long"),
        (8, {"num_return_sequences": 9, "do_sample": True}, "num_return_sequences: must be <= 8 (got 9)"),
        (
            8,
            {"num_return_sequences": 2},
            "num_return_sequences: greedy search has one answer; use do_sample: true or num_beams >= 2 (got 2)",
        ),
        (
            8,
            {"num_return_sequences": 5, "num_beams": 4},
            "num_return_sequences: with beam search it must be <= num_beams (4) (got 5)",
        ),
        (
            8,
            {"num_return_sequences": 3, "num_beams": 2, "do_sample": True},  # found by fuzzing: a 500 before
            "num_return_sequences: with beam search it must be <= num_beams (2) (got 3)",
        ),
        (8, {"num_beams": 4, "num_beam_groups": 3}, "num_beam_groups: must divide num_beams (4) (got 3)"),
        (8, {"num_beams": 2, "num_beam_groups": 4}, "num_beam_groups: must divide num_beams (2) (got 4)"),
        (
            8,
            {"num_beams": 4, "num_beam_groups": 2, "do_sample": True},
            "num_beam_groups: diverse beam search (num_beam_groups > 1) cannot be combined with do_sample: true",
        ),
    ],
)
def test_plan_rejects(prompt_tokens, fields, message):
    with pytest.raises(BadRequest) as caught:
        run(prompt_tokens=prompt_tokens, **fields)
    assert message in caught.value.message


def test_limits_are_settings():
    limits = Limits(max_length=100, min_length=10, default_new_tokens=20, max_num_beams=2)
    sampling, notes = run(limits=limits, max_length=150, min_length=50)
    assert (sampling.max_length, sampling.min_length) == (100, 10)
    assert len(notes) == 2
    assert run(limits=limits)[0].max_length == PROMPT_TOKENS + 20
    with pytest.raises(BadRequest, match="num_beams: must be <= 2"):
        run(limits=limits, num_beams=3)


# --- Sampling -> transformers GenerationConfig ---------------------------------------------------

EOS = 7


def test_generation_config_greedy_sets_only_what_was_asked():
    config = generation_config(Sampling(max_length=30), EOS)
    assert config.max_length == 30 and config.min_length == 0
    assert config.do_sample is False and config.num_beams == 1
    assert (config.pad_token_id, config.eos_token_id, config.bos_token_id) == (EOS, EOS, EOS)
    # transformers' own defaults apply to anything unset, as in the service this replaces
    assert config.temperature is None and config.top_k is None and config.top_p is None
    config.validate(strict=True)  # nothing transformers would warn about


def test_generation_config_passes_every_parameter_through():
    sampling = Sampling(
        max_length=40,
        min_length=12,
        do_sample=True,
        num_beams=3,
        num_return_sequences=2,
        temperature=0.5,
        top_k=4,
        top_p=0.8,
        repetition_penalty=1.1,
        early_stopping=True,
        length_penalty=0.5,
        encoder_no_repeat_ngram_size=2,
        max_time=3.0,
        remove_invalid_values=True,
    )
    config = generation_config(sampling, EOS)
    for name in (
        "max_length",
        "min_length",
        "do_sample",
        "num_beams",
        "num_return_sequences",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "early_stopping",
        "length_penalty",
        "encoder_no_repeat_ngram_size",
        "max_time",
        "remove_invalid_values",
    ):
        assert getattr(config, name) == getattr(sampling, name), name
    config.validate(strict=True)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"max_length": 600, "min_length": 100},
        {"temperature": 0, "do_sample": True},
        {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 0.0},
        {"num_beams": 8, "num_return_sequences": 8},
        {"num_beams": 4, "early_stopping": True, "length_penalty": -1.0},
        {"top_p": 0.5, "early_stopping": False},
        {"repetition_penalty": 0.01, "encoder_no_repeat_ngram_size": 1, "max_time": 0.001},
    ],
)
def test_every_planned_request_is_a_valid_transformers_config(fields):
    sampling, _ = run(**fields)
    generation_config(sampling, EOS).validate(strict=True)  # would raise on anything transformers rejects
