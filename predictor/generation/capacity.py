"""How many rows the static path's KV cache holds, and how many tokens each: sized from the GPU.

The rule (docs/operations.md, "KV cache capacity"): every row holds ``--max_length_limit`` tokens, the
longest a request may be (``--max_length_limit 2048`` gives each row GPT-J's whole context). On CUDA the
cache and the working memory beside it take ``--kv_cache_memory_fraction`` of the memory free once the
weights are loaded; the working memory is room for prefill (a temporary cache of PREFILL_TOKENS tokens,
held up to three times while copied into the slots) and the graphs' float32 logits (a vocabulary-wide
row per cache row). ``--max_batch_size auto`` takes every row that fits, at most AUTO_MAX_ROWS; a number
takes that many, or fewer with a warning when fewer fit. Too little memory for a lone request's
``--max_return_sequences`` rows stops the start-up with a message that says what to change.

On an H200 (about 128 GiB free after GPT-J-6B's fp16 weights) the default fraction gives about 128 rows
of 2,048 tokens, or 512 rows of 512: some 87% of what the weights leave, as vLLM's default does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("predictor")

# Past about 256 rows a GPT-J-6B decode step on an H100/H200 is bound by arithmetic, not by reading the
# weights: more rows add latency to every step and hardly any throughput, and each row bucket costs a
# captured graph. "auto" stops here; a user who wants more sets --max_batch_size.
AUTO_MAX_ROWS = 512


@dataclass(frozen=True)
class Capacity:
    """The static cache's shape, and (sized from a GPU) what it was sized from."""

    rows: int
    tokens_per_row: int
    bytes_per_token: int
    free_bytes: int = 0  # GPU memory free after the weights; 0: not sized from a GPU

    @property
    def tokens(self) -> int:
        return self.rows * self.tokens_per_row

    @property
    def reserved_bytes(self) -> int:
        return self.tokens * self.bytes_per_token

    def describe(self) -> str:
        """For the start-up log: the shape, its size and, from a GPU, the share of what was free."""
        text = f"{self.rows} rows x {self.tokens_per_row} tokens ({self.reserved_bytes / 2**30:.1f} GiB"
        if self.free_bytes:
            share = self.reserved_bytes / self.free_bytes
            text += f", {share:.0%} of the {self.free_bytes / 2**30:.1f} GiB free after the weights"
        return text + ")"


def working_bytes(rows: int, per_token: int, vocabulary: int, prefill_tokens: int) -> int:
    """Memory kept free beside the cache: prefill's temporary cache (held up to 3 times), the logits."""
    return 3 * prefill_tokens * per_token + rows * vocabulary * 4


def from_gpu(
    free: int,
    fraction: float,
    per_token: int,
    tokens_per_row: int,
    vocabulary: int,
    prefill_tokens: int,
    wanted: int | None,
    needed: int,
    beam_tokens: int = 0,
) -> Capacity:
    """The rows that fit ``fraction`` of ``free`` bytes (``wanted``: the user's bound; None: auto).

    ``needed``: the fewest rows that serve a lone request (--max_return_sequences); fewer is an error.
    ``beam_tokens``: beam search's own growing cache (--max_batch_tokens) lives in what is left beside
    the cache and its working memory; a warning says when it may not fit there.
    """
    budget = int(free * fraction) - 3 * prefill_tokens * per_token
    # every row costs its tokens' keys and values plus one vocabulary-wide float32 row of logits
    fits = max(0, budget) // (tokens_per_row * per_token + vocabulary * 4)
    if fits < needed:
        raise ValueError(
            f"the GPU's free memory ({free / 2**30:.1f} GiB) holds a KV cache of only {fits} rows of "
            f"{tokens_per_row} tokens, fewer than --max_return_sequences {needed}: lower --max_length_limit "
            f"or --max_return_sequences, raise --kv_cache_memory_fraction, or use --decode_path dynamic"
        )
    if wanted is None:
        rows = min(fits, max(AUTO_MAX_ROWS, needed))
    else:
        if fits < wanted:
            log.warning("the KV cache fits %d rows of %d tokens, not --max_batch_size %d", fits, tokens_per_row, wanted)
        rows = min(max(wanted, needed), fits)
    room = Capacity(rows, tokens_per_row, per_token, free)
    left = free - room.reserved_bytes - working_bytes(rows, per_token, vocabulary, prefill_tokens)
    if beam_tokens * per_token > left:
        log.warning(
            "beam search's --max_batch_tokens %d (%.1f GiB of cache) may not fit the %.1f GiB left beside the "
            "KV cache: lower --kv_cache_memory_fraction or --max_batch_tokens, or a large beam search runs "
            "out of memory",
            beam_tokens,
            beam_tokens * per_token / 2**30,
            max(left, 0) / 2**30,
        )
    return room
