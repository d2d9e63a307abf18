"""The tensors of a continuous batch: rows join (prefill, then merge) and leave between decode steps.

Rows are left-padded to a shared cache length T. ``mask`` marks real tokens, ``positions`` counts
each row's real tokens (its next rotary position), both on the device; ``pads`` counts each row's
padding on the host, so a step reads nothing back (steps.py: one sync a step). Joining
left-pads the shorter side's cache; leaving drops rows and then the columns that are padding for
every remaining row, so T never exceeds the longest live row. Per row the arithmetic is what
``generate`` does alone (tests compare token for token).

transformers' continuous batching (paged attention) exists, but on our CPUs it made 880 tok/s where
this made 1,940 at batch 16 (docs/performance.md); this loop also keeps every sampling option.
``DynamicDecoder`` is the default on CPU; on a GPU static.py's preallocated cache replaces it.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from transformers import DynamicCache

KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class DecodeState:
    kv: KV  # per layer: keys and values, [rows, heads, T, head_dim]
    mask: torch.Tensor  # [rows, T], 1 for real tokens
    positions: torch.Tensor  # [rows]
    # Each row's leading padding columns, on the host, so that a step (attention()) and keep() need not
    # read the mask back; None: not known (after a step of only some rows: step_rows).
    pads: list[int] | None = None

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]


@functools.cache
def _cache_argument(model_type: type) -> str:
    # transformers 5.0-5.17 call the model's cache `past_key_values`; later 5.x call it `cache`.
    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


def _kv(cache: DynamicCache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


#: Called with a row's logits at every prompt position, [prompt length, vocabulary] (echo scoring).
Score = Callable[[torch.Tensor], None]


def prefill(
    model, prompts: Sequence[Sequence[int]], pad: int, score: Mapping[int, Score] | None = None
) -> tuple[DecodeState, torch.Tensor]:
    """Run new rows' prompts (left-padded together); returns their state and next-token logits.

    ``score`` (row -> callback) asks for logits at every position of those rows' prompts: the same
    forward pass then keeps them all, and each callback reduces its row's at once.
    """
    device, width = model.device, max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=0 if score else 1,
        **{_cache_argument(type(model)): cache},
    )
    for row, callback in (score or {}).items():
        callback(out.logits[row, width - len(prompts[row]) :])
    return DecodeState(_kv(cache), mask, mask.sum(1), [width - len(p) for p in prompts]), out.logits[:, -1]


def extend(
    model, state: DecodeState | None, tokens: Sequence[int], every: bool = False
) -> tuple[DecodeState, torch.Tensor]:
    """One chunk of a single row's prompt on top of its partial cache (None: the first chunk).

    Returns the longer state and the chunk's logits, [1 or (``every``) len(tokens), vocabulary]. The
    row has no padding, so its mask is all ones and its positions continue where the cache ends.
    """
    device, past = model.device, 0 if state is None else state.length
    mask = torch.ones(1, past + len(tokens), dtype=torch.long, device=device)
    cache = DynamicCache(config=model.config) if state is None else DynamicCache(ddp_cache_data=state.kv)
    out = model(
        input_ids=torch.tensor([list(tokens)], device=device),
        attention_mask=mask,
        position_ids=torch.arange(past, past + len(tokens), device=device)[None],
        use_cache=True,
        logits_to_keep=0 if every else 1,
        **{_cache_argument(type(model)): cache},
    )
    return DecodeState(_kv(cache), mask, mask.sum(1), [0]), out.logits[0]


def repeat(state: DecodeState, rows: int) -> DecodeState:
    """A one-row state as ``rows`` identical rows (a request's sequences share their prompt)."""
    if rows == 1:
        return state
    kv = [(k.expand(rows, -1, -1, -1).contiguous(), v.expand(rows, -1, -1, -1).contiguous()) for k, v in state.kv]
    pads = None if state.pads is None else state.pads * rows
    return DecodeState(kv, state.mask.expand(rows, -1).contiguous(), state.positions.expand(rows).contiguous(), pads)


def device_ids(tokens: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    """A step's input ids on ``device``: the previous step's tokens stay there (continuous.py); a list
    (a retry's, the benches') is uploaded."""
    return tokens.to(device) if isinstance(tokens, torch.Tensor) else torch.tensor(list(tokens), device=device)


def step(model, state: DecodeState, tokens: torch.Tensor | Sequence[int]) -> tuple[DecodeState, torch.Tensor]:
    """One decode step: feed each row its latest token (on the device: nothing is uploaded), get
    next-token logits. Positions and mask stay on the device too."""
    mask = torch.cat([state.mask, torch.ones_like(state.mask[:, :1])], dim=1)
    cache = DynamicCache(ddp_cache_data=state.kv)
    out = model(
        input_ids=device_ids(tokens, mask.device)[:, None],
        attention_mask=attention(model, mask, state.pads),
        position_ids=state.positions[:, None],
        use_cache=True,
        **{_cache_argument(type(model)): cache},
    )
    return DecodeState(_kv(cache), mask, state.positions + 1, state.pads), out.logits[:, -1]


def attention(model, mask: torch.Tensor, pads: list[int] | None):
    """A decode step's attention mask, as transformers would make it from ``mask`` but without looking
    at the device: for SDPA it checks whether the mask pads any row (a host sync, every step), then
    passes no mask if none is padded and else the padding as [rows, 1, 1, T] booleans. ``pads`` (the
    host's) answers the question; other attentions (or pads unknown) get the 2-d mask as before."""
    if pads is None or model.config._attn_implementation != "sdpa":
        return mask
    return mask.bool()[:, None, None, :] if any(pads) else None


def _pad_left(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge(a: DecodeState, b: DecodeState) -> DecodeState:
    """One state with a's rows then b's rows, the shorter cache left-padded to the longer."""
    length = max(a.length, b.length)
    pa, pb = length - a.length, length - b.length
    kv = [
        (
            torch.cat([_pad_left(ka, pa, 2), _pad_left(kb, pb, 2)]),
            torch.cat([_pad_left(va, pa, 2), _pad_left(vb, pb, 2)]),
        )
        for (ka, va), (kb, vb) in zip(a.kv, b.kv, strict=True)
    ]
    pads = None if a.pads is None or b.pads is None else [p + pa for p in a.pads] + [p + pb for p in b.pads]
    mask = torch.cat([_pad_left(a.mask, pa, 1), _pad_left(b.mask, pb, 1)])
    return DecodeState(kv, mask, torch.cat([a.positions, b.positions]), pads)


def keep(state: DecodeState, rows: Sequence[int]) -> DecodeState | None:
    """Only ``rows``, without the leading columns that are now padding for all of them."""
    if not rows:
        return None
    index = torch.tensor(rows, device=state.mask.device)
    mask, pads = state.mask[index], None
    if state.pads is None:
        start = int(torch.nonzero(mask.sum(0))[0])
    else:  # rows are left-padded: the first column any of them uses is the least padding's
        start = min(state.pads[row] for row in rows)
        pads = [state.pads[row] - start for row in rows]
    kv = [(k[index.to(k.device), :, start:], v[index.to(v.device), :, start:]) for k, v in state.kv]
    return DecodeState(kv, mask[:, start:], state.positions[index], pads)


def step_rows(
    model, state: DecodeState, rows: Sequence[int], tokens: torch.Tensor | Sequence[int]
) -> tuple[DecodeState, torch.Tensor]:
    """A decode step for ``rows`` only; the others get a padding column, so no row moves."""
    sub = keep(state, rows)
    stepped, logits = step(model, sub, tokens)
    start, index = state.length - sub.length, torch.tensor(rows, device=state.mask.device)
    mask = _pad_right(state.mask, 1)
    mask[index, start:] = stepped.mask
    kv = []
    for (k, v), (sk, sv) in zip(state.kv, stepped.kv, strict=True):
        k, v = _pad_right(k, 2), _pad_right(v, 2)
        k[index.to(k.device), :, start:], v[index.to(v.device), :, start:] = sk, sv
        kv.append((k, v))
    positions = state.positions.clone()
    positions[index] = stepped.positions
    return DecodeState(kv, mask, positions), logits


def _pad_right(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = 1
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


class DynamicDecoder:
    """The continuous batch's cache as transformers' DynamicCache tensors, grown and trimmed per step."""

    def __init__(self, model, pad: int) -> None:
        self.model, self.pad, self.state = model, pad, None

    @property
    def rows(self) -> int:
        return 0 if self.state is None else self.state.rows

    def join(self, prompts: Sequence[Sequence[int]], score: Mapping[int, Score] | None = None) -> torch.Tensor:
        """Prefill new rows, added after the others; their next-token logits (``score``: see prefill)."""
        state, logits = prefill(self.model, prompts, self.pad, score)
        self.state = state if self.state is None else merge(self.state, state)
        return logits

    def add(self, state: DecodeState) -> None:
        """Add rows whose prefill ran elsewhere (chunked: continuous.py), after the others."""
        self.state = state if self.state is None else merge(self.state, state)

    def step(self, tokens: torch.Tensor | Sequence[int], rows: Sequence[int] | None = None) -> torch.Tensor:
        """Feed each row (or only ``rows``) its latest token; their next-token logits."""
        if rows is None:
            self.state, logits = step(self.model, self.state, tokens)
        else:
            self.state, logits = step_rows(self.model, self.state, rows, tokens)
        return logits

    def undo_step(self) -> None:
        """Forget the last step for every row (its tokens were not kept): drop the newest column."""
        state = self.state
        self.state = DecodeState(
            [(k[:, :, :-1], v[:, :, :-1]) for k, v in state.kv], state.mask[:, :-1], state.positions - 1, state.pads
        )

    def keep(self, survivors: Sequence[int]) -> list[int]:
        """Keep only ``survivors``; the rows' new order (old indices): unchanged here."""
        self.state = keep(self.state, survivors)
        return list(survivors)

    def clear(self) -> None:
        self.state = None
