"""Server-sent events: one event per line whatever the text, and fan-in of several generations."""

from __future__ import annotations

import asyncio
import json

import pytest

from predictor.protocols.sse import event, merge


@pytest.mark.parametrize("text", ["plain", "two\nlines", "cr\rlf", "nel\x85", "ls\u2028ps\u2029", "ctl\x0b\x1c"])
def test_an_event_is_one_line_that_any_client_splits_alike(text):
    data = event({"text": text}).decode()
    assert data.endswith("\n\n") and len(data[:-2].splitlines()) == 1  # str.splitlines breaks on the most
    assert json.loads(data[len("data: ") :]) == {"text": text}


def test_done_marker():
    assert event("[DONE]") == b"data: [DONE]\n\n"


async def numbers(start: int, count: int, fail: bool = False):
    for value in range(start, start + count):
        await asyncio.sleep(0)
        yield value
    if fail:
        raise ValueError("broken")


def test_merge_interleaves_and_labels():
    async def go():
        return [item async for item in merge([numbers(0, 3), numbers(10, 2)])]

    items = asyncio.run(go())
    assert sorted(items) == [(0, 0), (0, 1), (0, 2), (1, 10), (1, 11)]
    assert [v for i, v in items if i == 0] == [0, 1, 2]


def test_merge_raises_the_first_error_and_stops_the_others():
    closed = []

    async def endless():
        try:
            while True:
                await asyncio.sleep(0.001)
                yield 0
        finally:
            closed.append(True)

    async def go():
        with pytest.raises(ValueError):
            async for _ in merge([endless(), numbers(0, 2, fail=True)]):
                pass
        await asyncio.sleep(0.01)

    asyncio.run(go())
    assert closed == [True]
