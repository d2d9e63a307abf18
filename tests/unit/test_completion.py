"""Completions: stop strings, streamed pieces that never need taking back, the envelope's data."""

from __future__ import annotations

import pytest

from predictor.core import Completion, GenerationRequest, Sampling
from predictor.engine.text import TextStream, cut_at_stop
from predictor.protocols import envelope


@pytest.mark.parametrize(
    "text, stops, expected",
    [
        ("Hello world. Bye", ["."], ("Hello world", True)),
        ("Hello world. Bye", ["Bye", "o"], ("Hell", True)),  # the earliest stop wins
        ("Hello world", ["x"], ("Hello world", False)),
        ("Hello", [], ("Hello", False)),
    ],
)
def test_cut_at_stop(text, stops, expected):
    assert cut_at_stop(text, stops) == expected


def stream_of(pieces: list, stops=()) -> tuple[list[str], str]:
    """Feed the growing text one token at a time; token i is pieces[i] (text, or UTF-8 bytes)."""

    def decode(tokens) -> str:  # as a byte-level tokenizer decodes: an unfinished character is U+FFFD
        data = b"".join(p if isinstance(p, bytes) else p.encode() for p in (pieces[i] for i in tokens))
        return data.decode("utf-8", errors="replace")

    stream = TextStream(decode, stops)
    sent = [stream.piece(range(n)) for n in range(1, len(pieces) + 1)]
    return sent, stream.piece(range(len(pieces)), final=True)


def test_pieces_add_up_to_the_text():
    sent, last = stream_of(["Hel", "lo", " wor", "ld"])
    assert sent == ["Hel", "lo", " wor", "ld"] and last == ""


def test_an_unfinished_character_waits_for_its_bytes():
    sent, last = stream_of([b"caf", b"\xc3", b"\xa9!"])  # "é" split over two tokens
    assert sent == ["caf", "", "é!"] and last == ""


def test_text_that_may_begin_a_stop_string_is_held_back():
    sent, last = stream_of(["Hi", " the", "re ", "EN", "D more"], stops=["END"])
    assert "".join(sent) + last == "Hi there "
    assert sent[3] == ""  # "EN" might be the start of "END": not sent yet


def test_held_back_text_is_sent_when_it_was_not_a_stop():
    sent, last = stream_of(["Hi E", "Nx"], stops=["END"])
    assert sent == ["Hi ", "ENx"] and last == ""


def test_the_final_piece_flushes_what_was_held():
    sent, last = stream_of(["Hi E"], stops=["END"])
    assert sent == ["Hi "] and last == "E"


def request(details=False, n=1) -> GenerationRequest:
    return GenerationRequest(
        "P", (1,), Sampling(max_length=5, num_return_sequences=n), details=details, wants_list=n > 1
    )


def test_envelope_data_with_and_without_details():
    completion = Completion("P and more", " and more", "stop", 1, 2)
    assert envelope.data([request()], [[completion]]) == "P and more"
    assert envelope.data([request(details=True)], [[completion]]) == {
        "text": "P and more",
        "finish_reason": "stop",
        "prompt_tokens": 1,
        "generated_tokens": 2,
    }
    assert envelope.data([request(), request(details=True, n=2)], [[completion], [completion, completion]]) == [
        "P and more",
        [envelope.details(completion), envelope.details(completion)],
    ]


def test_each_step_decodes_only_the_newest_tokens():
    pieces, lengths = [b"a", b"b", b"\xc3", b"\xa9", b"c"] * 40, []

    def decode(tokens) -> str:
        lengths.append(len(tokens))
        return b"".join(pieces[i] for i in tokens).decode("utf-8", errors="replace")

    stream = TextStream(decode, ["zz"])
    sent = "".join(stream.piece(range(n)) for n in range(1, len(pieces) + 1))
    assert sent + stream.piece(range(len(pieces)), final=True) == "abéc" * 40
    assert max(lengths) <= 2  # a split character is decoded again once, with its second half
