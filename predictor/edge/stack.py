"""Building the serving stack from settings: weights, the decode path, the runner, the engine thread.

The one factory (``GPTJModel.load`` calls it, off the event loop): it knows every layer below the
edge, so the model does not have to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from predictor.engine.engine import Engine
from predictor.engine.faults import Faults
from predictor.generation import paths
from predictor.generation.beams import Runner
from predictor.loading import loader
from predictor.settings import Settings
from predictor.telemetry.metrics import Metrics


@dataclass(frozen=True)
class Stack:
    """A loaded model and the running engine that owns it."""

    loaded: loader.Loaded
    engine: Engine

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's token ids (blocking: call it off the event loop)."""
        # The Rust tokenizer directly: its encode is safe to call from several threads at once.
        backend = self.loaded.tokenizer.backend_tokenizer
        return [backend.encode(prompt).ids for prompt in prompts]


def build(settings: Settings, metrics: Metrics | None) -> Stack:
    """Load the weights, choose the decode path and start the engine thread on them."""
    loaded = loader.load(settings)
    decoder, policy = paths.decoder_for(loaded, settings)
    operations = settings.operations
    engine = Engine(Runner(loaded, decoder), policy, metrics, max_queued=operations.max_queued_requests,
                    faults=Faults(operations.fault_injection), stall_s=operations.engine_stall_s)
    engine.start()
    return Stack(loaded, engine)
