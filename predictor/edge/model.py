"""``GPTJModel``: the kserve.Model, thin glue between KServe's lifecycle and the layers below.

``load`` builds the stack (stack.py); ``preprocess`` hands the body to its protocol's adapter, chosen
once (protocols/registry.py: the seed API, v2 or gRPC), and the prompts to the tokenizer, then plans
(plan.py); ``predict`` runs the engine within the request's deadline; ``postprocess`` renders through
the same adapter (the envelope or a v2 response).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from kserve import Model
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferResponse

from predictor.core import Completion, Finished, GenerationRequest, Piece
from predictor.edge import grpc_status, stack, structured
from predictor.edge.kserve_shims import Prepared
from predictor.errors import NotReady
from predictor.protocols import plan, registry, v2
from predictor.protocols.sse import merge
from predictor.settings import Settings
from predictor.telemetry import records
from predictor.telemetry.metrics import Metrics

log = logging.getLogger("predictor")


class GPTJModel(Model):
    """KServe lifecycle: ``__init__`` stores settings, ``load()`` does the heavy work and sets ``ready``."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings.model_name)
        self.settings = settings
        self.metrics = metrics
        # Not `self.engine`: KServe reads a truthy `engine` attribute as "call start_engine()".
        self._stack: stack.Stack | None = None
        self._load_lock = threading.Lock()
        self.created = int(time.time())  # OpenAI's model object reports when it was created (loaded)

    def load(self) -> bool:
        """Load weights and start the engine; safe to call again (returns at once while loading)."""
        # KServe's data plane calls load() itself for a model that is not ready; never block it.
        if not self._load_lock.acquire(blocking=False):
            return self.ready
        try:
            if not self.ready:
                started = time.monotonic()
                built = stack.build(self.settings, self.metrics)
                self._stack, self.created = built, int(time.time())
                if self.metrics is not None:
                    self.metrics.model_load.set(time.monotonic() - started)
                self.ready = True
                log.info("model %r is ready (source %s)", self.name, built.loaded.source)
        finally:
            self._load_lock.release()
        return self.ready

    async def healthy(self) -> bool:
        """Readiness (KServe's model-ready routes ask this): loaded, and the engine has not failed."""
        return self.ready and self.engine_failure() is None

    def engine_failure(self) -> str | None:
        """Why the engine failed for good (liveness and readiness answer 503), or None."""
        return None if self._stack is None else self._stack.engine.failure

    def stop(self) -> None:
        """Called by KServe when the server stops: finish queued work, end the engine thread."""
        self.ready = False
        if self._stack is not None:
            self._stack.engine.stop(timeout=5)

    async def __call__(
        self, body: Any, headers: dict[str, str] | None = None, verb: InferenceVerb = InferenceVerb.PREDICT
    ) -> tuple[Any, dict[str, str]]:
        """KServe's entry for v1/v2 inference; over gRPC, our errors become gRPC statuses (grpc_status.py)."""
        try:
            return await super().__call__(body, headers, verb)
        except Exception as exc:
            if registry.for_payload(body) is registry.GRPC:
                raise grpc_status.status_error(exc) from None
            raise

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Prepared:
        """Body (bytes, dict, list or a v2 InferRequest) -> validated GenerationRequests, or a 400."""
        adapter = registry.for_payload(payload)
        content_type = (headers or {}).get("content-type")
        parsed = adapter.parse(payload, content_type, self.settings.limits.max_prompts)
        plan.check_vocabulary(parsed, self.vocabulary())
        token_ids = await self.tokenize([req.prompt for req in parsed])
        infer = None if adapter is registry.SEED else payload  # v2 and gRPC: the response echoes its id
        return Prepared(plan.requests(parsed, token_ids, self.settings.limits), infer, adapter)

    async def tokenize(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's token ids (off the event loop: long prompts take milliseconds)."""
        return await asyncio.to_thread(self._running().token_ids, prompts)

    async def encode(self, prompts: Sequence[str | list[int]]) -> tuple[list[str], list[list[int]]]:
        """Each prompt's text and token ids, given either (OpenAI's token-id prompts)."""
        return await asyncio.to_thread(self._running().encode, prompts)

    async def token_strs(self, token_ids: Sequence[int]) -> list[str]:
        """Each id's token as the vocabulary spells it (the tokenize route's ``token_strs``)."""
        return await asyncio.to_thread(self._running().token_strs, token_ids)

    def vocabulary(self) -> int:
        """How many token ids the tokenizer knows."""
        return self._running().vocabulary

    async def predict(self, payload: Prepared, headers: dict[str, str] | None = None) -> Generated:
        """Generate for every prompt on the engine thread, within the request's deadline."""
        return Generated(payload, await self.generate(payload))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Completions for every request, in order (the request's record gets counts and texts)."""
        requests = await self._compiled(requests)
        engine, record = self._running().engine, self._record(requests)
        completions = await engine.run(requests, record, self._time_left(record))
        records.outputs(record, [[c.text for c in sequences] for sequences in completions], self._log_prompts)
        return completions

    async def stream(self, requests: Sequence[GenerationRequest]) -> AsyncIterator[tuple[int, Piece | Finished]]:
        """(which request, its next Piece or its Finished) as the requests generate side by side, within the deadline."""
        requests = await self._compiled(requests)
        engine, record = self._running().engine, self._record(requests)
        timeout, outputs = self._time_left(record), {}
        async for index, event in merge([engine.stream(request, record, timeout) for request in requests]):
            if isinstance(event, Finished):
                outputs[index] = [c.text for c in event.completions]
                if len(outputs) == len(requests):
                    records.outputs(record, [outputs[i] for i in range(len(requests))], self._log_prompts)
            yield index, event

    async def postprocess(
        self, result: Generated, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        """Results -> the success envelope (or a v2 response), by the adapter preprocess chose."""
        return result.requests.adapter.render(self.name, result.requests, result.completions)

    def get_input_types(self) -> list[dict]:
        return v2.INPUTS

    def get_output_types(self) -> list[dict]:
        return v2.OUTPUTS

    async def _compiled(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """Structured output's grammars compiled off the engine thread, within the timeout (or a 400)."""
        timeout = self.settings.operations.structured_compile_timeout_s
        return await structured.compiled(requests, self._running().grammars, timeout)

    def _running(self) -> stack.Stack:
        if self._stack is None:
            raise NotReady(f"model {self.name!r} is not loaded yet")
        return self._stack

    def _record(self, requests: Sequence[GenerationRequest]) -> records.RequestRecord | None:
        return records.begin([req.prompt for req in requests], self._log_prompts)

    @property
    def _log_prompts(self) -> bool:
        return self.settings.operations.log_prompts

    def _time_left(self, record: records.RequestRecord | None) -> float | None:
        """Seconds until the request's deadline (--request_timeout_seconds from its arrival)."""
        limit = self.settings.operations.request_timeout_s
        if limit is None:
            return None
        started = record.started if record is not None else time.monotonic()
        return limit - (time.monotonic() - started)


@dataclass(frozen=True)
class Generated:
    requests: Prepared
    completions: list[list[Completion]]
