"""Driving a continuous batch through a schedule of joins: shared by the batch and decode-path tests."""

from __future__ import annotations

from predictor.generation.continuous import ContinuousBatch


def run(
    loaded, schedule: dict, decoder=None, fail_at: int | None = None, max_prefill_tokens: int | None = None
) -> dict[int, list[list[int]]]:
    """Join requests at the given steps; each request's sequences of new tokens.

    ``fail_at``: at that step the shared step fails once, so every request steps on its own.
    ``max_prefill_tokens``: longer prompts join in chunks, one per step.
    """
    batch = ContinuousBatch(loaded.model, loaded.eos_token_id, decoder=decoder, max_prefill_tokens=max_prefill_tokens)
    results, step, owners = {}, 0, 0
    pending = dict(schedule)
    while pending or batch.rows or batch.pending:
        done = []
        if step in pending:
            entries = [(owners + i, r) for i, r in enumerate(pending.pop(step))]
            owners += len(entries)
            done += batch.join(entries)
        if batch.rows and step == fail_at:
            done += batch.advance_each(lambda owner: None)[0]
        elif batch.rows or batch.pending:
            done += batch.advance()
        for row in done:
            results.setdefault(row.owner, {})[row.index] = row.tokens
        step += 1
    return {owner: [rows[i] for i in sorted(rows)] for owner, rows in results.items()}
