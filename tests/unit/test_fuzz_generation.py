"""Property: every request that passes validation generates without error (no parameter can turn
into a 500), and every request that fails validation fails with a 400 message naming a field.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictor.core import Delta, GenerationRequest
from predictor.engine.scheduling import continuous
from predictor.errors import BadRequest
from predictor.generation.runner import Runner
from predictor.loading.loader import load
from predictor.protocols import seed
from predictor.protocols.plan import plan
from predictor.settings import Limits, parse_settings
from tests.texts import completions, searched

LIMITS = Limits(max_length=48, min_length=24)  # short generations keep the search fast


@pytest.fixture(scope="module")
def runner(tiny_dir):
    return Runner(load(parse_settings(["--model", str(tiny_dir)], {})))


def edge_floats(low, high):
    return st.one_of(
        st.sampled_from([low, high, 0.0, 1.0, -0.0, 1e-300, 1e300, -1e300, 0.5]), st.floats(low, high, allow_nan=False)
    )


def edge_ints(low, high):
    return st.one_of(st.sampled_from([low, high, 0, 1, -1, 2, 10**12]), st.integers(low, high))


FIELDS = {
    "max_length": edge_ints(1, 600),
    "min_length": edge_ints(0, 100),
    "do_sample": st.booleans(),
    "early_stopping": st.booleans(),
    "num_beams": edge_ints(1, 9),
    "temperature": edge_floats(0, 101),
    "top_k": edge_ints(0, 100_000),
    "top_p": edge_floats(0, 1.1),
    "repetition_penalty": edge_floats(0, 101),
    "length_penalty": edge_floats(-11, 11),
    "encoder_no_repeat_ngram_size": edge_ints(0, 20),
    "num_return_sequences": edge_ints(1, 9),
    "max_time": edge_floats(1e-4, 2.0),
    "num_beam_groups": edge_ints(1, 9),
    "diversity_penalty": edge_floats(0, 1001),
    "remove_invalid_values": st.booleans(),
}
requests = st.fixed_dictionaries(
    {"prompt": st.text(min_size=0, max_size=40)},
    optional={name: st.one_of(st.none(), strategy) for name, strategy in FIELDS.items()},
)


def serve(runner: Runner, request: GenerationRequest) -> list[str]:
    """Generate the way the engine does: the continuous batch without beams, generate with them."""
    if not continuous(request):
        (result,) = searched(runner, [request])
        assert not isinstance(result, Exception), result
        return [completion.text for completion in result]
    batch, results = runner.continuous(), {}
    done = batch.join([("only", request)])
    while True:
        results.update({row.index: row.tokens for row in done})
        if not batch.rows:
            deltas = [Delta(i, tuple(results[i]), finished=True, finish_reason="length") for i in sorted(results)]
            return [completion.text for completion in completions(runner, request, deltas)]
        done = batch.advance()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=requests)
def test_validated_requests_always_generate(runner, body):
    try:
        (parsed,) = seed.parse(body, 1)
        ids = tuple(runner.loaded.tokenizer.backend_tokenizer.encode(parsed.prompt).ids)
        if not ids:
            return
        sampling, _ = plan(parsed, len(ids), LIMITS)
    except BadRequest as exc:
        field = exc.message.split(":")[0]
        assert field in (*seed.FIELDS, "body"), exc.message  # names what is wrong
        return
    texts = serve(runner, GenerationRequest(parsed.prompt, ids, sampling))
    assert len(texts) == sampling.num_return_sequences
    assert all(text.startswith(parsed.prompt) for text in texts)
