"""The static decode step's attention core: each row reads its own cached length, not the longest row's.

Before, every row attended over the longest live row's length rounded up to LENGTH_BUCKET (one masked
SDPA over ``[rows, heads, span, head_dim]``): with one 2,000-token row among short ones, every row read
2,048 columns of keys and values. Three kernels now, one chosen per decoder (``choose``):

- ``varlen`` (CUDA, float16/bfloat16): PyTorch's FlashAttention in its variable-length form
  (``aten._flash_attention_forward``, what ``torch.nn.attention.varlen.varlen_attn`` calls) with
  ``seqused_k``: row r's head h is its own sequence of the cache laid flat, and the kernel reads only its
  first ``positions[r] + 1`` keys. The lengths are read on the device, so a step's shapes depend on the
  rows bucket alone: one CUDA graph per rows bucket serves every length. Chosen only after a probe at
  start-up gives the masked SDPA's output (else ``full_span``, with a warning).
- ``row_spans`` (eager: the CPU, CUDA without graphs): neighbouring rows whose lengths fall in the same
  bucket share one SDPA over their own span (runs that would read little more together are merged: each
  call costs host time). It needs the lengths on the host, so it cannot be captured in a graph.
- ``full_span``: the old way (CUDA graphs where varlen is unavailable).

Every kernel gives the masked full-span attention's output within float rounding: the keys beyond a
row's length are masked there and skipped here (tests/unit/test_attention.py, tests/gpu/).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger("predictor")

# Two neighbouring runs of rows merge when reading them together costs at most this many more bytes of
# keys and values than apart: about what one more SDPA call costs in host time (10-20 us) on a CPU.
MERGE_BYTES = 256 * 2**10


@dataclass(frozen=True)
class Run:
    start: int
    stop: int
    span: int


def runs(sizes: Sequence[int], bucket: int, limit: int, merge: int = 0) -> list[Run]:
    """Consecutive rows grouped by the span they need (their next length, rounded up to ``bucket``).

    ``merge``: neighbouring runs join when together they read at most this many more (row, column)s."""
    found: list[Run] = []
    for row, size in enumerate(sizes):
        need = min(-(-(size + 1) // bucket) * bucket, limit)
        if found:
            last = found[-1]
            rows, wider = last.stop - last.start, max(last.span, need)
            if (rows + 1) * wider - (rows * last.span + need) <= merge:
                found[-1] = Run(last.start, row + 1, wider)
                continue
        found.append(Run(row, row + 1, need))
    return found


class FullSpan:
    """Every row over ``span`` columns, masked beyond its length (one SDPA call)."""

    name = "full_span"
    any_span = False  # its shapes follow the span: a graph per (rows, span) bucket

    def __init__(self, heads: int, head_dim: int) -> None:
        self.scale = head_dim**-0.5

    def prepare(self, positions: torch.Tensor, sizes: Sequence[int] | None, span: int) -> Any:
        return (torch.arange(span, device=positions.device)[None, :] <= positions[:, None])[:, None, None, :]

    def __call__(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Any) -> torch.Tensor:
        """``query`` [rows, heads, 1, head_dim]; ``keys``, ``values`` [>= rows, heads, max_len, head_dim]."""
        count, span = query.shape[0], mask.shape[-1]
        return F.scaled_dot_product_attention(
            query, keys[:count, :, :span], values[:count, :, :span], attn_mask=mask, scale=self.scale
        )


class RowSpans(FullSpan):
    """Runs of neighbouring rows, each over its own span (``runs``); a lone run is FullSpan's call."""

    name = "row_spans"

    def __init__(self, heads: int, head_dim: int, bucket: int, itemsize: int = 4) -> None:
        super().__init__(heads, head_dim)
        self.bucket, self.merge = bucket, MERGE_BYTES // (2 * heads * head_dim * itemsize)

    def prepare(self, positions: torch.Tensor, sizes: Sequence[int] | None, span: int) -> Any:
        mask = super().prepare(positions, sizes, span)
        if sizes is None:
            return [(Run(0, positions.shape[0], span), mask)]
        return [
            (run, mask[run.start : run.stop, ..., : run.span]) for run in runs(sizes, self.bucket, span, self.merge)
        ]

    def __call__(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, plan: Any) -> torch.Tensor:
        if len(plan) == 1:
            return super().__call__(query, keys, values, plan[0][1])
        out = torch.empty_like(query)
        for run, mask in plan:
            rows = slice(run.start, run.stop)
            out[rows] = F.scaled_dot_product_attention(
                query[rows],
                keys[rows, :, : run.span],
                values[rows, :, : run.span],
                attn_mask=mask,
                scale=self.scale,
            )
        return out


class Varlen(FullSpan):
    """FlashAttention over each row's own length, read on the device (CUDA; see the module docstring)."""

    name = "varlen"
    any_span = True  # one graph per rows bucket: the lengths are data, not shapes

    def __init__(self, heads: int, head_dim: int, capacity: int, max_len: int, device: torch.device) -> None:
        super().__init__(heads, head_dim)
        # the op itself, not varlen_attn's wrapper: it takes seqused_k on older PyTorch too (the device's 2.11)
        self.kernel, self.heads, self.max_len = torch.ops.aten._flash_attention_forward, heads, max_len
        # (row, head) pairs are the sequences; pair i's keys start at i x max_len in the flat cache
        starts = torch.arange(capacity * heads + 1, dtype=torch.int32, device=device)
        self.query_starts, self.key_starts = starts, starts * max_len

    def prepare(self, positions: torch.Tensor, sizes: Sequence[int] | None, span: int) -> Any:
        # each row's length for each of its heads; expand, not repeat_interleave: nothing waits on the host
        return (positions + 1).to(torch.int32)[:, None].expand(-1, self.heads).reshape(-1)

    def __call__(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, used: Any) -> torch.Tensor:
        count, _, _, dim = query.shape
        pairs = count * self.heads
        out = self.kernel(
            query.reshape(pairs, 1, dim),
            keys.reshape(-1, 1, dim),
            values.reshape(-1, 1, dim),
            self.query_starts[: pairs + 1],
            self.key_starts[: pairs + 1],
            1,  # one query per sequence
            self.max_len,
            0.0,  # no dropout
            False,  # not causal: the one query sees every used key
            False,
            scale=self.scale,
            seqused_k=used,
        )[0]
        return out.view(count, self.heads, 1, dim)


def choose(
    kernel: str, heads: int, head_dim: int, capacity: int, max_len: int, bucket: int, dtype, device, graphs: bool
):
    """The kernel for a decoder. ``kernel`` "auto": varlen where it runs and agrees with SDPA, else
    row_spans (eager) or full_span (graphs); a named one is taken as asked (tests, benchmarks)."""
    if kernel == "full_span":
        return FullSpan(heads, head_dim)
    if kernel == "row_spans":
        if graphs:
            raise ValueError("row_spans attention plans each step on the host: it cannot run in CUDA graphs")
        return RowSpans(heads, head_dim, bucket, torch.finfo(dtype).bits // 8)
    fallback = FullSpan(heads, head_dim) if graphs else RowSpans(heads, head_dim, bucket, torch.finfo(dtype).bits // 8)
    if kernel == "varlen" or (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)):
        try:
            varlen = Varlen(heads, head_dim, capacity, max_len, device)
            problem = probe(varlen, dtype, device)
        except Exception as exc:  # noqa: BLE001 - no FlashAttention here: the step still runs
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return varlen
        if kernel == "varlen":
            raise RuntimeError(f"varlen attention does not run here: {problem}")
        log.warning("varlen attention unavailable (%s); the step runs %s", problem, fallback.name)
    return fallback


def probe(candidate: Varlen, dtype, device, max_len: int = 256) -> str | None:
    """None when ``candidate``'s kernel gives the masked SDPA's output on rows of 1, 100 and 256 tokens."""
    generator = torch.Generator(device=device).manual_seed(0)
    heads, dim = candidate.heads, round(candidate.scale**-2)
    keys, values = (
        torch.randn((3, heads, max_len, dim), generator=generator, device=device, dtype=dtype) for _ in range(2)
    )
    query = torch.randn((3, heads, 1, dim), generator=generator, device=device, dtype=dtype)
    positions = torch.tensor([0, 99, max_len - 1], device=device)
    small, reference = Varlen(heads, dim, 3, max_len, device), FullSpan(heads, dim)
    got = small(query, keys, values, small.prepare(positions, None, max_len))
    want = reference(query, keys, values, reference.prepare(positions, None, max_len))
    error = (got.float() - want.float()).abs().max().item()
    return None if error < 1e-2 else f"differs from SDPA by {error:.3g}"
