"""Sampling's field lists come from its fields' roles (predictor/core.py), and every field has one.

The code that treats a kind of field alike (GenerationConfig's arguments, what beam searches sharing a
forward must agree on, what plan.py drops without do_sample or beams) reads tuples derived from
``dataclasses.fields(Sampling)``; a new field without a role fails here, saying where to give it one.
"""

from __future__ import annotations

import dataclasses

import pytest
from transformers import GenerationConfig

from predictor import core
from predictor.core import GenerationRequest, Sampling
from predictor.engine.scheduling import beam_key

WHERE = (
    "give it a role in predictor/core.py's Sampling (`name: type = _role(ROLE, default)`; the roles and "
    "what each is used for are listed above the class), then add it to ROLE_OF in tests/unit/test_sampling_fields.py"
)

# Every field's role, written out: a field moved to another role changes what the engine does with it,
# so it shows here as well as in core.py.
ROLE_OF = {
    "max_length": core.LENGTH,
    "min_length": core.LENGTH,
    "do_sample": core.SEARCH,
    "num_beams": core.SEARCH,
    "num_return_sequences": core.SEARCH,
    "repetition_penalty": core.SEARCH,
    "encoder_no_repeat_ngram_size": core.SEARCH,
    "max_time": core.SEARCH,
    "remove_invalid_values": core.SEARCH,
    "temperature": core.SAMPLED,
    "top_k": core.SAMPLED,
    "top_p": core.SAMPLED,
    "min_p": core.SAMPLED,
    "early_stopping": core.BEAM,
    "length_penalty": core.BEAM,
    "num_beam_groups": core.DIVERSE,
    "diversity_penalty": core.DIVERSE,
    "seed": core.SEED,
    "stop": core.ROW,
    "stop_token_ids": core.ROW,
    "include_stop_str_in_output": core.ROW,
    "ignore_eos": core.ROW,
    "skip_special_tokens": core.ROW,
    "presence_penalty": core.ROW,
    "frequency_penalty": core.ROW,
    "logprobs": core.ROW,
    "score_prompt": core.ROW,
    "constraint": core.ROW,
}


def test_every_sampling_field_has_a_known_role():
    unclassified = [f.name for f in dataclasses.fields(Sampling) if f.metadata.get("role") not in core.ROLES]
    assert unclassified == [], f"Sampling fields without a role: {unclassified}; {WHERE}"
    names = [f.name for f in dataclasses.fields(Sampling)]
    assert sorted(set(names) - set(ROLE_OF)) == [], WHERE
    assert sorted(set(ROLE_OF) - set(names)) == [], "ROLE_OF names a field Sampling no longer has: remove it"
    assert {f.name: f.metadata["role"] for f in dataclasses.fields(Sampling)} == ROLE_OF


def test_every_role_is_used():
    assert {f.metadata["role"] for f in dataclasses.fields(Sampling)} == set(core.ROLES)


def test_the_derived_lists_are_the_ones_the_engine_and_plan_used_to_list_by_hand():
    # What runner.py, scheduling.py and plan.py listed by hand before (their sets; the order is
    # the declaration's now, which none of them depends on except plan's notes, checked below).
    assert set(core.GENERATION_CONFIG) == {
        "max_length", "min_length", "do_sample", "num_beams", "num_return_sequences", "temperature", "top_k",
        "top_p", "min_p", "repetition_penalty", "early_stopping", "length_penalty",
        "encoder_no_repeat_ngram_size", "max_time", "remove_invalid_values",
    }  # fmt: skip
    assert set(core.SEARCH_SHAPE) == (set(core.GENERATION_CONFIG) - {"max_length", "min_length"}) | {
        "num_beam_groups",
        "diversity_penalty",
    }
    # plan.py's note lists them in this order ("temperature, top_k, top_p, min_p, seed only apply ...").
    assert core.SAMPLING_ONLY == ("temperature", "top_k", "top_p", "min_p", "seed")
    assert core.BEAM_ONLY == ("early_stopping", "length_penalty")


def test_every_generation_config_field_is_an_option_of_transformers_generation_config():
    defaults = GenerationConfig()
    assert [name for name in core.GENERATION_CONFIG if not hasattr(defaults, name)] == []


def test_sampling_stays_a_frozen_hashable_value():
    a, b = Sampling(max_length=9, stop=("x",)), Sampling(max_length=9, stop=("x",))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.max_length = 10  # type: ignore[misc]
    with pytest.raises(TypeError):
        Sampling()  # type: ignore[call-arg]  # max_length has no default


# A value other than the default for each field that shapes a beam search.
_OTHER = {
    "do_sample": True,
    "num_beams": 4,
    "num_return_sequences": 2,
    "repetition_penalty": 1.3,
    "encoder_no_repeat_ngram_size": 2,
    "max_time": 5.0,
    "remove_invalid_values": True,
    "temperature": 0.7,
    "top_k": 5,
    "top_p": 0.9,
    "min_p": 0.1,
    "early_stopping": True,
    "length_penalty": 2.0,
    "num_beam_groups": 2,
    "diversity_penalty": 0.5,
}


@pytest.mark.parametrize("name", core.SEARCH_SHAPE)
def test_beam_searches_that_differ_in_a_field_that_shapes_the_search_do_not_share_one(name):
    base = GenerationRequest("p", (1, 2, 3), Sampling(max_length=10, num_beams=2))
    other = dataclasses.replace(base, sampling=dataclasses.replace(base.sampling, **{name: _OTHER[name]}))
    assert beam_key(base) != beam_key(other)
