"""OpenAI's ``stream: true`` completions: the engine's stream items (core.Piece, core.Finished) as chunks.

Pure rendering, once, here; the route (edge/openai_routes.py) only wires the engine's stream to SSE.
Each chunk is a ``text_completion`` object with the choices it moves: a greedy request's one sequence
feeds its ``n`` copies. Logprobs ride on the chunk whose text their tokens made, with ``text_offset``
continuing from the chunk before; tokens with no text of their own left go in the prompt's final
chunk, with its finish reasons. With ``echo`` the prompt comes first (with ``logprobs``: when the
prefill has scored it), and ``stream_options.include_usage`` adds a last chunk with the usage.
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
        self.include_usage = req.stream_options is not None and req.stream_options.include_usage
        self.offsets: dict[tuple[int, int], int] = {}  # per (prompt, sequence): the next token's text offset
        self.streamed: dict[tuple[int, int], int] = {}  # per (prompt, sequence): tokens whose logprobs went out
        self.generated = 0

    def opening(self) -> list[dict[str, Any]]:
        """Before any item: the echoed prompts (without logprobs; with them, they wait for the prefill)."""
        if not self.req.echo or self.wanted:
            return []
        g = self.generations
        return [
            self._chunk(
                [oa.choice(p * self.width + j, g[p].prompt, None) for p in range(len(g)) for j in range(self.width)]
            )
        ]

    def render(self, prompt: int, item: Piece | Finished) -> list[dict[str, Any]]:
        """The chunks for prompt ``prompt``'s next stream item."""
        if isinstance(item, Finished):
            return [self._finals(prompt, item.completions)]
        chunks = []
        if item.prompt_logprobs is not None:
            scored = logprobs.render(item.prompt_logprobs)
            text = self.generations[prompt].prompt
            chunks.append(
                self._chunk([oa.choice(prompt * self.width + j, text, None, scored) for j in range(self.width)])
            )
        if item.text:
            scored = self._logprobs(prompt, item.index, item.logprobs or ())
            chunks.append(
                self._chunk([oa.choice(i, item.text, None, scored) for i in self._choices(prompt, item.index)])
            )
        return chunks

    def closing(self) -> list[dict[str, Any]]:
        """After the last item: the usage chunk, when asked for."""
        if not self.include_usage:
            return []
        prompt_tokens = sum(len(g.input_ids) for g in self.generations)
        return [{**self.ids.header(), "choices": [], "usage": oa.usage(prompt_tokens, self.generated)}]

    def _finals(self, prompt: int, completions: Sequence[Completion]) -> dict[str, Any]:
        """A prompt's last chunk: empty text, each choice's finish reason, the logprobs not sent yet."""
        choices = []
        for sequence, completion in enumerate(completions):
            left = (completion.logprobs or ())[self.streamed.get((prompt, sequence), 0) :]
            scored = self._logprobs(prompt, sequence, left)
            for index in self._choices(prompt, sequence):
                choices.append(oa.choice(index, "", oa.finish_reason(completion), scored))
                self.generated += completion.generated_tokens
        return self._chunk(choices)

    def _logprobs(self, prompt: int, sequence: int, entries: Sequence) -> dict[str, Any] | None:
        if not self.wanted:
            return None
        key = (prompt, sequence)
        offset = self.offsets.get(key, len(self.generations[prompt].prompt))
        self.offsets[key] = offset + sum(len(entry.text) for entry in entries)
        self.streamed[key] = self.streamed.get(key, 0) + len(entries)
        return logprobs.render(entries, offset)

    def _choices(self, prompt: int, sequence: int) -> list[int]:
        """The choice indexes one generated sequence feeds (several when greedy copies it ``n`` times)."""
        copies = oa.copies(self.req)
        return [prompt * self.width + sequence * copies + copy for copy in range(copies)]

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {"usage": None} if self.include_usage else {}
        return {**self.ids.header(), "choices": choices, **extra}
