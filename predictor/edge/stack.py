"""Building the serving stack from settings: weights, the decode path, the runner, the engine thread.

The one factory (``GPTJModel.load`` calls it, off the event loop): it knows every layer below the
edge, so the model does not have to.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

from predictor.engine.engine import Engine
from predictor.engine.faults import Faults
from predictor.generation import grammar, paths
from predictor.generation.runner import Runner
from predictor.loading import loader
from predictor.settings import Settings
from predictor.telemetry.metrics import Metrics

log = logging.getLogger("predictor")


@dataclass(frozen=True)
class Stack:
    """A loaded model and the running engine that owns it."""

    loaded: loader.Loaded
    engine: Engine
    grammars: grammar.Compiler | None = None  # structured output (edge/structured.py compiles with it)

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's token ids (blocking: call it off the event loop)."""
        # The Rust tokenizer directly: its encode is safe to call from several threads at once.
        backend = self.loaded.tokenizer.backend_tokenizer
        return [backend.encode(prompt).ids for prompt in prompts]

    def token_strs(self, token_ids: Sequence[int]) -> list[str]:
        """Each id's token as the vocabulary spells it (byte-level BPE: ``Ġ`` for a leading space)."""
        return self.loaded.tokenizer.convert_ids_to_tokens(list(token_ids))

    @property
    def vocabulary(self) -> int:
        """How many token ids the tokenizer knows (ids run from 0 to this minus 1)."""
        return len(self.loaded.tokenizer)

    def encode(self, prompts: Sequence[str | list[int]]) -> tuple[list[str], list[list[int]]]:
        """Each prompt's text and token ids, from either (OpenAI's prompts may be token ids, checked
        against ``vocabulary`` by the protocol first); blocking: call it off the event loop."""
        texts = [
            p if isinstance(p, str) else self.loaded.tokenizer.decode(p, clean_up_tokenization_spaces=False)
            for p in prompts
        ]
        given = iter(self.token_ids([p for p in prompts if isinstance(p, str)]))
        return texts, [next(given) if isinstance(p, str) else list(p) for p in prompts]


def build(settings: Settings, metrics: Metrics | None) -> Stack:
    """Load the weights, choose the decode path and start the engine thread on them."""
    loaded = loader.load(settings)
    choice = paths.choose(loaded, settings)
    log.info("the engine runs: %s", ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(choice.info).items()))
    if metrics is not None:
        metrics.decode_path(**dataclasses.asdict(choice.info))
    operations = settings.operations
    engine = Engine(
        Runner(loaded, choice.decoder),
        choice.policy,
        metrics,
        max_queued=operations.max_queued_requests,
        faults=Faults(operations.fault_injection),
        stall_s=operations.engine_stall_s,
    )
    engine.start()
    return Stack(loaded, engine, _grammars(loaded))


def _grammars(loaded: loader.Loaded) -> grammar.Compiler | None:
    """Structured output's compiler, or None (a 400 for constrained requests) where the tokenizer has
    no fast (Rust) form for llguidance to read: the server still serves everything else."""
    try:
        return grammar.Compiler(loaded.tokenizer, loaded.model.config.vocab_size, loaded.eos_token_id)
    except Exception as exc:  # llguidance's own errors for tokenizers it cannot read
        log.warning("structured output is off: llguidance cannot use this tokenizer (%s)", exc)
        return None
