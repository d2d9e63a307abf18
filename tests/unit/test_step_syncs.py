"""Issue 22 item 3: a steady decode step syncs with the host at most twice, whatever its rows ask for.

The tiny GPT-J through ContinuousBatch, on both decoders (the static one eagerly, as it runs without
CUDA). bench.hoststep's counting modes wrap ``.item``/``.tolist``/``.cpu``/``nonzero``/``__bool__``/...
and every host-to-device copy (tensors made from host data, CPU tensors moved to a device): on a GPU
each would stall the step; on CPU they are counted all the same. tests/gpu/test_step_syncs_cuda.py
runs the same under ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

import pytest
import torch

from bench import hoststep
from predictor.core import GenerationRequest, Sampling
from predictor.generation.continuous import ContinuousBatch
from predictor.generation.static import StaticDecoder
from predictor.generation.steps import HostCopy

MIXES = [*hoststep.MIXES, "mix"]  # greedy, sampled, seeded, penalties, logprobs5, and all five in one batch
ROWS = 10


def batch_of(loaded, path: str, mix: str) -> ContinuousBatch:
    """ROWS rows of different prompt lengths (the dynamic path pads), none of which ends soon."""
    model, eos = loaded.model, loaded.eos_token_id
    decoder = StaticDecoder(model, eos, ROWS, 256, graphs=False) if path == "static" else None
    batch = ContinuousBatch(model, eos, decoder=decoder)
    entries = []
    for i in range(ROWS):
        ids = tuple(range(100, 105 + 2 * i))
        entries.append((i, GenerationRequest("x", ids, Sampling(max_length=200, **hoststep.mix_fields(mix, i)))))
    batch.join(entries)
    batch.advance()  # the rows' device state is built at the first step after a join: not steady yet
    return batch


def counted(call) -> tuple[dict, object]:
    syncs, _, mode, _ = hoststep.counting_modes()
    with torch.inference_mode(), mode:
        result = call()
    return dict(syncs), result


@pytest.mark.parametrize("path", ["dynamic", "static"])
@pytest.mark.parametrize("mix", MIXES)
def test_a_steady_step_syncs_at_most_twice(loaded, path, mix):
    batch = batch_of(loaded, path, mix)
    for _ in range(3):
        syncs, done = counted(batch.advance)
        assert done == [] and len(batch.rows) == ROWS  # steady: nobody joined or left
        assert syncs == {"tolist": 1}, syncs  # one copy of the step's tokens (and logprobs) to the host


def test_the_inputs_stay_on_the_device_and_logprobs_share_the_tokens_copy(loaded):
    batch = batch_of(loaded, "static", "mix")
    before = batch.io.latest
    syncs, _ = counted(batch.advance)
    assert sum(syncs.get(name, 0) for name in hoststep.UPLOADS | hoststep.MOVES) == 0
    assert batch.io.latest is not before and batch.io.latest.tolist() == [row.choice.tokens[-1] for row in batch.rows]
    assert all(len(row.choice.scored) == row.choice.generated for row in batch.rows if row.choice.scored is not None)


def test_the_count_sees_a_sync_or_an_upload_slipped_into_the_step(loaded, monkeypatch):
    """The test above can fail: an .item() or a list uploaded per step is counted."""
    batch = batch_of(loaded, "static", "greedy")
    step = batch.decoder.step

    def item(tokens, rows=None):
        logits = step(tokens, rows)
        logits[0, 0].item()
        return logits

    monkeypatch.setattr(batch.decoder, "step", item)
    assert counted(batch.advance)[0] == {"tolist": 1, "item": 1}
    monkeypatch.setattr(batch.decoder, "step", lambda tokens, rows=None: step(tokens.tolist(), rows))
    assert counted(batch.advance)[0] == {"tolist": 2, "tensor": 1}  # the host's tokens, uploaded again


def test_rows_that_leave_or_join_keep_their_latest_tokens_in_line(loaded):
    batch = batch_of(loaded, "dynamic", "mix")
    batch.finish({(1, 0), (4, 0)})  # two rows from the middle leave
    batch.join([(99, GenerationRequest("x", (7, 8, 9), Sampling(max_length=50)))])
    batch.advance()
    assert batch.io.latest.tolist() == [row.choice.tokens[-1] for row in batch.rows]
    assert counted(batch.advance)[0] == {"tolist": 1}


@pytest.mark.parametrize("lengths", [(3, 5, 4), (4, 4)])
def test_the_dynamic_steps_mask_is_the_one_transformers_makes(loaded, lengths):
    """dynamic.attention() answers from the host whether a row is padded: the mask (or its absence)
    must be exactly what transformers' create_causal_mask makes after its own look at the device."""
    from transformers import DynamicCache
    from transformers.masking_utils import create_causal_mask

    from predictor.generation import dynamic

    model = loaded.model
    with torch.inference_mode():
        state, _ = dynamic.prefill(model, [list(range(10, 10 + n)) for n in lengths], loaded.eos_token_id)
        for rows in (list(range(len(lengths))), [len(lengths) - 1]):  # all, then one left alone (trimmed)
            kept = dynamic.keep(state, rows)
            mask = torch.cat([kept.mask, torch.ones_like(kept.mask[:, :1])], dim=1)
            expected = create_causal_mask(
                config=model.config,
                inputs_embeds=model.transformer.wte(torch.ones(len(rows), 1, dtype=torch.long)),
                attention_mask=mask,
                cache=DynamicCache(ddp_cache_data=kept.kv),
                position_ids=kept.positions[:, None],
            )
            ours = dynamic.attention(model, mask, kept.pads)
            assert (ours is None and expected is None) or torch.equal(ours, expected)
            assert kept.pads == [int(n) for n in (kept.mask == 0).sum(1)]


def test_one_copy_brings_back_tokens_and_the_score_table():
    chosen = torch.tensor([5, 50399, 7])
    table = torch.tensor([[5.0, -0.25, 3.0, -0.125], [7.0, -1.5, 7.0, -1.5]], dtype=torch.float64)
    syncs, (tokens, rows) = counted(lambda: HostCopy().fetch(chosen, [table]))
    assert tokens == [5, 50399, 7] and rows == table.tolist() and syncs == {"tolist": 1}
    assert HostCopy().fetch(chosen, []) == ([5, 50399, 7], [])
    every = torch.cat([table[:1], torch.tensor([[50399.0, -2.0, 1.0, -3.0]], dtype=torch.float64), table[1:]])
    syncs, (tokens, rows) = counted(lambda: HostCopy().fetch(chosen, [every]))  # every row reports
    assert tokens == [5, 50399, 7] and rows == every.tolist() and syncs == {"tolist": 1}
