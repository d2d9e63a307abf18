"""Opt-in fault injection (--fault_injection), to test a deployment's failure handling on any machine.

With it on, a prompt containing ``[[fault:oom]]`` makes the first decode step (or beam-search call)
it takes part in raise PyTorch's out-of-memory error, as a GPU that runs out of memory would: every
request in that step gets a 503 with Retry-After, cached memory is freed and the engine serves on.
``[[fault:error]]`` raises a plain error instead: only that request fails (500), the others in the
step carry on. Off by default, and then the markers are ordinary text.
"""

from __future__ import annotations

from typing import Iterable

import torch

from predictor.core import GenerationRequest

OOM = "[[fault:oom]]"
ERROR = "[[fault:error]]"


class Faults:
    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled

    def check(self, requests: Iterable[GenerationRequest]) -> None:
        """Raise the injected fault of any of these requests (called before each model call)."""
        if not self.enabled:
            return
        for request in requests:
            if OOM in request.prompt:
                raise torch.OutOfMemoryError("CUDA out of memory (injected by --fault_injection)")
            if ERROR in request.prompt:
                raise RuntimeError("generation failed (injected by --fault_injection)")


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


def free_cached_memory() -> None:
    """After an out-of-memory error: give the allocator's cached blocks back (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
