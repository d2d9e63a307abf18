"""Which device the weights go to (``--device auto|cuda|cpu``), and the checks that make ``cuda`` a promise.

A GPU pod that cannot use its GPU used to go Ready on the CPU: without the nvidia runtime class (k3s,
RKE2, a GPU Operator that is not containerd's default runtime) the container sees no driver; with a
driver older than the image's CUDA 13.0 torch reports CUDA unusable; on a small MIG slice accelerate's
``device_map: auto`` quietly offloads layers to the CPU. ``--device cuda`` (what the chart sets whenever
it requests ``nvidia.com/gpu``) turns each of these into one line at start-up and exit code 1.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any

#: Left free beside the weights for CUDA's workspace and the first activations.
HEADROOM_BYTES = 1 << 30
_FIX = (
    "the pod needs the NVIDIA container runtime (runtimeClassName: nvidia where it is not containerd's default), "
    "a driver for CUDA 13.0 (>= 580) and an nvidia.com/gpu; --device auto would load on the CPU instead"
)
_SPREAD = ("auto", "balanced", "balanced_low_0", "sequential")
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class BadDevice(Exception):
    """``--device cuda`` cannot be honoured; the message is the one line an operator reads."""


def use_cuda(device: str, torch: Any) -> bool:
    """Whether to load on CUDA; raises ``BadDevice`` when ``cuda`` is asked for and CUDA is not usable."""
    if device == "cpu":
        return False
    usable, why = cuda_status(torch)
    if device == "cuda" and not usable:
        raise BadDevice(f"--device cuda: CUDA is not usable ({why}); {_FIX}")
    return usable


def cuda_status(torch: Any) -> tuple[bool, str]:
    """(usable, why not). torch says why only in a warning from ``is_available`` (e.g. "The NVIDIA driver
    on your system is too old"), so that warning is caught and becomes the reason."""
    if getattr(torch.version, "cuda", None) is None:
        return False, "this torch build has no CUDA support"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    if usable:
        return True, ""
    for warning in caught:
        text = " ".join(str(warning.message).split())
        if text:
            return False, text.removeprefix("CUDA initialization: ")
    return False, "no GPU is visible to the process"


def check_fits(source: str, dtype: Any, device_map: str, torch: Any) -> None:
    """Before loading with ``--device cuda``: the weights (at the dtype they will have) and some headroom
    must fit in the free memory of the GPUs ``device_map`` may use, or accelerate would offload to the CPU."""
    params = parameter_count(source)
    if params is None:  # a hub id: its size is known only once downloaded; check_placement still guards
        return
    needed = params * torch.tensor([], dtype=dtype).element_size()
    gpus = list(range(torch.cuda.device_count())) if device_map in _SPREAD else [_index(device_map)]
    free = sum(torch.cuda.mem_get_info(i)[0] for i in gpus)
    if needed + HEADROOM_BYTES > free:
        names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in gpus}))
        raise BadDevice(
            f"--device cuda: the weights need {_gb(needed)} ({str(dtype).removeprefix('torch.')}) plus "
            f"{_gb(HEADROOM_BYTES)} of headroom, but {len(gpus)} GPU(s) ({names}) have {_gb(free)} free; "
            "nothing is offloaded to the CPU with --device cuda. Give the pod a larger GPU (GPU Feature "
            "Discovery's nvidia.com/gpu.memory label) or more GPUs"
        )


def check_placement(model: Any) -> None:
    """After loading with ``--device cuda``: nothing was placed on the CPU or disk."""
    device_map = getattr(model, "hf_device_map", None) or {"": str(model.device)}
    offloaded = sorted(name or "the whole model" for name, where in device_map.items() if not _on_gpu(where))
    if offloaded:
        raise BadDevice(
            f"--device cuda: the model does not fit the GPU: {len(offloaded)} module(s) were placed off the GPU "
            f"({', '.join(offloaded[:3])}{', ...' if len(offloaded) > 3 else ''}); give the pod a larger GPU"
        )


def parameter_count(source: str) -> int | None:
    """Parameters in a local checkpoint's safetensors files, read from their headers (no weights read)."""
    directory = Path(source)
    files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for size in entry["shape"]:
                    count *= size
                total += count if entry["dtype"] in _ITEMSIZE else 0
    return total


def _on_gpu(where: Any) -> bool:
    text = str(where)
    return text.isdigit() or text.startswith("cuda")


def _index(device_map: str) -> int:
    tail = device_map.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"
