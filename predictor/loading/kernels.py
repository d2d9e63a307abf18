"""CPU kernels: every ``nn.Linear`` as a oneDNN matmul over weights reordered once, at load.

PyTorch's CPU ``nn.Linear`` calls MKL's sgemm on the weight as stored, every call; for a decode step
(one row per sequence) that is a matrix-vector product re-reading the weight in its plain layout. oneDNN
can reorder the weight once into its own blocked layout and reuse it (the op Inductor's freezing pass
uses: torch/_inductor/fx_passes/mkldnn_fusion.py, ``mkldnn._linear_pointwise`` over
``mkldnn._reorder_linear_weight``). On bf16 weights this runs oneDNN's bf16 kernels, which we only use
where the CPU has them natively (avx512_bf16 or AMX): elsewhere bf16 is emulated and slower than fp32.
Outputs equal the plain path's within float rounding (the order of the sums differs).

Only weights of at least ``MIN_PACKED`` entries are packed: oneDNN's call costs about 15 µs more than
MKL's (measured in process on an AMD EPYC, one thread), which a 256 x 256 matvec (20 µs) does not win
back; GPT-J-6B's linears (4096 x 4096 and up) and any 50,400-row head are far above it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("predictor")

CHOICES = ("auto", "packed", "plain")
MIN_PACKED = 1 << 20  # weight entries (in x out) below which the plain kernel is as fast or faster


def _packed_linear_class():
    import torch

    class PackedLinear(torch.nn.Module):
        """``nn.Linear`` with its weight in oneDNN's layout (the plain weight is let go: no second copy)."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            with torch.no_grad():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
            self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN-packed"

    return PackedLinear


def supported(dtype: Any) -> str | None:
    """Why the packed kernels cannot run for weights of ``dtype`` here, or None when they can."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN"
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "the CPU has no native bf16 (avx512_bf16 or AMX)"
    if dtype not in (torch.float32, torch.bfloat16):
        return f"no oneDNN-packed linear for {str(dtype).removeprefix('torch.')}"
    return None


def choose(model: Any, setting: str) -> str:
    """Apply the CPU kernel ``setting`` to a model on the CPU (auto: pack the linears of at least
    ``MIN_PACKED`` weights where supported; packed: every linear; plain: none); returns what runs, for
    the start-up log."""
    import torch

    dtype = next(model.parameters()).dtype
    name = str(dtype).removeprefix("torch.")
    if setting == "plain":
        return f"plain ({name}, --cpu_kernels plain)"
    reason = supported(dtype)
    if reason is not None:
        if setting == "packed":
            log.warning("--cpu_kernels packed: %s; running the plain kernels", reason)
        return f"plain ({name}: {reason})"
    smallest = MIN_PACKED if setting == "auto" else 0
    packed_linear, count, total = _packed_linear_class(), 0, 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                total += 1
                if child.weight.numel() >= smallest:
                    setattr(parent, child_name, packed_linear(child))
                    count += 1
    which = "all" if setting == "packed" else f"those of at least {smallest} weights"
    return f"oneDNN-packed ({name}, {count} of {total} linears: {which})"
