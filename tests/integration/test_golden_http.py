"""The server against the service it replaces: transformers 4.x `generate` (tests/fixtures/golden.json).

Every deterministic request of the fixture table (diverse beam search across 2-8 beams and 2-4 groups,
greedy, beams, penalties, min_length) must give exactly the reference's texts, in the reference's
order, with as many tokens and the same ending -- each request alone, and all of them in one body,
where the server batches what it can (the twins: the same search on prompts of other lengths).
"""

from __future__ import annotations

import pytest

from tests import golden

from .server import ready_server

CASES = golden.load()["cases"]
EOS = 0  # the tiny model's <|endoftext|>


@pytest.fixture(scope="module")
def golden_server(cache_dir, tmp_path_factory):
    model = golden.model_dir(cache_dir)
    log = tmp_path_factory.mktemp("golden") / "server.log"
    # One body holds the whole table; on a busy CI machine it may take minutes: no deadline.
    with ready_server(model, cache_dir, log, "--max_prompts", str(len(CASES)), "--request_timeout_seconds", "0") as s:
        yield s


def wanted(case: dict) -> list[dict]:
    """The reference's sequences as the server's details objects."""
    return [
        {
            "text": s["text"],
            "finish_reason": golden.finish_reason(s["tokens"], EOS),
            "prompt_tokens": len(case["prompt_ids"]),
            "generated_tokens": len([t for t in s["tokens"] if t != EOS]),
        }
        for s in case["expected"]
    ]


def got(case: dict, data) -> list[dict]:
    """One prompt's part of ``data``: a list when it asked for several sequences, else one object."""
    return data if case["request"].get("num_return_sequences", 1) > 1 else [data]


def post(server, cases: list[dict]):
    response = server.predict([{**case["request"], "details": True} for case in cases], timeout=600)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["message"] is None, body
    return body["data"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_alone(golden_server, case):
    assert got(case, post(golden_server, [case])) == wanted(case)


@pytest.mark.timeout(900)
def test_all_in_one_body(golden_server):
    data = post(golden_server, CASES)
    assert len(data) == len(CASES)
    wrong = [case["name"] for case, answer in zip(CASES, data, strict=False) if got(case, answer) != wanted(case)]
    assert not wrong, f"{len(wrong)} of {len(CASES)} differ from the reference when batched: {wrong}"
