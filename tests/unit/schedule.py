"""Driving a continuous batch through a schedule of joins: shared by the batch and decode-path tests."""

from __future__ import annotations

from predictor.generation.continuous import ContinuousBatch


def run(loaded, schedule: dict, decoder=None, fail_at: int | None = None) -> dict[int, list[list[int]]]:
    """Join requests at the given steps; each request's sequences of new tokens.

    ``fail_at``: at that step the shared step fails once, so every request steps on its own.
    """
    batch, results, step, owners = ContinuousBatch(loaded.model, loaded.eos_token_id, decoder=decoder), {}, 0, 0
    pending = dict(schedule)
    while pending or batch.rows:
        done = []
        if step in pending:
            entries = [(owners + i, r) for i, r in enumerate(pending.pop(step))]
            owners += len(entries)
            done += batch.join(entries)
        if batch.rows:
            done += batch.advance_each(lambda owner: None)[0] if step == fail_at else batch.advance()
        for row in done:
            results.setdefault(row.owner, {})[row.index] = row.tokens
        step += 1
    return {owner: [rows[i] for i in sorted(rows)] for owner, rows in results.items()}
