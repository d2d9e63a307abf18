"""The GPU fast path of the continuous batch: a preallocated KV cache and a graph-replayed decode step.

Why (docs/performance.md has the figures): the dynamic path (dynamic.py) copies every layer's cache
into a new tensor at each step and launches some 20 kernels per layer from Python; at batch 1 on an
H100 that costs more than reading GPT-J-6B's 12 GB of weights, the step's real floor. Here row i of
the batch owns slot i of one cache tensor per layer ([slots, heads, max_len, head_dim]): a step writes
each row's new key and value at the row's own length and attends over its own length (attention.py:
FlashAttention reading the lengths on the device, or spans rounded up to a bucket). The step's shapes
then depend only on the rows bucket (and the length bucket where the kernel needs one), so on CUDA each
shape is captured once as a CUDA graph and replayed: one launch per step.

The step is GPT-J's block written out over the model's own modules (layer norms, projections, MLP),
with the attention core, rotary embedding and cache writes here; tests check it against the dynamic
path token for token. Prefill still runs transformers' forward (in one piece, or a long prompt in chunks:
continuous.py); its cache is copied into the rows' slots.
"""

from __future__ import annotations

import functools
import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions

from predictor.generation import attention as attention_kernels
from predictor.generation import dynamic
from predictor.generation.gptj_block import fuse_qkv, rotary_tables, rotate

log = logging.getLogger("predictor")

LENGTH_BUCKET = 128  # attention spans a multiple of this many columns: few shapes, little waste
# Prompts joining together are prefilled in groups of at most this many (left-padded) tokens: it bounds
# the prefill's activations and its temporary cache (448 KiB a token for GPT-J-6B, held twice while
# copied into the slots), which paths.py keeps free beside the slots; 4096 tokens already keep an
# H100's matrix units busy.
PREFILL_TOKENS = 4096


def rows_buckets(capacity: int) -> list[int]:
    """Row counts a step is padded up to: powers of two, then steps of 16, up to the capacity."""
    buckets, size = [], 1
    while size < min(capacity, 16):
        buckets.append(size)
        size *= 2
    buckets += list(range(16, capacity, 16))
    return sorted(set(buckets + [capacity]))


def cache_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Key and value, every layer: 448 KiB per token for GPT-J-6B in half precision."""
    return 2 * config.n_layer * config.n_embd * torch.finfo(dtype).bits // 8


class StaticDecoder:
    """``capacity`` rows of at most ``max_len`` tokens; the Decoder protocol of continuous.py."""

    def __init__(
        self,
        model,
        pad: int,
        capacity: int,
        max_len: int,
        graphs: bool = True,
        prefill_tokens: int = PREFILL_TOKENS,
        attention: str = "auto",
    ) -> None:
        config, device, dtype = model.config, model.device, model.dtype
        self.model, self.pad, self.capacity, self.max_len = model, pad, capacity, max_len
        self.prefill_tokens = prefill_tokens
        self.heads, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.rotary_dim = config.rotary_dim or self.head_dim
        shape = (config.n_layer, capacity, self.heads, max_len, self.head_dim)
        self.k, self.v = torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(capacity, dtype=torch.long, device=device)  # tokens cached per slot
        self.tokens = torch.zeros(capacity, dtype=torch.long, device=device)  # each row's latest token
        self.sizes: list[int] = []  # the same lengths, on the host, for the live rows
        self.sincos = create_sinusoidal_positions(config.n_positions, self.rotary_dim).to(device)
        self.qkv = [fuse_qkv(block.attn) for block in model.transformer.h]
        # transformers' "gelu_new" is the tanh approximation written out in seven kernels; this is one
        self.act = (
            functools.partial(F.gelu, approximate="tanh")
            if config.activation_function == "gelu_new"
            else model.transformer.h[0].mlp.act
        )
        self.graphs = graphs and device.type == "cuda"
        # how each row reads its cache (attention.py): its own length where the kernel allows
        self.attention = attention_kernels.choose(
            attention, self.heads, self.head_dim, capacity, max_len, LENGTH_BUCKET, dtype, device, self.graphs
        )
        self._captured: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        # every graph writes its logits here: one buffer, not one kept alive per captured shape
        self._out = torch.empty(capacity, model.lm_head.out_features, device=device) if self.graphs else None

    @property
    def rows(self) -> int:
        return len(self.sizes)

    def join(self, prompts: Sequence[Sequence[int]], score: Mapping[int, dynamic.Score] | None = None) -> torch.Tensor:
        """Prefill with transformers, then copy each new row's cache into its slot (after the others).

        ``score``: see dynamic.prefill (echo scoring reads the same prefill's logits)."""
        first, lengths = self.rows, [len(p) for p in prompts]
        self._check_fits(lengths)
        logits = []
        for group in _groups(lengths, self.prefill_tokens):
            scored = {offset: score[row] for offset, row in enumerate(group) if score and row in score}
            state, group_logits = dynamic.prefill(self.model, [prompts[i] for i in group], self.pad, scored)
            logits.append(group_logits)
            self._fill(state, [first + row for row in group], [lengths[row] for row in group])
            del state  # before the next group's prefill allocates its own
        self.lengths[first : first + len(lengths)] = torch.tensor(lengths, device=self.lengths.device)
        self.sizes += lengths
        return torch.cat(logits)

    def add(self, state: dynamic.DecodeState) -> None:
        """Add rows whose prefill ran elsewhere (chunked: continuous.py; no padding): copied into slots."""
        first, lengths = self.rows, state.mask.sum(1).tolist()
        self._check_fits(lengths)
        self._fill(state, list(range(first, first + len(lengths))), lengths)
        self.lengths[first : first + len(lengths)] = torch.tensor(lengths, device=self.lengths.device)
        self.sizes += lengths

    def _check_fits(self, lengths: Sequence[int]) -> None:
        if self.rows + len(lengths) > self.capacity or max(lengths) >= self.max_len:
            raise ValueError(
                f"{len(lengths)} rows of up to {max(lengths)} tokens do not fit the cache "
                f"({self.capacity - self.rows} free slots of {self.max_len} tokens)"
            )

    def _fill(self, state: dynamic.DecodeState, slots: Sequence[int], lengths: Sequence[int]) -> None:
        """Copy each of ``state``'s rows (left-padded, as prefill makes them) into its slot."""
        keys, values = torch.stack([k for k, _ in state.kv]), torch.stack([v for _, v in state.kv])
        for offset, (slot, length) in enumerate(zip(slots, lengths, strict=True)):
            start = state.length - length  # prefill pads on the left
            self.k[:, slot, :, :length] = keys[:, offset, :, start:]
            self.v[:, slot, :, :length] = values[:, offset, :, start:]

    def step(self, tokens: torch.Tensor | Sequence[int], rows: Sequence[int] | None = None) -> torch.Tensor:
        """Feed each row (or only ``rows``, eagerly: the failure path) its latest token (a device tensor,
        or a list: uploaded); lengths are checked on the host's ``sizes``, so a step syncs nothing."""
        selected = list(range(self.rows)) if rows is None else list(rows)
        if max(self.sizes[i] for i in selected) >= self.max_len:
            raise ValueError(f"a row would exceed the cache's {self.max_len} tokens")
        span = self._span(max(self.sizes[i] for i in selected) + 1)
        if rows is None:
            count = len(selected)
            self.tokens[:count].copy_(dynamic.device_ids(tokens, self.tokens.device))
            logits = self._run(_bucket(count, rows_buckets(self.capacity)), span)[:count]
            self.lengths[:count] += 1
        else:
            slots = torch.tensor(selected, device=self.tokens.device)
            logits = self._forward(dynamic.device_ids(tokens, slots.device), self.lengths[slots], slots, span)
            self.lengths[slots] += 1
        for i in selected:
            self.sizes[i] += 1
        return logits

    def undo_step(self) -> None:
        """Forget the last step for every row (its tokens were not kept); the next one overwrites it."""
        self.lengths[: self.rows] -= 1
        self.sizes = [size - 1 for size in self.sizes]

    def keep(self, survivors: Sequence[int]) -> list[int]:
        """Keep ``survivors``: the last rows move into the holes (copying only their own tokens)."""
        count, kept = len(survivors), set(survivors)
        holes = [i for i in range(count) if i not in kept]
        movers = [i for i in survivors if i >= count]
        for hole, mover in zip(holes, movers, strict=True):
            length = self.sizes[mover]
            self.k[:, hole, :, :length] = self.k[:, mover, :, :length]
            self.v[:, hole, :, :length] = self.v[:, mover, :, :length]
            self.lengths[hole] = self.lengths[mover]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        self.sizes = [self.sizes[i] for i in order]
        self.lengths[count:] = 0  # free slots write their (ignored) padding rows at column 0
        return order

    def clear(self) -> None:
        self.sizes = []
        self.lengths.zero_()

    def warm_up(self) -> int:
        """Capture every (rows, length) shape's graph now, before requests wait for it. Returns the count."""
        if not self.graphs:
            return 0
        with torch.inference_mode():
            spans = range(LENGTH_BUCKET, self.max_len + LENGTH_BUCKET, LENGTH_BUCKET)
            for rows in rows_buckets(self.capacity):
                for span in [self.max_len] if self.attention.any_span else spans:
                    self._run(rows, min(span, self.max_len))
        self.clear()
        return len(self._captured)

    def drop_graphs(self) -> int:
        """Run eagerly from now on (a capture failed); the graphs' memory goes back to the allocator."""
        self.graphs, self._captured, self._pool, self._out = False, {}, None, None
        self.clear()
        if self.k.device.type == "cuda":
            torch.cuda.synchronize(self.k.device)
            torch.cuda.empty_cache()
        return 0

    def _span(self, needed: int) -> int:
        if self.attention.any_span:  # the kernel reads each row's length itself: one shape for all
            return self.max_len
        return min(-(-needed // LENGTH_BUCKET) * LENGTH_BUCKET, self.max_len)

    def _run(self, rows: int, span: int) -> torch.Tensor:
        """The step for the first ``rows`` slots: a graph replay on CUDA, else the eager forward."""
        if not self.graphs:
            sizes = self.sizes[:rows] + [0] * (rows - len(self.sizes))  # padding rows: free slots at 0
            return self._forward(self.tokens[:rows], self.lengths[:rows], None, span, sizes)
        key = (rows, span)
        with torch.cuda.device(self.k.device):  # the model's GPU, whichever is current in this thread
            if key not in self._captured:
                self._captured[key] = self._capture(rows, span)
            self._captured[key].replay()
        return self._out[:rows]

    def _capture(self, rows: int, span: int) -> torch.cuda.CUDAGraph:
        # Warm up on a side stream first (cuBLAS workspaces, lazy initialization), as PyTorch's
        # graph documentation asks. The warm-up writes the same keys and values the replay will.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(self.tokens[:rows], self.lengths[:rows], None, span)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a /metrics scrape on another thread reads allocator statistics meanwhile
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            self._out[:rows].copy_(self._forward(self.tokens[:rows], self.lengths[:rows], None, span))
        return graph

    def _forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor | None,
        span: int,
        sizes: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """GPT-J for one new token per row: rows are slots[i] (or the first rows), at positions[i].

        ``sizes``: the same positions on the host, where the attention may plan by them (eager)."""
        transformer, count = self.model.transformer, tokens.shape[0]
        index = torch.arange(count, device=tokens.device) if slots is None else slots
        sin, cos = rotary_tables(self.sincos, positions, self.k.dtype)
        plan = self.attention.prepare(positions, sizes, span)
        hidden = transformer.wte(tokens)[:, None, :]
        for layer, block in enumerate(transformer.h):
            x = block.ln_1(hidden)
            qkv = F.linear(x, self.qkv[layer]).view(count, 3, self.heads, self.head_dim)
            rotated = rotate(qkv[:, :2], sin, cos, self.rotary_dim)  # query and key in one go
            self.k[layer][index, :, positions] = rotated[:, 1]
            self.v[layer][index, :, positions] = qkv[:, 2]
            keys = self.k[layer] if slots is None else self.k[layer][slots]
            values = self.v[layer] if slots is None else self.v[layer][slots]
            out = self.attention(rotated[:, 0, :, None], keys, values, plan)
            mlp = block.mlp.fc_out(self.act(block.mlp.fc_in(x)))  # GPT-J: attention and MLP side by side
            hidden = block.attn.out_proj(out.reshape(count, 1, -1)) + mlp + hidden
        return self.model.lm_head(transformer.ln_f(hidden))[:, -1].float()


def _groups(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive rows whose left-padded prompts fit ``budget`` tokens together (a row alone always)."""
    groups: list[list[int]] = []
    width = 0
    for row, length in enumerate(lengths):
        if groups and max(width, length) * (len(groups[-1]) + 1) <= budget:
            groups[-1].append(row)
            width = max(width, length)
        else:
            groups.append([row])
            width = length
    return groups


def _bucket(count: int, buckets: Sequence[int]) -> int:
    return next(size for size in buckets if size >= count)
