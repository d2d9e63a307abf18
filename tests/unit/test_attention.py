"""The static step's attention (generation/attention.py): each row reads its own length, and the output
is the masked full-span attention's."""

from __future__ import annotations

import pytest
import torch

from predictor.core import GenerationRequest
from predictor.generation import attention
from predictor.generation.attention import FullSpan, RowSpans, Run, runs
from predictor.generation.static import StaticDecoder
from predictor.protocols.plan import plan
from predictor.protocols.seed import PromptRequest
from predictor.settings import Limits

from .schedule import run

LIMITS = Limits(max_length=1024)


def request(loaded, prompt, **fields) -> GenerationRequest:
    ids = tuple(loaded.tokenizer(prompt).input_ids)
    return GenerationRequest(prompt, ids, plan(PromptRequest(prompt=prompt, **fields), len(ids), LIMITS)[0])


def test_rows_are_grouped_into_runs_by_the_span_they_need():
    # sizes are the cached lengths; the step's new token makes each one longer by one
    assert runs([5, 40, 127], bucket=128, limit=2048) == [Run(0, 3, 128)]
    assert runs([1000, 3, 4, 1500, 10], bucket=128, limit=2048) == [
        Run(0, 1, 1024),
        Run(1, 3, 128),
        Run(3, 4, 1536),
        Run(4, 5, 128),
    ]
    # merge=200: the row needing 896 columns beside one of 1,024 reads 128 more with it, the rows of 128 896
    assert runs([1000, 800, 100, 100], bucket=128, limit=2048, merge=200) == [Run(0, 2, 1024), Run(2, 4, 128)]
    assert runs([3000], bucket=128, limit=2048) == [Run(0, 1, 2048)]


def test_row_spans_give_the_full_span_output():
    generator = torch.Generator().manual_seed(0)
    heads, dim, max_len = 4, 16, 1024
    sizes = [900, 2, 3, 700, 0, 130, 5]
    keys, values = (torch.randn(len(sizes) + 2, heads, max_len, dim, generator=generator) for _ in range(2))
    query = torch.randn(len(sizes), heads, 1, dim, generator=generator)
    positions, span = torch.tensor(sizes), 1024
    full, spans = FullSpan(heads, dim), RowSpans(heads, dim, 128)
    plan = spans.prepare(positions, sizes, span)
    # 2 x 4 heads x 16 wide x 4 bytes: 256 KiB is 512 (row, column) reads, so the rows of 128 and 256 at
    # the end share a call; four calls instead of one
    assert spans.merge == 512 and [run for run, _ in plan] == runs(sizes, 128, span, 512)
    assert [run for run, _ in plan] == [Run(0, 1, 1024), Run(1, 3, 128), Run(3, 4, 768), Run(4, 7, 256)]
    want = full(query, keys, values, full.prepare(positions, None, span))
    torch.testing.assert_close(spans(query, keys, values, plan), want, rtol=1e-5, atol=1e-6)
    # without the host's sizes (the failure path's rows): one run over the whole span
    torch.testing.assert_close(spans(query, keys, values, spans.prepare(positions, None, span)), want)


def _decoder(loaded, kernel: str) -> StaticDecoder:
    return StaticDecoder(loaded.model, loaded.eos_token_id, 8, 1024, graphs=False, attention=kernel)


def test_rows_of_very_different_lengths_generate_the_same_tokens_with_each_kernel(loaded):
    """A 899-token prompt beside 1-to-9-token ones: row_spans reads 1,024 columns for it and 128 for the
    others, where full_span reads 1,024 for every row; the greedy and sampled tokens are the same."""
    long = " ".join(["Kubernetes runs containers on a cluster of machines."] * 90)
    assert 890 < len(loaded.tokenizer(long).input_ids) < 960

    def schedule():
        return {
            0: [request(loaded, "The weather", max_length=60), request(loaded, long, max_length=1000)],
            2: [request(loaded, "A", max_length=50), request(loaded, "Seeded", max_length=40, do_sample=True, seed=1)],
            5: [request(loaded, "If I was a billionaire, I would", max_length=70)],
        }

    spans = _decoder(loaded, "row_spans")
    assert spans.attention.name == "row_spans"
    calls, prepare = [], spans.attention.prepare
    spans.attention.prepare = lambda *args: calls.append(prepare(*args)) or calls[-1]
    expected = run(loaded, schedule(), _decoder(loaded, "full_span"))
    assert run(loaded, schedule(), spans) == expected
    # the long row splits the batch: short rows before and after it read their own 128 columns
    assert max(len(plan) for plan in calls) == 3 and {run.span for plan in calls for run, _ in plan} == {128, 1024}
    assert run(loaded, schedule()) == expected  # and the dynamic path's


def test_the_eager_default_on_a_cpu_is_row_spans_and_varlen_needs_flash_attention(loaded):
    assert _decoder(loaded, "auto").attention.name == "row_spans"
    with pytest.raises(RuntimeError, match="varlen attention does not run here"):
        _decoder(loaded, "varlen")  # FlashAttention is CUDA's; the probe says so at start-up
    with pytest.raises(ValueError, match="cannot run in CUDA graphs"):
        attention.choose("row_spans", 4, 16, 8, 512, 128, torch.float16, torch.device("cpu"), graphs=True)


def _flash_varlen(query, key, value, cu_q, cu_k, max_q, max_k, dropout, causal, debug, *, scale, seqused_k):
    """FlashAttention's variable-length semantics written out: sequence i's queries cu_q[i]:cu_q[i+1]
    attend over its first seqused_k[i] keys from cu_k[i] (what aten._flash_attention_forward does on CUDA)."""
    out = torch.empty_like(query)
    for i in range(len(cu_q) - 1):
        q = query[cu_q[i] : cu_q[i + 1]].transpose(0, 1)  # [heads, queries, dim]
        k, v = (t[cu_k[i] : cu_k[i] + seqused_k[i]].transpose(0, 1) for t in (key, value))
        out[cu_q[i] : cu_q[i + 1]] = torch.softmax(q @ k.transpose(1, 2) * scale, -1).matmul(v).transpose(0, 1)
    return (out,)


def test_varlen_lays_each_rows_heads_out_as_sequences_of_their_own_length(monkeypatch):
    """The CUDA kernel's inputs, checked here with its semantics written out: every (row, head) is one
    sequence of the flat cache, reading positions + 1 keys; the output is the full-span one."""
    generator = torch.Generator().manual_seed(1)
    heads, dim, max_len, capacity = 4, 16, 256, 6
    monkeypatch.setattr(torch.ops.aten, "_flash_attention_forward", _flash_varlen)
    varlen = attention.Varlen(heads, dim, capacity, max_len, torch.device("cpu"))
    keys, values = (torch.randn(capacity, heads, max_len, dim, generator=generator) for _ in range(2))
    query = torch.randn(4, heads, 1, dim, generator=generator)
    positions = torch.tensor([255, 0, 17, 128])
    used = varlen.prepare(positions, None, max_len)
    assert used.tolist() == [256] * 4 + [1] * 4 + [18] * 4 + [129] * 4
    full = FullSpan(heads, dim)
    want = full(query, keys, values, full.prepare(positions, None, max_len))
    torch.testing.assert_close(varlen(query, keys, values, used), want, rtol=1e-5, atol=1e-5)
    assert attention.probe(varlen, torch.float32, torch.device("cpu")) is None  # the start-up check passes
