"""Beam search, diverse or not, token for token against transformers 4.x (tests/fixtures/golden.json).

The server runs every beam search without sampling through diverse.generate (one group: plain beam
search). Each such case alone, then with its twin (the same search on a prompt of another length) in
one left-padded batch, as the server batches them. The HTTP tests (tests/integration/test_golden_http.py)
check the texts of every case; these check the token ids, EOS included.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from predictor.generation import diverse
from tests import golden

CASES = {case["name"]: case for case in golden.load()["cases"] if case["request"].get("num_beams", 1) > 1}
# The server never pads a search with repetition_penalty (it would penalize the padding, which is EOS):
# batching.beam_key batches those only with prompts of the same length.
PAIRS = [
    (name, f"{name}-twin")
    for name in CASES
    if f"{name}-twin" in CASES and "repetition_penalty" not in CASES[name]["request"]
]


@pytest.fixture(scope="module")
def model(cache_dir):
    return AutoModelForCausalLM.from_pretrained(golden.model_dir(cache_dir)).eval()


def search(model, cases: list[dict]) -> list[list[list[int]]]:
    """One diverse search over the cases' prompts, left-padded; lengths count the padding, as in generate."""
    eos, width = model.config.eos_token_id, max(len(case["prompt_ids"]) for case in cases)
    ids = torch.tensor(
        [[eos] * (width - len(case["prompt_ids"])) + case["prompt_ids"] for case in cases], device=model.device
    )
    mask = torch.tensor(
        [[0] * (width - len(case["prompt_ids"])) + [1] * len(case["prompt_ids"]) for case in cases], device=model.device
    )
    first, prompt = cases[0]["request"], len(cases[0]["prompt_ids"])
    params = {
        k: v
        for k, v in first.items()
        if k not in ("prompt", "max_length", "min_length", "num_beam_groups", "diversity_penalty")
    }
    config = GenerationConfig(
        pad_token_id=eos,
        eos_token_id=eos,
        max_length=width + first["max_length"] - prompt,
        min_length=width + max(0, first.get("min_length", 0) - prompt),
        **params,
    )
    with torch.inference_mode():
        return diverse.generate(
            model, ids, mask, config, first.get("num_beam_groups", 1), first.get("diversity_penalty", 0.0)
        )


def expected(case: dict) -> list[list[int]]:
    return [sequence["tokens"] for sequence in case["expected"]]


def test_the_table_covers_what_the_issue_asks():
    params = [case["request"] for case in CASES.values() if "num_beam_groups" in case["request"]]
    assert len({tuple(sorted(p.items())[1:]) for p in params}) >= 30
    assert {p["num_beams"] for p in params} >= {2, 3, 4, 6, 8} and {p["num_beam_groups"] for p in params} == {2, 3, 4}
    assert len({p["num_return_sequences"] for p in params}) >= 5
    for field in ("length_penalty", "early_stopping", "min_length", "repetition_penalty"):
        assert any(field in p for p in params), field
    endings = {golden.finish_reason(s["tokens"], 0) for case in CASES.values() for s in case["expected"]}
    assert endings == {"eos", "length"}  # groups end at different steps, and some never do


@pytest.mark.parametrize("name", sorted(CASES))
def test_alone(model, name):
    assert search(model, [CASES[name]])[0] == expected(CASES[name])


@pytest.mark.parametrize("pair", PAIRS, ids=[name for name, _ in PAIRS])
def test_batched_with_another_prompt(model, pair):
    cases = [CASES[name] for name in pair]
    assert len({len(case["prompt_ids"]) for case in cases}) == 2  # one of them is padded
    assert len(PAIRS) >= 25
    assert search(model, cases) == [expected(case) for case in cases]
