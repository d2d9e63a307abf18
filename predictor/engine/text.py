"""Text out of token ids, off the engine thread: the cut at stop strings, streamed pieces that never
need taking back, tokens' logprobs as text, and a sequence's Completion.

Pure functions over a ``decode(tokens) -> str`` function (and ``texts(ids)``, each id alone); the
tokenizer stays in the Runner, and only the event loop's side (outputs.py) calls these.
"""

from __future__ import annotations

from typing import Callable, Sequence

from predictor.core import Completion, GenerationRequest, Scored, TokenLogprob


def cut_at_stop(text: str, stops: Sequence[str], include: bool = False) -> tuple[str, bool]:
    """The text before the earliest stop string (``include``: up to its end, vLLM's
    include_stop_str_in_output), and whether one was found."""
    found = [(index, len(stop)) for index, stop in ((text.find(stop), stop) for stop in stops) if index >= 0]
    if not found:
        return text, False
    index, length = min(found)
    return text[: index + length if include else index], True


def token_logprobs(
    texts: Callable[[Sequence[int]], list[str]], scored: Sequence[tuple], limit: int | None = None
) -> tuple[TokenLogprob, ...]:
    """Scored tokens (logits.Scored) as text; with ``limit``, only those that begin within the first
    ``limit`` characters (a stop string cut the text there). ``texts`` decodes each id alone, in one call."""
    ids = list(dict.fromkeys([token for token, _, _ in scored] + [alt for _, _, top in scored for alt, _ in top]))
    names = dict(zip(ids, texts(ids), strict=True)) if ids else {}
    result, offset = [], 0
    for token, logprob, top in scored:
        if limit is not None and offset >= limit:
            break
        result.append(TokenLogprob(names[token], logprob, tuple((names[alt], value) for alt, value in top)))
        offset += len(names[token])
    return tuple(result)


def prompt_token_logprobs(
    texts: Callable[[Sequence[int]], list[str]], prompt: Sequence[int], scored: Sequence[tuple]
) -> tuple[TokenLogprob, ...]:
    """The prompt's tokens with their logprobs (``scored``: the tokens after the first, which nothing
    predicts: its logprob is None)."""
    return token_logprobs(texts, [(prompt[0], None, ())] + list(scored))


class TextStream:
    """One sequence's text, piece by piece, as its tokens grow.

    A piece never has to be taken back: the end of the text is held back while it is an incomplete
    UTF-8 character (decoded as U+FFFD) or could still be the start of a stop string.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str], include: bool = False) -> None:
        self.decode, self.stops, self.sent, self.include = decode, tuple(stops), 0, include
        self.settled, self.settled_text = 0, ""  # tokens[:settled] decode to settled_text, whole characters
        self.stopped = False  # the text holds a stop string: the sequence is over

    def piece(self, tokens: Sequence[int], final: bool = False) -> str:
        text, stopped = cut_at_stop(self._text(tokens), self.stops, self.include)
        self.stopped = self.stopped or stopped
        if not final and not stopped:
            text = text.rstrip("\ufffd")
            text = text[: len(text) - self._open_stop(text)]
        piece, self.sent = text[self.sent :], max(self.sent, len(text))
        return piece

    def _text(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``, decoding only those after the last whole character.

        GPT-J's byte-level BPE decodes by concatenating bytes, so the text of a prefix that ends on a
        whole character plus the text of the rest is the text of all: each step decodes a few tokens,
        not the whole sequence again.
        """
        tail = self.decode(tokens[self.settled :])
        text = self.settled_text + tail
        if not tail.endswith("\ufffd"):
            self.settled, self.settled_text = len(tokens), text
        return text

    def _open_stop(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        longest = max((len(stop) - 1 for stop in self.stops), default=0)
        for size in range(min(longest, len(text)), 0, -1):
            if any(stop.startswith(text[-size:]) for stop in self.stops):
                return size
        return 0


def completion(
    decode: Callable[[Sequence[int]], str],
    texts: Callable[[Sequence[int]], list[str]],
    request: GenerationRequest,
    tokens: Sequence[int],
    reason: str,
    scored: Sequence[Scored] | None = None,
    prompt_scored: Sequence[Scored] | None = None,
) -> Completion:
    """The prompt exactly as sent, then the continuation, cut before the first stop string.

    Decoding only the new tokens keeps the prompt byte-for-byte (even text that tokenizes to a
    special token, such as a literal ``<|endoftext|>``). ``scored``/``prompt_scored``: the tokens'
    logprobs (core.Scored), reported only for tokens whose text is kept.
    """
    s = request.sampling
    continuation, stopped = cut_at_stop(decode(tokens), s.stop, s.include_stop_str_in_output)
    logprobs = prompt_logprobs = None
    if scored is not None:
        # Cut where the text was cut: a token's own text can be longer than what it adds to the
        # continuation (EOS kept with ignore_eos adds nothing), so without a cut every token stays.
        logprobs = token_logprobs(texts, scored, len(continuation) if stopped else None)
    if prompt_scored is not None:
        prompt_logprobs = prompt_token_logprobs(texts, request.input_ids, prompt_scored)
    return Completion(
        request.prompt + continuation,
        continuation,
        "stop" if stopped else reason,
        len(request.input_ids),
        len(tokens),
        logprobs,
        prompt_logprobs,
    )
