"""The scheduling policy (engine/scheduling.py) as the engine thread lives it, on a fake backend (no model).

The fake logs every model call the worker makes: a join's prefill, a beam search's prefill, a beam
step, a decode step with its rows. The tests read that log: what shares an iteration, in what order,
and that no kind of request waits for another beyond the rows' bound.
"""

from __future__ import annotations

import asyncio
import queue
from types import SimpleNamespace

import pytest
import torch

from predictor.core import Delta, GenerationRequest, Sampling, new_tokens
from predictor.engine.faults import Faults
from predictor.engine.health import Health
from predictor.engine.jobs import Job
from predictor.engine.outputs import Outputs, Tokenizer
from predictor.engine.scheduling import rows
from predictor.engine.worker import Worker
from predictor.errors import GenerationFailed, ResourceExhausted
from predictor.generation.continuous import Done
from predictor.settings import BatchPolicy


def req(name: str, new: int, beams: int = 1, prompt: int = 4, **fields) -> GenerationRequest:
    sampling = Sampling(max_length=prompt + new, num_beams=beams, num_return_sequences=1, **fields)
    return GenerationRequest(name, tuple(range(1, prompt + 1)), sampling)


class FakeBatch:
    """The continuous batch's interface (continuous.ContinuousBatch): every row takes one token a step, and
    a prompt over ``max_prefill_tokens`` (set by the worker) is prefilled a chunk per step, as prefill.py does:
    at once when nothing else is prefilling, else behind it; after the decode step, none in a step whose
    join already ran one."""

    max_prefill_tokens: int | None = None
    check_prefill = fatal = None  # the worker's hooks (fault injection); unused here

    def __init__(self, log: list) -> None:
        self.log, self.rows, self.tokens_generated = log, [], 0
        self.pending: list[list] = []  # [owner, request, prompt tokens still to prefill]
        self.prefilled: list = []  # owners whose first token is in, since take_prefilled
        self.chunked = False  # a chunk ran in this step's join

    @property
    def longest(self) -> int:
        owners = [row.owner for row in self.rows] + [owner for owner, _, _ in self.pending]
        return max((len(o.request.input_ids) + new_tokens(o.request)[0] for o in owners), default=0)

    @property
    def occupied(self) -> int:
        return len(self.rows) + sum(request.sampling.num_return_sequences for _, request, _ in self.pending)

    def join(self, entries) -> list[Done]:
        self.log.append(("join", tuple(request.prompt for _, request in entries)))
        for owner, request in entries:
            if self.max_prefill_tokens and len(request.input_ids) > self.max_prefill_tokens:
                self.pending.append([owner, request, len(request.input_ids)])
            else:
                self._add(owner, request)
        if self.pending and self.pending[0][0] is entries[0][0]:  # nothing was waiting before: start now
            self._chunk()
            self.chunked = True
        return []

    def _add(self, owner, request) -> None:
        for index in range(request.sampling.num_return_sequences):
            choice = SimpleNamespace(tokens=list(request.input_ids), prompt_length=len(request.input_ids))
            choice.scored = choice.prompt_scored = None
            self.rows.append(SimpleNamespace(owner=owner, index=index, choice=choice, max_new=new_tokens(request)[0]))
        self.prefilled.append(owner)

    def _chunk(self) -> None:
        entry = self.pending[0]
        self.log.append(("chunk", (entry[1].prompt,)))
        entry[2] -= self.max_prefill_tokens
        if entry[2] <= 0:
            self.pending.pop(0)
            self._add(entry[0], entry[1])

    def take_prefilled(self) -> list:
        started, self.prefilled = self.prefilled, []
        return started

    def take_failed(self) -> dict:
        return {}

    def advance(self) -> list[Done]:
        done = []
        if self.rows:
            self.log.append(("decode", tuple(row.owner.request.prompt for row in self.rows)))
        for row in self.rows:
            row.choice.tokens.append(7)
            self.tokens_generated += 1
            if len(row.choice.tokens) - row.choice.prompt_length == row.max_new:
                done.append(Done(row.owner, row.index, row.choice.tokens[row.choice.prompt_length :], "length"))
        self.rows = [row for row in self.rows if len(row.choice.tokens) - row.choice.prompt_length < row.max_new]
        if self.pending and not self.chunked:
            self._chunk()
        self.chunked = False
        return done

    def leave(self, owners) -> dict:
        gone = {
            row.owner: len(row.choice.tokens) - row.choice.prompt_length for row in self.rows if row.owner in owners
        }
        self.rows = [row for row in self.rows if row.owner not in owners]
        self.pending = [entry for entry in self.pending if entry[0] not in owners]
        return gone

    def clear(self) -> list:
        owners, self.rows = [row.owner for row in self.rows], []
        return owners


class FakeSearch:
    """diverse.BeamSearch's interface: rows, length, steps, step() until its new tokens are in."""

    def __init__(self, requests, log: list, fail_at: dict) -> None:
        self.names = tuple(r.prompt for r in requests)
        self.rows = sum(rows(r) for r in requests)
        self.length = max(len(r.input_ids) for r in requests) + new_tokens(requests[0])[0]
        self.left, self.steps, self.log, self.fail_at = new_tokens(requests[0])[0], 0, log, fail_at
        log.append(("beam start", self.names))

    def step(self, stop=None) -> bool:
        self.log.append(("beam", self.names))
        self.steps += 1
        for name in self.names:
            if self.fail_at.get(name) == self.steps:
                raise self.fail_at[f"{name} error"]
        self.left -= 1
        return self.left == 0


class FakeBackend:
    def __init__(self, fail_at: dict | None = None) -> None:
        self.log: list = []
        self.fail_at = fail_at or {}

    def continuous(self) -> FakeBatch:
        return FakeBatch(self.log)

    def start_beams(self, requests) -> FakeSearch:
        return FakeSearch(requests, self.log, self.fail_at)

    def beam_outputs(self, requests, search) -> list[list[Delta]]:
        return [
            [Delta(i, (7,) * search.steps, None, None, True, "length") for i in range(r.sampling.num_return_sequences)]
            for r in requests
        ]

    def decode(self, tokens) -> str:
        return "x" * len(tokens)

    def token_texts(self, ids) -> list[str]:
        return ["x" for _ in ids]


def drive(backend: FakeBackend, requests, policy: BatchPolicy = BatchPolicy(), cancel=()) -> dict:
    """Hand ``requests`` to a worker at once and run its loop on this thread until it answered them all:
    each request's outcome (its Completions, or the exception it got)."""
    loop, jobs = asyncio.new_event_loop(), queue.Queue()
    try:
        futures = {}
        worker = Worker(backend, policy, None, Faults(), jobs, lambda n: None, Health(60))
        tokenizer = Tokenizer(backend.decode, backend.token_texts)
        for request in requests:
            outputs = Outputs(request, tokenizer, streaming=False)
            job = Job(request, loop.create_future(), loop, outputs=outputs, finish_row=worker.finish)
            futures[request.prompt] = job.future
            jobs.put(job)
            if request.prompt in cancel:
                job.future.cancel()  # its client is gone before it starts
        jobs.put(None)  # stop once everything is answered
        worker.work()
        loop.run_until_complete(asyncio.sleep(0))  # the Deltas and settles the worker handed over
        return {name: f.exception() or f.result() if not f.cancelled() else "cancelled" for name, f in futures.items()}
    finally:
        loop.close()


def iterations(log: list, chunk_after_decode: bool = False) -> list[list]:
    """The log cut into engine iterations: each ends with a decode step (beam-only ones never do here),
    or with the prefill chunk that follows it (``chunk_after_decode``: the batch's advance runs both)."""
    cut, current = [], []
    for event in log:
        if chunk_after_decode and event[0] == "chunk" and not current and cut and cut[-1][-1][0] == "decode":
            cut[-1].append(event)
            continue
        current.append(event)
        if event[0] == "decode":
            cut.append(current)
            current = []
    return cut + ([current] if current else [])


def test_a_long_beam_search_never_holds_a_greedy_row_back():
    backend = FakeBackend()
    outcome = drive(backend, [req("greedy", 400), req("beams", 300, beams=4)])
    assert [c.generated_tokens for c in outcome["beams"]] == [300] and outcome["greedy"][0].generated_tokens == 400
    beam_steps = [i for i, event in enumerate(backend.log) if event == ("beam", ("beams",))]
    assert len(beam_steps) == 300
    # Between two beam steps the greedy row takes exactly one token: one beam step per iteration.
    for before, after in zip(beam_steps, beam_steps[1:], strict=False):
        between = backend.log[before + 1 : after]
        assert between == [("decode", ("greedy",))]
    # ...and every iteration while the search ran gave the greedy row its token
    during = [it for it in iterations(backend.log) if ("beam", ("beams",)) in it]
    assert len(during) == 300 and all(it[-1] == ("decode", ("greedy",)) for it in during)


def test_decode_rows_prefill_chunks_and_beam_steps_share_every_iteration():
    """A streaming greedy row beside a beam search and a long prompt prefilled in chunks of 4: the greedy
    row takes a token in every iteration, the search a step in every one, the prompt one chunk per
    iteration (first come, first served: it starts after the search that arrived before it)."""
    backend = FakeBackend()
    policy = BatchPolicy(max_prefill_tokens=4)
    outcome = drive(backend, [req("greedy", 12), req("beams", 6, beams=2), req("long", 2, prompt=14)], policy)
    assert all(not isinstance(o, Exception) for o in outcome.values())
    its = iterations(backend.log, chunk_after_decode=True)
    chunks = [i for i, it in enumerate(its) if ("chunk", ("long",)) in it]
    # 14 tokens: 4 + 4 + 4 + 2, one chunk in each of four iterations in a row (the first in its join)
    assert len(chunks) == 4 and chunks == list(range(chunks[0], chunks[0] + 4))
    for it in its[: chunks[-1] + 1]:
        assert it.count(("decode", ("greedy",))) + it.count(("decode", ("greedy", "long"))) <= 1
        assert sum(e[0] == "chunk" for e in it) <= 1  # at most one chunk an iteration
        assert any(e[0] == "decode" and "greedy" in e[1] for e in it)  # the greedy row never waits
    assert all(("beam", ("beams",)) in it for it in its[1:6])  # the search stepped beside the chunks
    # once its last chunk is in, the long prompt's row decodes with the greedy one
    assert ("decode", ("greedy", "long")) in its[chunks[-1] + 1]


def test_one_prefill_per_iteration_oldest_first():
    backend = FakeBackend()
    drive(backend, [req("a", 3), req("b", 3), req("beams", 3, beams=2), req("c", 3)])
    starts = [(i, e) for i, it in enumerate(iterations(backend.log)) for e in it if e[0] in ("join", "beam start")]
    # a and b join together; the search starts in the next iteration; c (behind it) in the one after
    assert starts == [(0, ("join", ("a", "b"))), (1, ("beam start", ("beams",))), (2, ("join", ("c",)))]


def test_beam_rows_count_against_the_batch_size():
    backend = FakeBackend()
    policy = BatchPolicy(max_batch_size=4)
    outcome = drive(backend, [req("beams", 5, beams=3), req("g1", 5), req("g2", 5)], policy)
    assert all(not isinstance(o, Exception) for o in outcome.values())
    # 3 beam rows + g1 fill the 4 rows; g2 waits until the search ends, then joins
    decodes = [e[1] for e in backend.log if e[0] == "decode"]
    assert decodes[:4] == [("g1",)] * 4  # while the search's 3 rows step beside it
    assert backend.log.index(("join", ("g2",))) > max(i for i, e in enumerate(backend.log) if e[0] == "beam")


def test_a_waiting_beam_search_blocks_later_rows_until_it_fits():
    """No starvation: a search that does not fit yet is not overtaken by requests behind it."""
    backend = FakeBackend()
    policy = BatchPolicy(max_batch_size=4)
    drive(backend, [req("g1", 4), req("g2", 2), req("beams", 2, beams=3), req("g3", 2)], policy)
    order = [e for e in backend.log if e[0] in ("join", "beam start")]
    assert order == [("join", ("g1", "g2")), ("beam start", ("beams",)), ("join", ("g3",))]
    # the search started as soon as g2's row freed (2 + 3 > 4 with both greedy rows, 1 + 3 = 4 after)
    start = backend.log.index(("beam start", ("beams",)))
    assert [e for e in backend.log[:start] if e[0] == "decode"] == [("decode", ("g1", "g2"))] * 2


def test_searches_with_equal_settings_share_steps_and_others_step_side_by_side():
    backend = FakeBackend()
    drive(backend, [req("x", 3, beams=2), req("y", 3, beams=2, prompt=6), req("z", 3, beams=3)])
    assert backend.log.count(("beam", ("x", "y"))) == 3 and backend.log.count(("beam", ("z",))) == 3
    first_z = backend.log.index(("beam", ("z",)))
    assert backend.log[first_z - 1] == ("beam", ("x", "y"))  # one iteration steps both searches


def test_a_failed_shared_search_runs_each_request_alone_and_only_the_culprit_fails():
    backend = FakeBackend({"bad": 2, "bad error": RuntimeError("boom")})
    outcome = drive(backend, [req("good", 4, beams=2), req("bad", 4, beams=2), req("greedy", 6)])
    assert isinstance(outcome["bad"], GenerationFailed)
    assert outcome["good"][0].generated_tokens == 4 and outcome["greedy"][0].generated_tokens == 6
    assert backend.log.count(("beam start", ("good",))) == 1  # restarted alone after the shared step failed


def test_out_of_memory_in_a_search_fails_it_with_503_and_the_rest_carries_on():
    backend = FakeBackend({"big": 3, "big error": torch.OutOfMemoryError("CUDA out of memory")})
    outcome = drive(backend, [req("big", 5, beams=2), req("greedy", 6)])
    assert isinstance(outcome["big"], ResourceExhausted) and outcome["greedy"][0].generated_tokens == 6


def test_an_unrecoverable_error_in_a_beam_step_fails_the_engine():
    error = RuntimeError("CUDA error: device-side assert triggered")
    backend = FakeBackend({"beams": 2, "beams error": error})
    loop, jobs, health = asyncio.new_event_loop(), queue.Queue(), Health(60)
    try:
        jobs.put(Job(req("beams", 5, beams=2), loop.create_future(), loop))
        Worker(backend, BatchPolicy(), None, Faults(), jobs, lambda n: None, health).work()
        assert health.failed and health.failure(False) is not None
    finally:
        loop.close()


@pytest.mark.parametrize("cancel", [("beams",), ()])
def test_a_search_nobody_waits_for_never_steps(cancel):
    backend = FakeBackend()
    outcome = drive(backend, [req("beams", 50, beams=2), req("greedy", 3)], cancel=cancel)
    steps = backend.log.count(("beam", ("beams",)))
    assert steps == (0 if cancel else 50)
    assert outcome["greedy"][0].generated_tokens == 3
