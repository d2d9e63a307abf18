"""Our half of scripts/golden-fixtures.sh: the table of requests, and the fixture file it writes.

  python scripts/golden_cases.py prepare WORK   build the tiny model into WORK, write WORK/job.json
  python scripts/golden_cases.py write WORK     merge WORK/reference.json into tests/fixtures/golden.json

Runs in the project's venv (transformers 5): the model the tests build must be the very model the
reference ran, so we build it (predictor/loading/tiny.py) and the reference only loads it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from predictor.loading import tiny  # noqa: E402
from tests.golden import FIXTURE, weights_digest  # noqa: E402

# The tiny GPT-J with EOS allowed and biased to be about as likely as the best few tokens: beams end at
# different steps, so finished hypotheses, early stopping, length penalty and min_length all matter.
SPEC = tiny.TinySpec(printable_only=False, eos_bias=0.25)

PROMPTS = (
    "If I was a billionaire, I would",
    "The weather was",
    "Kubernetes runs containers on a cluster of machines, and",
    "She opened the book",
)

# Diverse beam search: (num_beams, num_beam_groups, diversity_penalty, num_return_sequences, extra).
_DIVERSE = (
    (2, 2, 0.5, 1, {}),
    (2, 2, 1.5, 2, {}),
    (2, 2, 0.5, 2, {"length_penalty": 2.0}),
    (4, 2, 0.5, 4, {}),
    (4, 2, 1.5, 2, {}),
    (4, 2, 1.5, 3, {"early_stopping": True}),
    (4, 2, 0.5, 1, {"length_penalty": -1.0}),
    (4, 2, 2.0, 4, {"min_length": 30}),
    (4, 4, 0.5, 4, {}),
    (4, 4, 1.5, 2, {}),
    (4, 4, 0.25, 3, {"repetition_penalty": 1.5}),
    (4, 4, 1.0, 4, {"early_stopping": True, "length_penalty": 0.5}),
    (6, 2, 0.5, 6, {}),
    (6, 2, 1.5, 3, {"length_penalty": 0.0}),
    (6, 2, 1.0, 4, {"repetition_penalty": 1.3}),
    (6, 3, 0.5, 6, {}),
    (6, 3, 1.5, 2, {"early_stopping": True}),
    (6, 3, 3.0, 5, {"min_length": 20}),
    (6, 3, 0.75, 6, {"length_penalty": 2.0, "early_stopping": True}),
    (8, 2, 0.5, 8, {}),
    (8, 2, 1.5, 4, {"early_stopping": True}),
    (8, 2, 1.0, 2, {"length_penalty": -2.0}),
    (8, 4, 0.5, 8, {}),
    (8, 4, 1.5, 3, {}),
    (8, 4, 2.5, 8, {"repetition_penalty": 2.0}),
    (8, 4, 1.0, 6, {"min_length": 28, "length_penalty": 1.5}),
    (8, 4, 0.5, 4, {"early_stopping": True, "repetition_penalty": 0.8}),
    (3, 3, 0.5, 3, {}),
    (3, 3, 1.5, 1, {"early_stopping": True}),
    (2, 2, 1.0, 2, {"remove_invalid_values": True, "min_length": 20}),
    (6, 2, 0.3, 2, {"early_stopping": True, "length_penalty": 3.0, "min_length": 22}),
    (8, 2, 5.0, 8, {"length_penalty": 0.7, "repetition_penalty": 1.2}),
    (4, 2, 10.0, 4, {}),
    (6, 3, 0.1, 3, {"repetition_penalty": 3.0, "early_stopping": True}),
)

# Everything else that is deterministic: greedy, beams, penalties, min_length.
_OTHER = (
    {},
    {"min_length": 30},
    {"repetition_penalty": 1.5},
    {"repetition_penalty": 0.7, "min_length": 24},
    {"remove_invalid_values": True},
    {"encoder_no_repeat_ngram_size": 1},
    {"encoder_no_repeat_ngram_size": 2},
    {"num_beams": 2},
    {"num_beams": 4, "num_return_sequences": 4},
    {"num_beams": 3, "length_penalty": 2.0},
    {"num_beams": 5, "num_return_sequences": 2, "early_stopping": True},
    {"num_beams": 4, "length_penalty": -1.0, "num_return_sequences": 3},
    {"num_beams": 8, "num_return_sequences": 8, "min_length": 30},
    {"num_beams": 4, "repetition_penalty": 1.3, "num_return_sequences": 2},
    {"num_beams": 6, "early_stopping": True, "length_penalty": 0.5, "min_length": 20},
    {"num_beams": 2, "encoder_no_repeat_ngram_size": 2, "num_return_sequences": 2},
)


def cases(tokens: Callable[[str], int]) -> list[dict]:
    """Every case: a name and one request object of the seed contract (prompt + parameters).

    ``tokens`` counts a prompt's tokens. Every beam search also runs on a second prompt of another
    length with the same number of new tokens (a "twin"): the server batches the two, left-padded.
    """
    table = [
        (
            "diverse",
            i,
            {
                "num_beams": beams,
                "num_beam_groups": groups,
                "diversity_penalty": penalty,
                "num_return_sequences": n,
                **extra,
            },
        )
        for i, (beams, groups, penalty, n, extra) in enumerate(_DIVERSE)
    ]
    table += [("other", i, params) for i, params in enumerate(_OTHER)]
    out = []
    for kind, i, params in table:
        prompt = PROMPTS[i % len(PROMPTS)]
        max_length = 24 + (i * 7) % 17  # 24 ... 40 tokens in all
        out.append({"name": f"{kind}-{i:02d}", "request": {"prompt": prompt, "max_length": max_length, **params}})
        if params.get("num_beams", 1) > 1:
            twin = PROMPTS[(i + 1) % len(PROMPTS)]
            shift = tokens(twin) - tokens(prompt)  # same new tokens, and the same minimum of them
            lengths = {k: params[k] + shift for k in ("min_length",) if k in params}
            out.append(
                {
                    "name": f"{kind}-{i:02d}-twin",
                    "request": {"prompt": twin, **params, "max_length": max_length + shift, **lengths},
                }
            )
    return out


def prepare(work: Path) -> None:
    from transformers import AutoTokenizer

    model_dir = tiny.ensure(work / "cache", SPEC)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    job = {"model_dir": str(model_dir), "cases": []}
    for case in cases(lambda prompt: len(tokenizer(prompt).input_ids)):
        request = case["request"]
        generate = {k: v for k, v in request.items() if k != "prompt"}
        job["cases"].append(
            {
                "name": case["name"],
                "prompt": request["prompt"],
                "generate": generate,
                "prompt_ids": tokenizer(request["prompt"]).input_ids,
            }
        )
    (work / "job.json").write_text(json.dumps(job))


def write(work: Path) -> None:
    job = json.loads((work / "job.json").read_text())
    reference = json.loads((work / "reference.json").read_text())
    fixture = {
        "about": "Written by scripts/golden-fixtures.sh (do not edit): transformers 4.x generate on the tiny GPT-J",
        "reference": reference["reference"],
        "model": {"spec": asdict(SPEC), "weights_sha256": weights_digest(Path(job["model_dir"]))},
        "cases": [
            {
                "name": case["name"],
                "request": {"prompt": case["prompt"], **case["generate"]},
                "prompt_ids": case["prompt_ids"],
                "expected": reference["results"][case["name"]],
            }
            for case in job["cases"]
        ],
    }
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fixture, indent=1, ensure_ascii=False)
    text = re.sub(r"\[[-\d,\s]*\]", lambda m: re.sub(r"\s+", "", m.group()).replace(",", ", "), text)  # ids on one line
    FIXTURE.write_text(text + "\n")
    print(f"wrote {len(fixture['cases'])} cases to {FIXTURE.relative_to(ROOT)}")


if __name__ == "__main__":
    command, work = sys.argv[1], Path(sys.argv[2])
    {"prepare": prepare, "write": write}[command](work)
