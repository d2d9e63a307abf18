"""Pieces of GPT-J's attention block that the static decode step (static.py) writes out itself.

Pure functions over tensors: the fused query/key/value weights and the rotary embedding, whose tables
are expanded once per step and shared by every layer.
"""

from __future__ import annotations

import torch
from transformers.models.gptj.modeling_gptj import rotate_every_two


def fuse_qkv(attn) -> torch.Tensor:
    """GPT-J's query, key and value weights (no biases) as one matrix: one product instead of three.

    The three modules' weights become views of it, so the fusion costs no memory and transformers'
    own forward (prefill, beam search) reads the same numbers.
    """
    linears = (attn.q_proj, attn.k_proj, attn.v_proj)
    if any(linear.bias is not None for linear in linears):
        raise ValueError("the static decode path expects GPT-J's bias-free attention projections")
    fused = torch.cat([linear.weight.detach() for linear in linears])
    rows = linears[0].weight.shape[0]
    for i, linear in enumerate(linears):
        linear.weight.data = fused[i * rows : (i + 1) * rows]
    return fused


def rotary_tables(sincos: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype):
    sin, cos = torch.split(sincos[positions].to(dtype), sincos.shape[-1] // 2, dim=-1)
    # [rows, 1 token, 1 head, rotary_dim]: each frequency applies to a pair of dimensions
    return (sin.repeat_interleave(2, dim=-1)[:, None, None, :], cos.repeat_interleave(2, dim=-1)[:, None, None, :])


def rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, dim: int) -> torch.Tensor:
    """GPT-J's rotary embedding on the first ``dim`` dimensions of a 4-d ``x``.

    transformers' apply_rotary_pos_emb expands sin and cos at every call (every layer); here
    rotary_tables expands them once per step and the layers share them.
    """
    turned, kept = x[..., :dim], x[..., dim:]
    return torch.cat([turned * cos + rotate_every_two(turned) * sin, kept], dim=-1)
