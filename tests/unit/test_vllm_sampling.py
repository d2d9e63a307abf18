"""vLLM's sampling extensions on the OpenAI route, and min_p / stop_token_ids on the seed API and v2:
bounds named at the edge, one mapping into Sampling (which stays hashable)."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
import torch
from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter

from predictor.core import GenerationRequest, Sampling
from predictor.engine import text
from predictor.errors import BadRequest, classify
from predictor.generation import diverse
from predictor.generation.runner import generation_config
from predictor.protocols import openai as oa
from predictor.protocols import plan, seed, v2, vllm_sampling
from predictor.settings import Limits

BASE = {"model": "gptj", "prompt": "Hello"}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"top_k": -2}, "top_k: must be >= -1 (got -2)"),
        ({"top_k": 1.5}, "top_k: must be an integer"),
        ({"min_p": 1.5}, "min_p: must be <= 1 (got 1.5)"),
        ({"min_p": -0.1}, "min_p: must be >= 0 (got -0.1)"),
        ({"repetition_penalty": 0}, "repetition_penalty: must be >= 0.01 (got 0)"),
        ({"repetition_penalty": 101}, "repetition_penalty: must be <= 100 (got 101)"),
        ({"min_tokens": -1}, "min_tokens: must be >= 0 (got -1)"),
        ({"min_tokens": 17}, "min_tokens: must be <= max_tokens (16) (got 17)"),
        ({"min_tokens": 6, "max_tokens": 5}, "min_tokens: must be <= max_tokens (5) (got 6)"),
        ({"ignore_eos": "yes"}, "ignore_eos: must be true or false"),
        ({"stop_token_ids": 5}, "stop_token_ids: must be a list"),
        ({"stop_token_ids": [1, 2.5]}, "stop_token_ids.1: must be an integer"),
        ({"stop_token_ids": [1, True]}, "stop_token_ids.1: must be an integer"),
        ({"stop_token_ids": [3, -1]}, "stop_token_ids: token ids must be >= 0 (got -1 at index 1)"),
        ({"stop_token_ids": list(range(65))}, "stop_token_ids: must hold at most 64 token ids (got 65)"),
        ({"include_stop_str_in_output": 1}, "include_stop_str_in_output: must be true or false"),
        (
            {"skip_special_tokens": None, "spaces_between_special_tokens": False},
            "spaces_between_special_tokens: unknown field",
        ),
        ({"top_a": 0.1}, "top_a: unknown field (allowed: model, prompt, max_tokens"),
        ({"use_beam_search": True}, "use_beam_search: unknown field"),
    ],
)
def test_openai_extensions_are_bounded_by_name(fields, message):
    with pytest.raises(BadRequest) as caught:
        oa.parse({**BASE, **fields}, Limits())
    assert message in caught.value.message


def test_the_envelope_of_a_bad_extension_names_the_field_and_bound():
    with pytest.raises(BadRequest) as caught:
        oa.parse({**BASE, "min_p": 2}, Limits())
    failure = classify(caught.value)
    body = oa.error(failure)["error"]
    assert failure.status == HTTPStatus.BAD_REQUEST
    assert body["param"] == "min_p" and body["message"] == "min_p: must be <= 1 (got 2)"
    assert body["type"] == "invalid_request_error"


def test_unknown_fields_list_openais_fields_then_vllms():
    with pytest.raises(BadRequest) as caught:
        oa.parse({**BASE, "temprature": 1}, Limits())
    allowed = caught.value.message.split("allowed: ")[1].rstrip(")").split(", ")
    assert allowed[:3] == ["model", "prompt", "max_tokens"]
    assert allowed[-len(vllm_sampling.FIELDS) :] == list(vllm_sampling.FIELDS)


def test_stop_token_ids_outside_the_vocabulary_are_named():
    req = oa.parse({**BASE, "stop_token_ids": [5, 50257]}, Limits())
    with pytest.raises(BadRequest, match=re.escape("stop_token_ids[1]: token id 50257 is outside the vocabulary")):
        oa.check_vocabulary(req, 50257)


def sampling_of(fields, prompt_tokens=3) -> Sampling:
    req = oa.parse({**BASE, **fields}, Limits())
    (generation,) = oa.requests(req, ["Hello"], [list(range(prompt_tokens))], Limits())
    hash(generation.sampling)  # the engine may group by it
    return generation.sampling


SAMPLED = {"max_length": 3 + 16, "do_sample": True, "temperature": 1.0, "top_k": 0}


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"top_k": -1}, SAMPLED),  # vLLM's "off"
        ({"top_k": 0}, SAMPLED),
        ({"top_k": 5}, {**SAMPLED, "top_k": 5}),
        ({"min_p": 0}, SAMPLED),  # 0 is off
        ({"min_p": 0.2, "top_p": 0.9}, {**SAMPLED, "min_p": 0.2, "top_p": 0.9}),
        ({"repetition_penalty": 1.3}, {**SAMPLED, "repetition_penalty": 1.3}),
        ({"min_tokens": 4}, {**SAMPLED, "min_length": 3 + 4}),  # min_length counts the prompt
        ({"min_tokens": 0}, SAMPLED),
        ({"ignore_eos": True}, {**SAMPLED, "ignore_eos": True}),
        ({"stop_token_ids": [9, 4, 9]}, {**SAMPLED, "stop_token_ids": (9, 4)}),  # duplicates dropped, order kept
        ({"stop_token_ids": []}, SAMPLED),
        ({"include_stop_str_in_output": True}, {**SAMPLED, "include_stop_str_in_output": True}),
        ({"skip_special_tokens": False}, {**SAMPLED, "skip_special_tokens": False}),
        ({"skip_special_tokens": True, "ignore_eos": False}, SAMPLED),
        # Greedy: top_k and min_p have no effect (vLLM resets them); the rest still applies.
        (
            {"temperature": 0, "top_k": 3, "min_p": 0.5, "repetition_penalty": 1.2, "min_tokens": 2},
            {"max_length": 19, "repetition_penalty": 1.2, "min_length": 3 + 2},
        ),
        (
            {"temperature": 0, "stop_token_ids": [7], "ignore_eos": True},
            {"max_length": 19, "stop_token_ids": (7,), "ignore_eos": True},
        ),
    ],
)
def test_extensions_map_to_vllms_meaning(fields, expected):
    assert sampling_of(fields) == Sampling(**expected)


def test_min_tokens_may_equal_max_tokens():
    assert sampling_of({"min_tokens": 5, "max_tokens": 5}, prompt_tokens=2).min_length == 2 + 5


# --- the seed API and v2 --------------------------------------------------------------------------


def seed_plan(prompt_tokens=8, **fields):
    return plan.plan(seed.PromptRequest(prompt="p", **fields), prompt_tokens, Limits())


def test_seed_min_p_is_transformers_min_p_when_sampling():
    sampling, notes = seed_plan(do_sample=True, min_p=0.1)
    assert sampling.min_p == 0.1 and notes == ()
    assert generation_config(sampling, 0).min_p == 0.1  # beam sampling passes it on too
    sampling, notes = seed_plan(min_p=0.1)
    assert sampling.min_p is None and notes == ("min_p only applies with do_sample: true; ignored",)


def test_seed_stop_token_ids_are_a_tuple_and_refused_with_beams():
    sampling, _ = seed_plan(stop_token_ids=[5, 6, 5])
    assert sampling.stop_token_ids == (5, 6) and hash(sampling)
    with pytest.raises(BadRequest, match=re.escape("stop_token_ids: not available with beam search (num_beams > 1)")):
        seed_plan(stop_token_ids=[5], num_beams=2)


@pytest.mark.parametrize(
    "item, message",
    [
        ({"min_p": 1.01}, "min_p: must be <= 1 (got 1.01)"),
        ({"stop_token_ids": "5"}, "stop_token_ids: must be a list"),
        ({"stop_token_ids": [-3]}, "stop_token_ids: token ids must be >= 0 (got -3 at index 0)"),
        ({"ignore_eos": True}, "ignore_eos: unknown field"),  # an OpenAI-route extension only
    ],
)
def test_seed_bounds(item, message):
    with pytest.raises(BadRequest) as caught:
        seed.parse({"prompt": "p", **item}, 16)
    assert message in caught.value.message


def test_seed_stop_token_ids_outside_the_vocabulary_name_the_request_object():
    parsed = seed.parse([{"prompt": "a"}, {"prompt": "b", "stop_token_ids": [1, 700]}], 16)
    with pytest.raises(BadRequest, match=re.escape("[1].stop_token_ids[1]: token id 700 is outside the vocabulary")):
        plan.check_vocabulary(parsed, 640)
    plan.check_vocabulary(parsed[:1], 640)


def test_v2_min_p_over_grpc_arrives_as_a_string():
    parameters = v2.plain_parameters(
        {"min_p": InferParameter(string_param="0.25"), "do_sample": InferParameter(bool_param=True)}
    )
    assert parameters == {"min_p": 0.25, "do_sample": True}


def test_beam_sampling_applies_min_p_after_top_p_keeping_two_tokens():
    config = generation_config(Sampling(max_length=20, do_sample=True, num_beams=2, top_p=0.9, min_p=0.3), 0)
    processors = diverse._processors(config, torch.tensor([[1, 2]]))
    assert [type(p).__name__ for p in processors][-2:] == ["TopPLogitsWarper", "MinPLogitsWarper"]
    assert processors[-1].min_p == 0.3 and processors[-1].min_tokens_to_keep == 2


# --- include_stop_str_in_output: the text runs to the end of the stop string ----------------------


@pytest.mark.parametrize(
    "stops, expected",
    [(["."], ("Hello world.", True)), (["Bye", "o"], ("Hello", True)), (["x"], ("Hello world. Bye", False))],
)
def test_cut_at_stop_can_keep_the_stop_string(stops, expected):
    assert text.cut_at_stop("Hello world. Bye", stops, include=True) == expected


def test_a_stream_that_keeps_its_stop_string_sends_it_then_ends():
    pieces = ["Hi", " the", "re ", "EN", "D more", " and more"]
    stream = text.TextStream(lambda tokens: "".join(pieces[i] for i in tokens), ["END"], include=True)
    sent = [stream.piece(range(n)) for n in range(1, len(pieces) + 1)]
    assert "".join(sent) == "Hi there END" and stream.stopped


def test_completions_keep_the_stop_string_only_when_asked():
    decode = {(1, 2, 3): "one. two"}.get

    def completion(**fields):
        request = GenerationRequest("p", (0,), Sampling(max_length=9, stop=(".",), **fields))
        return text.completion(lambda tokens: decode(tuple(tokens)), lambda ids: [], request, [1, 2, 3], "length")

    assert (completion().continuation, completion().finish_reason) == ("one", "stop")
    assert completion(include_stop_str_in_output=True).continuation == "one."
