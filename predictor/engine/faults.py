"""Opt-in fault injection (--fault_injection), to test a deployment's failure handling on any machine;
and which errors the engine can recover from.

With it on, a prompt containing one of these markers fails the first decode step (or beam-search
call) it takes part in:
- ``[[fault:oom]]``: PyTorch's out-of-memory error, as a GPU that runs out of memory would raise:
  every request in that step gets a 503 with Retry-After, cached memory is freed, the engine serves on.
- ``[[fault:error]]``: a plain error: only that request fails (500), the others carry on.
- ``[[fault:fatal]]``: the engine thread dies (as a bug in its loop would make it): every request
  gets 503 at once, liveness turns 503 and Kubernetes restarts the pod.
- ``[[fault:stall]]``: the step hangs (as a stuck kernel or driver would); after
  --engine_stall_seconds the same as fatal.
- ``[[fault:device]]``: a sticky CUDA error (an illegal memory access): the same as fatal.
- ``[[fault:prefill]]``: a plain error when the request joins the batch (its prefill): the
  requests that joined with it are joined again one by one, and only it fails (500).
Off by default, and then the markers are ordinary text.
"""

from __future__ import annotations

import threading
from typing import Iterable

import torch

from predictor.core import GenerationRequest

OOM = "[[fault:oom]]"
ERROR = "[[fault:error]]"
FATAL = "[[fault:fatal]]"
STALL = "[[fault:stall]]"
DEVICE = "[[fault:device]]"
PREFILL = "[[fault:prefill]]"


class EngineKilled(BaseException):
    """An injected fault that no ``except Exception`` in the worker catches: its thread ends."""


class Faults:
    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self._unstall = threading.Event()  # set by release(): a stalled step returns (at shutdown)

    def check(self, requests: Iterable[GenerationRequest]) -> None:
        """Raise the injected fault of any of these requests (called before each model call)."""
        if not self.enabled:
            return
        for request in requests:
            if OOM in request.prompt:
                raise torch.OutOfMemoryError("CUDA out of memory (injected by --fault_injection)")
            if ERROR in request.prompt:
                raise RuntimeError("generation failed (injected by --fault_injection)")
            if FATAL in request.prompt:
                raise EngineKilled("the engine thread was killed (injected by --fault_injection)")
            if DEVICE in request.prompt:
                raise torch.AcceleratorError(
                    "CUDA error: an illegal memory access was encountered (injected by --fault_injection)"
                )
            if STALL in request.prompt:
                self._unstall.wait()  # the watchdog fails the engine meanwhile; its loop ends after this step

    def release(self) -> None:
        """Let a stalled step end (the engine is stopping)."""
        self._unstall.set()

    def check_prefill(self, requests: Iterable[GenerationRequest]) -> None:
        """Raise the injected prefill fault of any of these requests (called before they join the batch)."""
        if self.enabled and any(PREFILL in request.prompt for request in requests):
            raise RuntimeError("prefill failed (injected by --fault_injection)")


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


#: cudaGetErrorString's texts for the "sticky" errors, after which the CUDA context is corrupt: "any
#: further CUDA work will return the same error. To continue using CUDA, the process must be terminated
#: and relaunched" (cudaErrorIllegalAddress, cudaErrorAssert, cudaErrorLaunchFailure, ... in
#: https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html).
_STICKY = (
    "an illegal memory access",
    "device-side assert triggered",
    "unspecified launch failure",
    "an illegal instruction",
    "misaligned address",
    "invalid program counter",
    "hardware stack error",
    "uncorrectable ECC error",
    "the launch timed out",
    "operation not supported on global/shared address space",
)


def is_unrecoverable(exc: BaseException) -> bool:
    """A device error that every later step would hit too, so only a new process recovers.

    PyTorch raises CUDA errors as torch.AcceleratorError with the text "CUDA error: <cudaGetErrorString>"
    (older releases a RuntimeError; c10/cuda/CUDAException.cpp). A sticky one is unrecoverable; any
    other CUDA error (a bad launch configuration for one request's shapes, say) is, if the device still
    runs a tiny operation afterwards. Out of memory is raised apart and stays recoverable.
    """
    seen: BaseException | None = exc
    for _ in range(8):  # the error may come wrapped (raise ... from)
        if seen is None or isinstance(seen, torch.OutOfMemoryError):
            return False
        text = str(seen)
        if isinstance(seen, torch.AcceleratorError) or "CUDA error:" in text:
            if "out of memory" in text:
                return False
            return any(sticky in text for sticky in _STICKY) or not device_works()
        seen = seen.__cause__ or seen.__context__
    return False


def device_works() -> bool:
    """Whether a tiny CUDA operation still succeeds (True without CUDA: nothing to lose)."""
    if not torch.cuda.is_available():
        return True
    try:
        torch.ones(1, device="cuda").add_(1)
        torch.cuda.synchronize()
    except Exception:  # any failure here means the device is gone
        return False
    return True


def free_cached_memory() -> None:
    """After an out-of-memory error: give the allocator's cached blocks back (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
