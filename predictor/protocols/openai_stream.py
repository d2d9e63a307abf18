"""OpenAI's ``stream: true`` completions: the engine's stream items (core.Piece, core.Finished) as chunks.

Pure rendering, once, here; the route (edge/openai_routes.py) only wires the engine's stream to SSE.
Each chunk is a ``text_completion`` object with exactly one choice, as OpenAI and vLLM send them
(clients read ``chunk.choices[0]``): with ``n`` > 1 the choices' chunks interleave, and each index
gets its own last chunk with its ``finish_reason``; a greedy request's one sequence feeds its ``n``
copies, a chunk each. Logprobs ride on the chunk whose text their tokens made, with ``text_offset``
continuing from the chunk before; tokens with no text of their own left go in the choice's last
chunk. With ``echo`` the prompt comes first (with ``logprobs``: when the prefill has scored it).
``stream_options.include_usage`` adds a last chunk with the usage (``choices`` empty); with
``continuous_usage_stats`` too, every chunk also carries its choice's usage so far (its prompt's
tokens, the tokens the choice generated until then), vLLM's meaning of that option.
"""

from __future__ import annotations

from typing import Any, Sequence

from predictor.core import Completion, Finished, GenerationRequest, Piece
from predictor.protocols import logprobs
from predictor.protocols import openai as oa


class Stream:
    """The chunks of one streamed request, item by item."""

    def __init__(self, ids: oa.Ids, req: oa.CompletionRequest, generations: Sequence[GenerationRequest]) -> None:
        self.ids, self.req, self.generations = ids, req, generations
        self.width, self.wanted = req.n or 1, req.logprobs is not None
        options = req.stream_options
        self.include_usage = options is not None and options.include_usage
        # vLLM's rule: continuous usage only together with include_usage.
        self.continuous = self.include_usage and bool(options and options.continuous_usage_stats)
        self.offsets: dict[tuple[int, int], int] = {}  # per (prompt, sequence): the next token's text offset
        self.streamed: dict[tuple[int, int], int] = {}  # per (prompt, sequence): tokens whose logprobs went out
        self.generated = 0

    def opening(self) -> list[dict[str, Any]]:
        """Before any item: the echoed prompts (without logprobs; with them, they wait for the prefill)."""
        if not self.req.echo or self.wanted:
            return []
        return [chunk for prompt in range(len(self.generations)) for chunk in self._echo(prompt, None)]

    def render(self, prompt: int, item: Piece | Finished) -> list[dict[str, Any]]:
        """The chunks for prompt ``prompt``'s next stream item."""
        if isinstance(item, Finished):
            return self._finals(prompt, item.completions)
        chunks = []
        if item.prompt_logprobs is not None:
            chunks += self._echo(prompt, logprobs.render(item.prompt_logprobs, sampled=True))
        if item.text:
            scored = self._logprobs(prompt, item.index, item.logprobs or ())
            chunks += [
                self._chunk(prompt, oa.choice(i, item.text, None, scored), item.generated)
                for i in self._choices(prompt, item.index)
            ]
        return chunks

    def closing(self) -> list[dict[str, Any]]:
        """After the last item: the usage chunk, when asked for."""
        if not self.include_usage:
            return []
        prompt_tokens = sum(len(g.input_ids) for g in self.generations)
        return [{**self.ids.header(), "choices": [], "usage": oa.usage(prompt_tokens, self.generated)}]

    def _echo(self, prompt: int, scored: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The prompt's text (and its logprobs) on each of its choices."""
        text = self.generations[prompt].prompt
        return [self._chunk(prompt, oa.choice(prompt * self.width + j, text, None, scored)) for j in range(self.width)]

    def _finals(self, prompt: int, completions: Sequence[Completion]) -> list[dict[str, Any]]:
        """A prompt's last chunks, one per choice: empty text, the finish reason, the logprobs not sent yet."""
        chunks = []
        for sequence, completion in enumerate(completions):
            left = (completion.logprobs or ())[self.streamed.get((prompt, sequence), 0) :]
            scored = self._logprobs(prompt, sequence, left)
            for index in self._choices(prompt, sequence):
                choice = oa.choice(index, "", oa.finish_reason(completion), scored)
                chunks.append(self._chunk(prompt, choice, completion.generated_tokens))
                self.generated += completion.generated_tokens
        return chunks

    def _logprobs(self, prompt: int, sequence: int, entries: Sequence) -> dict[str, Any] | None:
        if not self.wanted:
            return None
        key = (prompt, sequence)
        offset = self.offsets.get(key, len(self.generations[prompt].prompt))
        self.offsets[key] = offset + sum(len(entry.text) for entry in entries)
        self.streamed[key] = self.streamed.get(key, 0) + len(entries)
        return logprobs.render(entries, offset, sampled=True)

    def _choices(self, prompt: int, sequence: int) -> list[int]:
        """The choice indexes one generated sequence feeds (several when greedy copies it ``n`` times)."""
        copies = oa.copies(self.req)
        return [prompt * self.width + sequence * copies + copy for copy in range(copies)]

    def _chunk(self, prompt: int, choice: dict[str, Any], generated: int = 0) -> dict[str, Any]:
        """One choice's chunk; ``generated``: the tokens that choice has generated so far."""
        if self.continuous:
            extra = {"usage": oa.usage(len(self.generations[prompt].input_ids), generated)}
        else:
            extra = {"usage": None} if self.include_usage else {}
        return {**self.ids.header(), "choices": [choice], **extra}
