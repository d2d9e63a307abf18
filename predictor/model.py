"""``GPTJModel``: the kserve.Model that glues the edge (api, sampling) to the engine."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from kserve import Model
from kserve.protocol.infer_type import InferRequest

from . import api, loading, observe
from .engine import Engine
from .errors import BadRequest, NotReady, succeeded
from .faults import Faults
from .metrics import Metrics
from .runner import Runner
from .sampling import GenerationRequest, plan
from .settings import Settings

log = logging.getLogger("predictor")


class GPTJModel(Model):
    """KServe lifecycle: ``__init__`` stores settings, ``load()`` does the heavy work and sets ``ready``."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings.model_name)
        self.settings = settings
        self.metrics = metrics
        self.loaded: loading.Loaded | None = None
        # Not `self.engine`: KServe reads a truthy `engine` attribute as "call start_engine()".
        self._engine: Engine | None = None
        self._load_lock = threading.Lock()

    def load(self) -> bool:
        """Load weights and start the engine; safe to call again (returns at once while loading)."""
        # KServe's data plane calls load() itself for a model that is not ready; never block it.
        if not self._load_lock.acquire(blocking=False):
            return self.ready
        try:
            if not self.ready:
                started = time.monotonic()
                loaded = loading.load(self.settings)
                operations = self.settings.operations
                engine = Engine(Runner(loaded), self.settings.batch, self.metrics,
                                max_queued=operations.max_queued_requests, faults=Faults(operations.fault_injection))
                engine.start()
                self.loaded, self._engine = loaded, engine
                if self.metrics is not None:
                    self.metrics.model_load.set(time.monotonic() - started)
                self.ready = True
                log.info("model %r is ready (source %s)", self.name, loaded.source)
        finally:
            self._load_lock.release()
        return self.ready

    def stop(self) -> None:
        """Called by KServe when the server stops: finish queued work, end the engine thread."""
        self.ready = False
        if self._engine is not None:
            self._engine.stop(timeout=5)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> list[GenerationRequest]:
        """Body (bytes, dict or list) -> validated GenerationRequests, or a 400 naming the problem."""
        if isinstance(payload, InferRequest):
            raise BadRequest(f"the v2 inference protocol is not served yet; POST the contract's JSON to "
                             f"/v1/models/{self.name}:predict")
        if isinstance(payload, (bytes, bytearray)):
            payload = api.decode_body(bytes(payload), (headers or {}).get("content-type"))
        requests = api.parse(payload, self.settings.limits.max_prompts)
        # Tokenizing a long prompt takes milliseconds: keep it off the event loop.
        return await asyncio.to_thread(self._prepare, requests)

    def _prepare(self, requests: list[api.PromptRequest]) -> list[GenerationRequest]:
        if self.loaded is None:
            raise NotReady(f"model {self.name!r} is not loaded yet")
        # The Rust tokenizer directly: its encode is safe to call from several threads at once.
        backend = self.loaded.tokenizer.backend_tokenizer
        prepared = []
        for index, req in enumerate(requests):
            where = f"[{index}]." if len(requests) > 1 else ""
            ids = backend.encode(req.prompt).ids
            if not ids:
                raise BadRequest(f"{where}prompt: must not be empty")
            try:
                sampling, notes = plan(req, len(ids), self.settings.limits)
            except BadRequest as exc:
                raise BadRequest(where + exc.message) from None
            prepared.append(GenerationRequest(
                prompt=req.prompt, input_ids=tuple(ids), sampling=sampling,
                notes=tuple(f"{where}{note}" for note in notes),
                wants_list=sampling.num_return_sequences > 1,
            ))
        return prepared

    async def predict(self, payload: list[GenerationRequest],
                      headers: dict[str, str] | None = None) -> list[tuple[GenerationRequest, list[str]]]:
        """Generate for every prompt on the engine thread, within the request's deadline."""
        if self._engine is None:
            raise NotReady(f"model {self.name!r} is not loaded yet")
        record, operations = observe.current(), self.settings.operations
        started = record.started if record is not None else time.monotonic()
        timeout = None
        if operations.request_timeout_s is not None:
            timeout = operations.request_timeout_s - (time.monotonic() - started)
        if record is not None:
            record.prompts = len(payload)
            if operations.log_prompts:
                record.texts["prompts"] = [req.prompt for req in payload]
        texts = await self._engine.run(payload, record, timeout)
        if record is not None and operations.log_prompts:
            record.texts["outputs"] = texts
        return list(zip(payload, texts))

    async def postprocess(self, result: list[tuple[GenerationRequest, list[str]]],
                          headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Results -> the success envelope; capped or ignored parameters are listed in ``message``."""
        data = api.shape([texts for _, texts in result], [req.wants_list for req, _ in result])
        notes = [note for req, _ in result for note in req.notes]
        return succeeded(data, "; ".join(notes) if notes else None)
