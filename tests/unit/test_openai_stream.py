"""OpenAI's streamed chunks, rendered from the engine's stream items (no model, no server)."""

from __future__ import annotations

from predictor.core import Completion, Finished, GenerationRequest, Piece, TokenLogprob
from predictor.protocols import openai as oa
from predictor.protocols.openai_stream import Stream
from predictor.settings import Limits


def stream(**fields) -> tuple[Stream, list[GenerationRequest]]:
    req = oa.parse({"model": "gptj", "prompt": "Hi", **fields}, Limits())
    generations = oa.requests(req, ["Hi"], [[1]], Limits())
    return Stream(oa.Ids("gptj"), req, generations), generations


def entry(text: str, logprob: float = -1.0) -> TokenLogprob:
    return TokenLogprob(text, logprob, ((text, logprob),))


def completion(continuation: str, logprobs=None, reason="length", tokens=2) -> Completion:
    return Completion("Hi" + continuation, continuation, reason, 1, tokens, logprobs)


def test_text_chunks_carry_their_tokens_logprobs_with_running_offsets():
    render, _ = stream(logprobs=1, max_tokens=3)
    first = render.render(0, Piece(0, " a", (entry(" a"),)))
    (chunk,) = first
    assert chunk["object"] == "text_completion" and "usage" not in chunk
    assert chunk["choices"] == [
        {
            "index": 0,
            "text": " a",
            "logprobs": {
                "tokens": [" a"],
                "token_logprobs": [-1.0],
                "top_logprobs": [{" a": -1.0}],
                "text_offset": [2],
            },
            "finish_reason": None,
        }
    ]
    (second,) = render.render(0, Piece(0, "b", (entry("b"),)))
    assert second["choices"][0]["logprobs"]["text_offset"] == [4]  # after "Hi" and " a"
    # A last token whose text was held back and never sent rides on the final chunk, with the reason.
    done = completion(" ab.", (entry(" a"), entry("b"), entry(".")), "stop", tokens=3)
    (final,) = render.render(0, Finished((done,)))
    assert final["choices"][0]["text"] == "" and final["choices"][0]["finish_reason"] == "stop"
    assert final["choices"][0]["logprobs"]["tokens"] == ["."] and final["choices"][0]["logprobs"]["text_offset"] == [5]
    assert render.closing() == []


def test_greedy_copies_echo_and_usage_one_choice_per_chunk():
    render, _ = stream(n=2, temperature=0, echo=True, stream_options={"include_usage": True})
    opening = render.opening()
    assert [[(c["index"], c["text"]) for c in chunk["choices"]] for chunk in opening] == [[(0, "Hi")], [(1, "Hi")]]
    assert all(chunk["usage"] is None for chunk in opening)
    chunks = render.render(0, Piece(0, " there"))
    assert [[(c["index"], c["text"], c["logprobs"]) for c in chunk["choices"]] for chunk in chunks] == [
        [(0, " there", None)],
        [(1, " there", None)],
    ]
    assert render.render(0, Piece(0, "")) == []  # nothing to say
    finals = render.render(0, Finished((completion(" there"),)))
    assert [[(c["index"], c["finish_reason"]) for c in chunk["choices"]] for chunk in finals] == [
        [(0, "length")],
        [(1, "length")],
    ]
    (usage,) = render.closing()
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}


def test_sampled_n_gives_each_index_its_own_chunks_and_finish_chunk():
    render, _ = stream(n=2, seed=1, max_tokens=2)
    chunks = render.render(0, Piece(1, " b")) + render.render(0, Piece(0, " a"))
    chunks += render.render(0, Finished((completion(" a"), completion(" b", reason="stop"))))
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    seen = [(chunk["choices"][0]["index"], chunk["choices"][0]["finish_reason"]) for chunk in chunks]
    assert seen == [(1, None), (0, None), (0, "length"), (1, "stop")]


def test_continuous_usage_stats_put_each_choices_usage_so_far_on_every_chunk():
    options = {"include_usage": True, "continuous_usage_stats": True}
    render, _ = stream(n=2, seed=1, max_tokens=3, stream_options=options)
    (first,) = render.render(0, Piece(0, " a", generated=1))
    (other,) = render.render(0, Piece(1, " b c", generated=2))
    finals = render.render(0, Finished((completion(" a.", tokens=3), completion(" b c", tokens=2))))
    assert first["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert other["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert [chunk["usage"]["completion_tokens"] for chunk in finals] == [3, 2]
    (usage,) = render.closing()
    assert usage["usage"] == {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}
    # vLLM's rule: without include_usage, continuous_usage_stats adds nothing.
    (plain,) = stream(stream_options={"continuous_usage_stats": True})[0].render(0, Piece(0, " a", generated=1))
    assert "usage" not in plain


def test_the_sampled_token_is_among_top_logprobs_when_not_in_the_top_n():
    render, _ = stream(logprobs=1, max_tokens=2, seed=3)
    unlikely = TokenLogprob(" z", -7.5, ((" a", -0.1),))
    (chunk,) = render.render(0, Piece(0, " z", (unlikely,)))
    assert chunk["choices"][0]["logprobs"]["top_logprobs"] == [{" a": -0.1, " z": -7.5}]  # N + 1 entries
    likeliest = TokenLogprob(" a", -0.1, ((" a", -0.1),))
    (chunk,) = render.render(0, Piece(0, " a", (likeliest,)))
    assert chunk["choices"][0]["logprobs"]["top_logprobs"] == [{" a": -0.1}]  # already there: N entries


def test_echo_with_logprobs_waits_for_the_prompts_scores():
    render, _ = stream(echo=True, logprobs=0, max_tokens=0)
    assert render.opening() == []
    prompt = (TokenLogprob("Hi", None),)
    (chunk,) = render.render(0, Piece(0, prompt_logprobs=prompt))
    (choice,) = chunk["choices"]
    assert choice["text"] == "Hi" and choice["logprobs"]["token_logprobs"] == [None]
    assert choice["logprobs"]["top_logprobs"] == [None] and choice["finish_reason"] is None
