"""The seed contract's envelope, ``{"status", "data", "message"}``: every answer of the seed API.

``data`` is the full text for one prompt and one sequence, else a list in request order (a prompt
that asked for several sequences gives its list); with ``details: true`` each text is an object with
its finish reason and token counts. ``message`` holds the notes about capped or ignored values, or
on failure what is wrong. The ``:stream`` route's events are rendered here too (``stream_event``).
"""

from __future__ import annotations

from typing import Any, Sequence

from predictor.core import Completion, Finished, GenerationRequest, Piece
from predictor.protocols import logprobs


def failed(message: str) -> dict[str, Any]:
    """The envelope of a failed request."""
    return {"status": "failed", "data": None, "message": message}


def succeeded(data: Any, message: str | None = None) -> dict[str, Any]:
    """The envelope of a successful request."""
    return {"status": "success", "data": data, "message": message}


def details(completion: Completion) -> dict[str, Any]:
    """One sequence in the ``details: true`` form; with ``logprobs``, its generated tokens' logprobs."""
    form = {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "generated_tokens": completion.generated_tokens,
    }
    if completion.logprobs is not None:
        prompt = completion.text[: len(completion.text) - len(completion.continuation)]
        form["logprobs"] = logprobs.of_completion(completion, prompt, False)
    return form


def shape(texts: Sequence[Sequence[Any]], wants_list: Sequence[bool]) -> Any:
    """The response ``data``: a string for one prompt and one sequence, else a list in request order.

    With several prompts each entry is that prompt's text, or its list of texts when it asked
    for several sequences.
    """
    per_prompt = [list(t) if many else t[0] for t, many in zip(texts, wants_list, strict=True)]
    return per_prompt[0] if len(per_prompt) == 1 else per_prompt


def data(requests: Sequence[GenerationRequest], completions: Sequence[Sequence[Completion]]) -> Any:
    """The envelope's ``data``: texts, or with ``details`` objects, nested by ``shape``."""
    values = [
        [details(c) if req.details else c.text for c in sequences]
        for req, sequences in zip(requests, completions, strict=True)
    ]
    return shape(values, [req.wants_list for req in requests])


def answer(requests: Sequence[GenerationRequest], completions: Sequence[Sequence[Completion]]) -> dict[str, Any]:
    """The success envelope for these requests, their notes joined into ``message``."""
    notes = [note for req in requests for note in req.notes]
    return succeeded(data(requests, completions), "; ".join(notes) if notes else None)


def stream_event(request: GenerationRequest, item: Piece | Finished) -> dict[str, Any] | None:
    """A ``:stream`` event's data: ``{"index", "text"}`` for a piece of text, the envelope once the
    request is finished (logprobs come in its details objects), None for what the stream leaves out."""
    if isinstance(item, Finished):
        return answer([request], [list(item.completions)])
    return {"index": item.index, "text": item.text} if item.text else None
