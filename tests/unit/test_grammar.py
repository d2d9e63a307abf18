"""Structured output inside the engine (generation/grammar.py): the compile cache, the per-row mask in
the continuous batch alongside free rows, and every row's grammar state released when it leaves."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

import pytest
import torch

from predictor.core import Constraint, GenerationRequest
from predictor.generation import grammar
from predictor.generation.continuous import ContinuousBatch
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits

REGEX = r"[a-c]{2}-[0-9]{1,3}"


@pytest.fixture(scope="module")
def compiler(loaded):
    return grammar.Compiler(loaded.tokenizer, loaded.model.config.vocab_size, loaded.eos_token_id, capacity=3)


def request(loaded, compiler, prompt, constraint=None, **fields) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    sampling, _ = plan(PromptRequest(prompt=prompt, **fields), len(ids), Limits())
    sampling = replace(sampling, constraint=constraint)
    template = compiler.compile(constraint) if constraint is not None else None
    return GenerationRequest(prompt, ids, sampling, grammar=template)


def drain(batch, done=()) -> dict:
    """Advance until the batch is empty: {(owner, index): Done}."""
    finished = {(row.owner, row.index): row for row in done}
    while batch.rows or batch.pending:
        finished.update({(row.owner, row.index): row for row in batch.advance()})
    return finished


def text(loaded, done) -> str:
    return loaded.tokenizer.decode(done.tokens)


def test_the_cache_is_keyed_by_kind_and_spec_and_bounded(compiler):
    first = compiler.compile(Constraint("regex", "a+", field="x"))
    assert compiler.compile(Constraint("regex", "a+", field="y")) is first  # the field is not part of the key
    assert compiler.compile(Constraint("grammar", 'start: "a"+')) is not first
    for spec in ("b+", "c+", "d+"):
        compiler.compile(Constraint("regex", spec))
    assert compiler.cached() == 3  # least recently used went first
    assert compiler.compile(Constraint("regex", "a+")) is not first  # evicted, compiled again


@pytest.mark.parametrize(
    ("kind", "spec", "says"),
    [
        ("regex", "(a", "unclosed group"),
        ("json", '{"type": "bogus"}', "bogus"),
        ("grammar", 'start: "a', "lexer error"),
    ],
)
def test_bad_constraints_raise_grammar_errors(compiler, kind, spec, says):
    with pytest.raises(grammar.GrammarError, match=says):
        compiler.compile(Constraint(kind, spec))


def test_constrained_and_free_rows_share_a_batch(loaded, compiler):
    """Sampled at temperature 1 from random weights, the text matches only because of the mask;
    the free rows beside them are exactly what they are alone."""
    regex = Constraint("regex", REGEX)
    choice = Constraint("choice", json.dumps(["alpha", "beta gamma"]))
    free = request(loaded, compiler, "The weather", max_length=30)
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    alone_batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    alone = drain(alone_batch, alone_batch.join([("free", free)]))
    sampled = {"do_sample": True, "temperature": 1.0, "top_k": 0, "max_length": 60}
    entries = [(f"re{s}", request(loaded, compiler, "A", regex, seed=s, **sampled)) for s in range(8)]
    entries += [(f"ch{s}", request(loaded, compiler, "Pick", choice, seed=s, **sampled)) for s in range(4)]
    done = drain(batch, batch.join([("free", free)] + entries[:6]))
    assert done[("free", 0)].tokens == alone[("free", 0)].tokens and done[("free", 0)].reason == "length"
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    done.update(drain(batch, batch.join(entries[6:])))
    for owner, _ in entries:
        row = done[(owner, 0)]
        assert row.reason == "eos"  # the grammar ended the row
        if owner.startswith("re"):
            assert re.fullmatch(REGEX, text(loaded, row)), text(loaded, row)
        else:
            assert text(loaded, row) in ("alpha", "beta gamma")
    assert grammar.RowGrammar.live == 0


def test_rows_release_their_grammar_on_finish_cancel_and_deadline(loaded, compiler):
    endless = Constraint("regex", "[a-z ]*")  # never complete: the row runs until it is stopped
    sampled = {"do_sample": True, "top_k": 0, "max_length": 400}
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id)
    batch.join(
        [
            ("cancel", request(loaded, compiler, "A", endless, seed=1, **sampled)),
            ("stop", request(loaded, compiler, "B", endless, seed=2, **sampled)),
            ("deadline", request(loaded, compiler, "C", endless, seed=3, max_time=1.0, **sampled)),
            ("length", request(loaded, compiler, "D", endless, seed=4, **{**sampled, "max_length": 12})),
        ]
    )
    assert grammar.RowGrammar.live == 4
    batch.advance()
    batch.leave({"cancel"})
    batch.finish({("stop", 0)})  # a stop string, found off the engine thread
    assert grammar.RowGrammar.live == 2
    time.sleep(1.0)
    done = drain(batch)
    assert {key[0]: row.reason for key, row in done.items()} == {"deadline": "time", "length": "length"}
    assert grammar.RowGrammar.live == 0
    batch.join([("pending", request(loaded, compiler, "E", endless, seed=5, **sampled))])
    batch.clear()  # after a failed step
    assert grammar.RowGrammar.live == 0

    def failing(owners):
        raise RuntimeError("injected")

    batch.check_prefill = failing  # a prefill that fails: its rows never join
    with pytest.raises(RuntimeError):
        batch.join([("failed", request(loaded, compiler, "F", endless, seed=6, **sampled))])
    assert grammar.RowGrammar.live == 0


def test_a_batch_without_constraints_does_no_grammar_work(monkeypatch):
    class Row:
        grammar = None

    monkeypatch.setattr(grammar, "_unpack", lambda *a: pytest.fail("masked a free batch"))
    scores = torch.zeros(3, 64)
    assert grammar.mask([Row(), Row(), Row()], scores) is scores and not scores.any()
