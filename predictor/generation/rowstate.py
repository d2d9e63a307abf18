"""Every row's sampling settings as tensors on the device, applied to the whole batch at once.

Built when the batch's rows change (one host-to-device copy) and reused step after step: a decode step
then costs a fixed number of tensor ops, however many rows it has and whatever options they use, and no
host sync. TGI's ``Heterogeneous*LogitsProcessor`` / ``*Warper`` classes are the pattern
(text-generation-inference, server/text_generation_server/utils/logits_process.py): one tensor of each
setting per batch, rows without the option carrying a neutral value; here an option no row uses costs
nothing at all, and an option only some rows use is masked for the others, so that each row's scores are
bit for bit what transformers' own processor computes for it alone (the golden fixtures hold us to it).

Every sampled row draws by inverse CDF from one uniform: a seeded row's hashed from (seed, position) by a
counter-based hash, so no generator and no kernel per row and the same draw whatever else is in the
batch; an unseeded row's from the global generator. (A Gumbel race, or ``torch.multinomial``, needs a
random number per vocabulary entry, ten integer passes over [rows, 50,400] per step for a hash: too slow
on a CPU.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from predictor.generation.penalties import Penalties

_MASK = 0xFFFFFFFF
# Multipliers below 2**31 keep every product of a 32-bit value inside int64 (torch's integer overflow is
# not defined behaviour); the constants are the two of "lowbias32" and murmur2's.
_M1, _M2 = 0x7FEB352D, 0x5BD1E995
_GOLDEN = 0x9E3779B9
_BLOCK = 64  # positions hashed at once for the seeded rows (BatchState._seeded_uniform)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finalizer (xorshift-multiply), on int64 tensors holding values below 2**32."""
    x = x ^ (x >> 16)
    x = (x * _M1) & _MASK
    x = x ^ (x >> 15)
    x = (x * _M2) & _MASK
    return x ^ (x >> 16)


# Per-row columns of the one upload (float64 holds every value exactly: seeds are split in 32-bit halves).
_COLUMNS = ("repetition", "presence", "frequency", "generated", "min_new", "invalid", "first", "length")
_SAMPLED = ("temperature", "top_k", "one_minus_p", "seed_lo", "seed_hi", "seeded", "min_p")


@dataclass
class _Flags:
    """Which options any row uses: host-side, so an option nobody uses costs not even a launch."""

    repetition: bool = False
    penalties: bool = False  # presence or frequency
    min_length: bool = False
    stop_ban: bool = False  # a row below its minimum has stop token ids: banned with EOS
    invalid: bool = False
    sampled: bool = False
    all_sampled: bool = False
    temperature: bool = False
    top_k: int = 0  # the largest k any sampled row asks for (0: none)
    top_p: bool = False
    min_p: bool = False
    seeded: bool = False
    unseeded: bool = False
    logprobs: int = -1  # the most alternatives any row asks for (-1: no row reports logprobs)


class BatchState:
    """The device tensors for one sequence of rows (``logits.RowChoice``), in the batch's order."""

    def __init__(self, rows: Sequence, vocabulary: int, device: torch.device) -> None:
        self.key = tuple(map(id, rows))
        self.rows = tuple(rows)  # holds them: the ids in ``key`` stay theirs
        self.expected = [row.generated for row in rows]
        self.vocabulary, self.device = vocabulary, device
        self.flags = flags = _flags(rows)
        sampled = [i for i, row in enumerate(rows) if row.warp_key is not None]
        wanted = [i for i, row in enumerate(rows) if row.scored is not None]
        self.scores_sampled = bool(set(sampled) & set(wanted))  # a row both samples and reports logprobs
        self.index = {id(row): i for i, row in enumerate(rows)}
        fresh, carried = _carried(rows)  # tokens to upload from the host, tokens to copy over
        history = [token for i in fresh for token in rows[i].tokens]
        owners = [i for i in fresh for _ in rows[i].tokens]
        columns = [j for i in fresh for j in range(len(rows[i].tokens))]
        generated = [int(j >= rows[i].prompt_length) for i in fresh for j in range(len(rows[i].tokens))]
        stops = _stop_pairs(rows) if flags.stop_ban else ([], [])  # (row, id): banned below min length
        sections = [sampled, wanted, history, owners, columns, generated, *stops]
        sections += [positions for pair in carried.values() for positions in pair]
        tables = [[_row_values(row) for row in rows], [_sampled_values(rows[i]) for i in sampled]]
        (values, params), parts = _upload(tables, (len(_COLUMNS), len(_SAMPLED)), sections, device)
        self.sampled, self.wanted = parts[:2]
        self.generated, self.min_new = values[:, 3].long(), values[:, 4].long()
        self.invalid = values[:, 5:6].bool()
        self.temperature = params[:, 0:1].float()
        self.top_k = params[:, 1].long()
        self.one_minus_p = params[:, 2:3].float()
        self.top_k_off = (self.top_k == 0)[:, None]
        self.top_k_somewhere = any(rows[i].warp_key[1] == 0 for i in sampled)  # a sampled row without top-k
        self.kth_at = None  # each sampled row's k - 1, capped at the step's largest k (warp)
        self.top_p_off = self.one_minus_p <= 0
        self.key_hash = _mix(_mix(params[:, 3].long() ^ _GOLDEN) ^ params[:, 4].long())
        self.is_seeded = params[:, 5].bool()
        self.min_p = params[:, 6:7].float()
        self.stop_rows, self.stop_ids = parts[6:8]
        self.steps, self.uniforms = 0, None  # steps since built; seeded rows' next _BLOCK uniforms, from when
        self.penalties = None
        if flags.repetition or flags.penalties:
            longest = max(len(row.tokens) for row in rows if _counts_tokens(row))
            weights = values[:, 0:1].float(), values[:, 1:2].float(), values[:, 2:3].float()
            self.penalties = Penalties(*weights, values[:, 6].long(), values[:, 7].long(), longest, vocabulary)
            self.penalties.fill(*parts[3:5], parts[2], parts[5])
            for old, now, before in zip(carried, parts[8::2], parts[9::2], strict=True):
                self.penalties.carry(old.penalties, now, before)

    def matches(self, rows: Sequence) -> bool:
        """Whether this state is for exactly these rows, each with as many tokens as it expects."""
        return tuple(map(id, rows)) == self.key and [row.generated for row in rows] == self.expected

    def penalize(self, scores: torch.Tensor) -> torch.Tensor:
        """The repetition, presence and frequency penalties, in ``generate``'s order (penalties.py)."""
        if self.penalties is None:
            return scores
        return self.penalties.apply(scores, self.flags.repetition, self.flags.penalties)

    def ban(self, scores: torch.Tensor, eos: int) -> torch.Tensor:
        """The minimum-length EOS ban, then NaN/inf removal (last, as in ``generate``)."""
        f = self.flags
        if f.min_length:  # MinNewTokensLengthLogitsProcessor: EOS banned until the row's minimum
            banned = self.generated < self.min_new
            scores[:, eos] = scores[:, eos].masked_fill(banned, -float("inf"))
        if f.stop_ban:  # vLLM's min_tokens bans the row's stop token ids too
            rows, ids = self.stop_rows, self.stop_ids
            banned = (self.generated < self.min_new)[rows]
            scores[rows, ids] = scores[rows, ids].masked_fill(banned, -float("inf"))
        if f.invalid:  # InfNanRemoveLogitsProcessor, on the rows that ask for it
            finfo = torch.finfo(scores.dtype)
            cleaned = torch.nan_to_num(scores, nan=0.0, posinf=finfo.max, neginf=finfo.min)
            scores = torch.where(self.invalid, cleaned, scores)
        return scores

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k, top-p, min-p for the sampled rows (``scores``: theirs only), as transformers'
        warpers compute them one row at a time, in generate's order (logits_process.py,
        TopKLogitsWarper/TopPLogitsWarper/MinPLogitsWarper)."""
        f = self.flags
        if f.temperature:
            scores = scores / self.temperature
        if f.top_k:
            k = min(f.top_k, scores.shape[-1])
            if self.kth_at is None:
                self.kth_at = (self.top_k.clamp(1, k) - 1)[:, None]
            kth = torch.topk(scores, k).values.gather(1, self.kth_at)
            if self.top_k_somewhere:  # nothing is below -inf: a row without top-k keeps every score
                kth.masked_fill_(self.top_k_off, -float("inf"))
            scores = torch.where(scores < kth, -float("inf"), scores)  # masked_fill: 1.6x the time on CPU
        if f.top_p:
            ordered, indices = torch.sort(scores, descending=False)
            remove = ordered.softmax(dim=-1).cumsum(dim=-1) <= self.one_minus_p
            remove[:, -1] = False
            remove &= ~self.top_p_off
            scores = torch.where(remove.scatter(1, indices, remove), -float("inf"), scores)
        if f.min_p:  # a row without min_p has 0: no probability is below 0, so nothing is removed
            probs = scores.softmax(dim=-1)
            remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
            remove.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)  # the likeliest always stays
            scores = torch.where(remove, -float("inf"), scores)
        return scores

    def draw(self, warped: torch.Tensor) -> torch.Tensor:
        """One token per sampled row from its warped scores: where the row's uniform falls in its CDF.

        A seeded row's uniform is hashed from (seed, position); an unseeded row's comes from the global
        generator, one number per row (``torch.multinomial`` would draw one per vocabulary entry: on a
        CPU, at 50,400 entries, that is most of a step's sampling cost)."""
        f = self.flags
        probs = torch.softmax(warped, dim=-1)
        if f.seeded:
            uniform = self._seeded_uniform()
            if f.unseeded:
                uniform = torch.where(self.is_seeded, uniform, torch.rand_like(uniform))
        else:
            uniform = torch.rand(len(warped), dtype=torch.float64, device=warped.device)
        cdf = probs.cumsum(dim=-1, dtype=torch.float64)
        target = (uniform * cdf[:, -1])[:, None]  # below the row's total: never past the last token
        return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)

    def _seeded_uniform(self) -> torch.Tensor:
        """Each sampled row's uniform for this step, hashed from (seed, position). The hash runs for
        _BLOCK positions at once (a [rows, _BLOCK] block every _BLOCK steps, the same numbers): a step
        then costs one op, not the hash's sixteen."""
        if self.uniforms is None or self.steps - self.uniforms[1] >= _BLOCK:
            positions = self.generated[self.sampled][:, None] + torch.arange(_BLOCK, device=self.device)
            hashed = _mix(self.key_hash[:, None] ^ ((positions * _GOLDEN) & _MASK))
            self.uniforms = ((hashed.double() + 0.5) / 2.0**32, self.steps)
        block, start = self.uniforms
        return block[:, self.steps - start]

    def advance(self, chosen: torch.Tensor) -> None:
        """The step's tokens, counted on the device: the next step starts from here."""
        self.generated += 1
        self.steps += 1
        self.expected = [n + 1 for n in self.expected]
        if self.penalties is not None:
            self.penalties.advance(chosen)


def _upload(tables: list, widths: tuple[int, ...], sections: list[list[int]], device: torch.device):
    """One copy to the device for everything: each table as a [rows, width] float64 view, each section
    as a long vector (float64 holds every id, count and 32-bit half of a seed exactly)."""
    flat = [v for table in tables for row in table for v in row]
    for section in sections:
        flat += section
    upload = torch.tensor(flat, dtype=torch.float64)
    if device.type == "cuda":
        upload = upload.pin_memory().to(device, non_blocking=True)
    views, offset = [], 0
    for table, width in zip(tables, widths, strict=True):
        views.append(upload[offset : offset + len(table) * width].view(len(table), width))
        offset += len(table) * width
    parts = []
    for section in sections:
        parts.append(upload[offset : offset + len(section)].long())
        offset += len(section)
    return views, parts


def _carried(rows: Sequence) -> tuple[list[int], dict]:
    """The rows whose token counts must be built from their tokens, and, per earlier state, the rows
    whose counts it holds (their positions now, and there): a row that was in a batch keeps its counts
    on the device, as long as it has exactly the tokens that state counted."""
    fresh, carried = [], {}
    for i, row in enumerate(rows):
        if not _counts_tokens(row):
            continue
        old = row.state
        j = None if old is None or old.penalties is None else old.index.get(id(row))
        if j is not None and old.expected[j] == row.generated:
            now, before = carried.setdefault(old, ([], []))
            now.append(i)
            before.append(j)
        else:
            fresh.append(i)
    return fresh, carried


def _counts_tokens(row) -> bool:
    s = row.sampling
    return s.repetition_penalty not in (None, 1.0) or bool(s.presence_penalty) or bool(s.frequency_penalty)


def _row_values(row) -> list[float]:
    s = row.sampling
    repetition = 1.0 if s.repetition_penalty is None else s.repetition_penalty
    return [
        repetition,
        s.presence_penalty or 0.0,
        s.frequency_penalty or 0.0,
        row.generated,
        row.min_new,
        float(bool(s.remove_invalid_values)),
        row.tokens[0] if _counts_tokens(row) else 0,  # penalties.py: padding (plan.py: no empty prompt)
        len(row.tokens) if _counts_tokens(row) else 0,
    ]


def _sampled_values(row) -> list[float]:
    temperature, top_k, top_p = row.warp_key
    seed = row.seed or 0
    one_minus_p = 1 - top_p if top_p < 1.0 else 0.0
    min_p = row.sampling.min_p or 0.0
    return [temperature, top_k, one_minus_p, seed & _MASK, (seed >> 32) & _MASK, float(row.seed is not None), min_p]


def _stop_pairs(rows: Sequence) -> tuple[list[int], list[int]]:
    """Every row's stop token ids and the rows they belong to: what the min-length ban masks besides EOS."""
    owners = [i for i, row in enumerate(rows) for _ in row.sampling.stop_token_ids]
    return owners, [token for row in rows for token in row.sampling.stop_token_ids]


def _flags(rows: Sequence) -> _Flags:
    f = _Flags()
    for row in rows:
        s = row.sampling
        f.repetition |= s.repetition_penalty not in (None, 1.0)
        f.penalties |= bool(s.presence_penalty) or bool(s.frequency_penalty)
        f.min_length |= row.min_new > row.generated
        f.stop_ban |= row.min_new > row.generated and bool(s.stop_token_ids)
        f.invalid |= bool(s.remove_invalid_values)
        if row.scored is not None:
            f.logprobs = max(f.logprobs, s.logprobs)
        if row.warp_key is not None:
            temperature, top_k, top_p = row.warp_key
            f.sampled = True
            f.temperature |= temperature != 1.0
            f.top_k = max(f.top_k, top_k)
            f.top_p |= top_p < 1.0
            f.min_p |= bool(s.min_p)  # 0 removes nothing
            f.seeded |= row.seed is not None
            f.unseeded |= row.seed is None
    f.all_sampled = all(row.warp_key is not None for row in rows)
    return f
