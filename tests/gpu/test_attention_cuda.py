"""On a CUDA machine: the KV cache sized from the GPU, and varlen attention (each row its own length)
giving the full-span attention's output (generation/capacity.py, generation/attention.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)"),
]


def test_varlen_attention_is_chosen_and_gives_the_full_span_output_at_gpt_j_6b_width():
    from predictor.generation.attention import FullSpan, choose

    device, heads, dim, max_len = torch.device("cuda"), 16, 256, 2048
    kernel = choose("auto", heads, dim, 8, max_len, 128, torch.float16, device, graphs=True)
    assert kernel.name == "varlen" and kernel.any_span
    generator = torch.Generator(device=device).manual_seed(0)
    keys, values = (torch.randn(8, heads, max_len, dim, generator=generator, device=device).half() for _ in range(2))
    query = torch.randn(6, heads, 1, dim, generator=generator, device=device).half()
    positions = torch.tensor([2047, 0, 5, 1000, 127, 128], device=device)
    full = FullSpan(heads, dim)
    want = full(query, keys, values, full.prepare(positions, None, max_len))
    got = kernel(query, keys, values, kernel.prepare(positions, None, max_len))
    torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)


def test_a_varlen_decoder_steps_as_the_full_span_one_with_rows_of_very_different_lengths(tiny_dir):
    """Both decoders fed the same tokens (graphs replayed): their logits agree at every step."""
    from predictor.generation.static import StaticDecoder, rows_buckets
    from predictor.loading.loader import load
    from predictor.settings import parse_settings

    loaded = load(parse_settings(["--model", str(tiny_dir)], {}))
    decoders = {
        kernel: StaticDecoder(loaded.model, loaded.eos_token_id, 8, 1024, attention=kernel)
        for kernel in ("varlen", "full_span")
    }
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 600, (n,), generator=generator).tolist() for n in (900, 3, 40, 1, 300)]
    with torch.inference_mode():
        for decoder in decoders.values():
            decoder.warm_up()
        assert len(decoders["varlen"]._captured) == len(rows_buckets(8))  # one graph per rows bucket
        first = [decoder.join(prompts) for decoder in decoders.values()]
        torch.testing.assert_close(first[0], first[1])
        tokens = first[0].argmax(-1).tolist()
        for _ in range(30):
            varlen, full = (decoder.step(tokens) for decoder in decoders.values())
            torch.testing.assert_close(varlen, full, atol=2e-2, rtol=2e-2)
            tokens = full.argmax(-1).tolist()


def test_the_cache_sized_from_this_gpu_fits_beside_its_working_memory():
    """GPT-J-6B's 448 KiB a token, 2,048-token rows, on whatever this GPU has free: at least 85% of it
    becomes cache, and allocating that cache leaves the prefill room and logits free."""
    from predictor.generation import capacity
    from predictor.generation.static import PREFILL_TOKENS, cache_bytes_per_token

    per_token = cache_bytes_per_token(SimpleNamespace(n_layer=28, n_embd=4096), torch.float16)
    free, _ = torch.cuda.mem_get_info()
    room = capacity.from_gpu(free, 0.92, per_token, 2048, 50400, PREFILL_TOKENS, wanted=None, needed=8)
    assert room.reserved_bytes >= 0.85 * free, room.describe()
    cache = torch.empty(room.reserved_bytes, dtype=torch.uint8, device="cuda")
    try:
        left, _ = torch.cuda.mem_get_info()
        assert left >= capacity.working_bytes(room.rows, per_token, 50400, PREFILL_TOKENS), room.describe()
    finally:
        del cache
        torch.cuda.empty_cache()
