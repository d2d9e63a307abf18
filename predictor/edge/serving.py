"""What our routes need from the model (``Serving``), and the 404/503 a route answers before using it.

The routes (seed_routes.py, openai_routes.py) take the model through this interface rather than the
KServe class itself: they see only the hops of a request (prepare, tokenize, generate, stream), and
tests can hand them a fake.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol, Sequence

from predictor.core import Completion, Finished, GenerationRequest, Piece
from predictor.errors import NotFound, NotReady
from predictor.settings import Settings


class Serving(Protocol):
    """The served model as the routes see it (edge/model.py's GPTJModel)."""

    name: str
    ready: bool
    created: int  # when the model was loaded (OpenAI's model object reports it)
    settings: Settings

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Sequence[GenerationRequest]:
        """A seed API body -> validated requests, or a 400."""

    async def tokenize(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's token ids (off the event loop)."""

    async def encode(self, prompts: Sequence[str | list[int]]) -> tuple[list[str], list[list[int]]]:
        """Each prompt's text and token ids, given either (off the event loop)."""

    async def token_strs(self, token_ids: Sequence[int]) -> list[str]:
        """Each id's token as the tokenizer's vocabulary spells it (vLLM's ``token_strs``)."""

    def vocabulary(self) -> int:
        """How many token ids the tokenizer knows."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Completions for every request, in order."""

    def stream(self, requests: Sequence[GenerationRequest]) -> AsyncIterator[tuple[int, Piece | Finished]]:
        """(which request, its next core.Piece or its core.Finished) as the requests generate side by side."""

    def engine_failure(self) -> str | None:
        """Why the engine cannot serve any more, or None while it can."""


def serving(model: Serving, name: str) -> Serving:
    """``model`` when it is the one named and ready, else the 404 or 503 a client should see."""
    if name != model.name:
        raise NotFound(f"model {name!r} is not served here (this server serves {model.name!r})")
    if not model.ready:
        raise NotReady(f"model {model.name!r} is not loaded yet")
    return model
