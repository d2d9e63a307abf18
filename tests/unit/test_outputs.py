"""Text off the engine thread: the engine hands over token ids (core.Delta) and the event loop decodes,
finds stop strings (ending their rows early), streams pieces and formats logprobs."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest
from prometheus_client import CollectorRegistry

from predictor.core import Delta, Finished, GenerationRequest, Piece, Sampling
from predictor.engine.engine import Engine
from predictor.engine.outputs import Outputs, Tokenizer
from predictor.generation.runner import Runner
from predictor.telemetry.metrics import Metrics


@pytest.fixture(scope="module")
def runner(loaded):
    return Runner(loaded)


def request(loaded, prompt: str, new: int, **sampling) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    return GenerationRequest(prompt, ids, Sampling(max_length=len(ids) + new, **sampling))


def serve(runner, coroutine_factory, metrics=None, patch=None):
    engine = Engine(runner, metrics=metrics)
    if patch is not None:
        patch(engine)
    engine.start()
    try:
        return asyncio.run(coroutine_factory(engine))
    finally:
        engine.stop(timeout=30)


async def streamed(engine, req) -> tuple[list[Piece], list]:
    pieces, completions = [], None
    async for item in engine.stream(req):
        if isinstance(item, Finished):
            completions = list(item.completions)
        else:
            pieces.append(item)
    return pieces, completions


class GuardedTokenizer:
    """The real tokenizer, but decoding on the engine thread is refused (and noted)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer, self.on_engine_thread, self.elsewhere = tokenizer, [], 0

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def _check(self, what: str) -> None:
        if threading.current_thread().name == "engine":
            self.on_engine_thread.append(what)
            raise AssertionError(f"the engine thread called the tokenizer's {what}")
        self.elsewhere += 1

    def decode(self, *args, **kwargs):
        self._check("decode")
        return self._tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        self._check("batch_decode")
        return self._tokenizer.batch_decode(*args, **kwargs)


def rounded(value):
    """``value`` with every float rounded to 4 decimals (Completions, TokenLogprobs, lists, tuples)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(v) for v in value)
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(
            value, **{f.name: rounded(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    return value


def test_the_engine_thread_never_decodes(loaded, runner):
    guard = GuardedTokenizer(loaded.tokenizer)
    guarded = Runner(dataclasses.replace(loaded, tokenizer=guard))
    plain = request(loaded, "The weather", 30, stop=("ju", "never"))
    sampled = request(loaded, "Tell me", 25, do_sample=True, num_return_sequences=2, seed=3, logprobs=2, stop=("e",))
    beams = request(loaded, "If I was", 20, num_beams=2, num_return_sequences=2, logprobs=1, stop=("K",))
    echo = request(loaded, "Kubernetes runs containers", 4, logprobs=1, score_prompt=True)

    async def go(engine):
        answers = await asyncio.gather(engine.run([plain, beams, echo]), streamed(engine, sampled))
        return answers[0], answers[1][1]

    # Texts exactly; logprobs to 1e-4: a row's float sums may differ in the last bits with the rows
    # beside it (which step the streamed request joins at depends on timing), not with the tokenizer.
    assert rounded(serve(guarded, go)) == rounded(serve(runner, go))
    assert guard.on_engine_thread == [] and guard.elsewhere > 0


def stop_and_cut(loaded, runner, req) -> tuple[str, int, str]:
    """A stop string from the middle of the greedy continuation of ``req``, how many tokens it takes to
    appear, and the continuation before it."""
    (completion,) = serve(runner, lambda engine: engine.run([req]))[0]
    tokens = loaded.tokenizer(completion.continuation).input_ids
    text = completion.continuation
    stop = text[len(text) // 3 : len(text) // 3 + 3]
    needed = next(n for n in range(1, len(tokens) + 1) if stop in runner.decode(tokens[:n]))
    return stop, needed, text[: text.index(stop)]


def test_a_stop_string_ends_its_row_early_and_later_tokens_are_not_counted(loaded, runner):
    stop, needed, cut = stop_and_cut(loaded, runner, request(loaded, "The weather", 40))
    long = request(loaded, "The weather", 500, stop=(stop,))
    registry, steps = CollectorRegistry(), []

    def count_steps(engine):
        advance = engine._worker.batch.advance

        def counted():
            steps.append(1)
            threading.Event().wait(0.002)  # give the event loop its turn between the tiny model's steps
            return advance()

        engine._worker.batch.advance = counted

    async def go(engine):
        (completion,) = (await engine.run([long]))[0]
        for _ in range(100):  # the engine drops the row at its next step
            if registry.get_sample_value("gptj_requests_running") == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        return completion

    completion = serve(runner, go, Metrics(registry), count_steps)
    assert completion.finish_reason == "stop" and completion.continuation == cut
    assert completion.generated_tokens == needed  # the tokens up to the one that completed the stop
    assert registry.get_sample_value("gptj_generated_tokens_total") == needed  # none generated after it
    assert registry.get_sample_value("gptj_requests_running") == 0
    assert len(steps) < needed + 50 < 500  # the row left long before its max_length


def test_stream_pieces_add_up_to_the_final_text_and_carry_each_tokens_logprobs(loaded, runner):
    stop, _, cut = stop_and_cut(loaded, runner, request(loaded, "She opened the book", 40))
    for req in (
        request(loaded, "She opened the book", 40, logprobs=2),
        request(loaded, "She opened the book", 40, logprobs=0, stop=(stop,)),
    ):
        pieces, (completion,) = serve(runner, lambda engine, req=req: streamed(engine, req))
        assert all(piece.index == 0 and piece.text for piece in pieces)
        assert "".join(piece.text for piece in pieces) == completion.continuation
        entries = [entry for piece in pieces for entry in piece.logprobs]
        assert len([piece for piece in pieces if piece.logprobs]) > 1  # as the tokens come, not at the end
        assert tuple(entries) == completion.logprobs[: len(entries)]  # the rest, if any, had no text left
        if req.sampling.stop:
            assert completion.finish_reason == "stop" and completion.continuation == cut
        else:
            assert len(entries) == len(completion.logprobs) == completion.generated_tokens == 40


def test_echo_scoring_streams_the_prompt_first(loaded, runner):
    req = request(loaded, "Kubernetes runs containers", 3, logprobs=1, score_prompt=True)
    pieces, (completion,) = serve(runner, lambda engine: streamed(engine, req))
    assert pieces[0].prompt_logprobs == completion.prompt_logprobs and pieces[0].text == ""
    assert "".join(entry.text for entry in pieces[0].prompt_logprobs) == req.prompt
    assert all(piece.prompt_logprobs is None for piece in pieces[1:])


class Letters:
    """A tokenizer of single letters: token i is chr(ord('a') + i)."""

    @staticmethod
    def decode(tokens) -> str:
        return "".join(chr(ord("a") + t) for t in tokens)

    @staticmethod
    def texts(ids) -> list[str]:
        return [chr(ord("a") + t) for t in ids]


def test_outputs_end_a_sequence_at_its_stop_and_drop_what_follows():
    req = GenerationRequest("P", (0,), Sampling(max_length=20, num_return_sequences=2, stop=("cd",)))
    outputs = Outputs(req, Tokenizer(Letters.decode, Letters.texts), streaming=True)
    fed = outputs.feed([Delta(0, (2,)), Delta(1, (1,))])
    assert (fed.pieces, fed.tokens, fed.stopped) == (
        [Piece(1, "b", generated=1)],
        2,
        [],
    )  # "c" may begin "cd": held back
    fed = outputs.feed([Delta(0, (3,)), Delta(1, (2,))])
    assert (fed.pieces, fed.tokens, fed.stopped) == ([], 2, [0])  # "cd": sequence 0 is over, nothing to send
    fed = outputs.feed([Delta(0, (4,)), Delta(1, (4,), finished=True, finish_reason="length")])
    assert fed.tokens == 1 and fed.pieces == [
        Piece(1, "ce", generated=3)
    ]  # sequence 0's late token: dropped, not counted
    first, second = fed.completions
    assert (first.continuation, first.finish_reason, first.generated_tokens) == ("", "stop", 2)
    assert (second.text, second.finish_reason, second.generated_tokens) == ("Pbce", "length", 3)
