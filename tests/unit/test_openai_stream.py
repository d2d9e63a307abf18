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


def test_greedy_copies_echo_and_usage():
    render, _ = stream(n=2, temperature=0, echo=True, stream_options={"include_usage": True})
    (opening,) = render.opening()
    assert [(c["index"], c["text"]) for c in opening["choices"]] == [(0, "Hi"), (1, "Hi")] and opening["usage"] is None
    (chunk,) = render.render(0, Piece(0, " there"))
    assert [(c["index"], c["text"], c["logprobs"]) for c in chunk["choices"]] == [
        (0, " there", None),
        (1, " there", None),
    ]
    assert render.render(0, Piece(0, "")) == []  # nothing to say
    (final,) = render.render(0, Finished((completion(" there"),)))
    assert [c["finish_reason"] for c in final["choices"]] == ["length", "length"]
    (usage,) = render.closing()
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}


def test_echo_with_logprobs_waits_for_the_prompts_scores():
    render, _ = stream(echo=True, logprobs=0, max_tokens=0)
    assert render.opening() == []
    prompt = (TokenLogprob("Hi", None),)
    (chunk,) = render.render(0, Piece(0, prompt_logprobs=prompt))
    (choice,) = chunk["choices"]
    assert choice["text"] == "Hi" and choice["logprobs"]["token_logprobs"] == [None]
    assert choice["logprobs"]["top_logprobs"] == [None] and choice["finish_reason"] is None
