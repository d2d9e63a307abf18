"""The request/response contract over HTTP, against a real ModelServer with the tiny GPT-J.

Deterministic settings are compared with plain transformers on the same weights (`reference`):
the server must produce exactly what `generate` produces.
"""

from __future__ import annotations

import pytest

SEED = "If I was a billionaire, I would"
PREDICT = "/v1/models/gptj:predict"


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "data", "message"}
    assert body["status"] == "success"
    return body


def test_the_seed_example(server, reference):
    body = ok(server.predict([{"prompt": SEED, "max_length": 50}]))
    assert body["message"] is None
    assert body["data"] == reference.generate(SEED, max_length=50)[0]
    assert body["data"].startswith(SEED) and len(body["data"]) > len(SEED)


@pytest.mark.parametrize(
    "content, content_type",
    [
        (b'[{"prompt": "If I was a billionaire, I would", "max_length": 50}]', "application/json"),
        (b'{"prompt": "If I was a billionaire, I would", "max_length": 50}', "application/json"),
        (b'{"instances": [{"prompt": "If I was a billionaire, I would", "max_length": 50}]}', "application/json"),
        (b'[{"prompt": "If I was a billionaire, I would", "max_length": 50}]', "application/json; charset=utf-8"),
        (b'[{"prompt": "If I was a billionaire, I would", "max_length": 50}]', "application/x-www-form-urlencoded"),
        (b'[{"prompt": "If I was a billionaire, I would", "max_length": 50}]', "text/plain"),
        (b'[{"prompt": "If I was a billionaire, I would", "max_length": 50}]', None),
    ],
)
def test_every_body_form_gives_the_same_answer(server, reference, content, content_type):
    headers = {"content-type": content_type} if content_type else {}
    body = ok(server.client.post(PREDICT, content=content, headers=headers))
    assert body["data"] == reference.generate(SEED, max_length=50)[0]


def test_a_prompt_alone_gets_the_default_continuation(server, reference):
    body = ok(server.predict({"prompt": SEED}))
    default = reference.tokens(SEED) + 50  # documented default: 50 new tokens
    assert body["data"] == reference.generate(SEED, max_length=default)[0]
    assert len(body["data"]) > len(SEED)


@pytest.mark.parametrize(
    "params",
    [
        {"max_length": 20},
        {"max_length": 40, "num_beams": 4},
        {"max_length": 40, "num_beams": 3, "num_return_sequences": 3},
        {"max_length": 40, "num_beams": 3, "early_stopping": True, "length_penalty": -2.0},
        {"max_length": 40, "repetition_penalty": 2.0},
        {"max_length": 40, "encoder_no_repeat_ngram_size": 1},
        {"max_length": 40, "remove_invalid_values": True},
        {"max_length": 40, "do_sample": True, "top_k": 1},  # sampling from one candidate is greedy
    ],
)
def test_parameters_reach_transformers(server, reference, params):
    body = ok(server.predict([{"prompt": SEED, **params}]))
    expected = reference.generate(SEED, **params)
    assert body["data"] == (expected if len(expected) > 1 else expected[0])


def test_parameters_change_the_output(server):
    # The random model's greedy text falls into a loop; continuing it repeats the prompt's n-grams,
    # which is what the penalties forbid.
    looping = ok(server.predict({"prompt": SEED, "max_length": 60}))["data"]
    plain = ok(server.predict({"prompt": looping, "max_length": 100}))["data"]
    for params in ({"repetition_penalty": 3.0}, {"encoder_no_repeat_ngram_size": 2}, {"num_beams": 4}):
        assert ok(server.predict({"prompt": looping, "max_length": 100, **params}))["data"] != plain, params


def test_sampling_varies_and_greedy_does_not(server):
    sampled = {ok(server.predict({"prompt": SEED, "max_length": 60, "do_sample": True}))["data"] for _ in range(3)}
    greedy = {ok(server.predict({"prompt": SEED, "max_length": 60}))["data"] for _ in range(3)}
    assert len(sampled) == 3 and len(greedy) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"do_sample": True, "top_p": 0.0},  # the nucleus shrinks to the top token
        {"temperature": 0, "do_sample": True},  # the contract: temperature 0 means greedy
        {"temperature": 0},
    ],
)
def test_greedy_equivalents(server, params):
    greedy = ok(server.predict({"prompt": SEED, "max_length": 60}))["data"]
    assert ok(server.predict({"prompt": SEED, "max_length": 60, **params}))["data"] == greedy


def test_sampled_sequences_and_temperature(server):
    body = ok(
        server.predict(
            {
                "prompt": SEED,
                "max_length": 40,
                "do_sample": True,
                "temperature": 1.5,
                "top_k": 20,
                "top_p": 0.95,
                "num_return_sequences": 3,
            }
        )
    )
    assert isinstance(body["data"], list) and len(body["data"]) == 3
    assert all(text.startswith(SEED) for text in body["data"])


def test_max_time_stops_generation_early(server, reference):
    full = reference.generate(SEED, max_length=512)[0]
    body = ok(server.predict({"prompt": SEED, "max_length": 512, "max_time": 0.05}))
    assert full.startswith(body["data"]) and len(SEED) < len(body["data"]) < len(full)


def test_diverse_beam_search_returns_diverse_beams(server):
    request = {"prompt": SEED, "max_length": 30, "num_beams": 4, "num_beam_groups": 4, "num_return_sequences": 4}
    same = ok(server.predict({**request, "diversity_penalty": 0.0}))["data"]
    diverse = ok(server.predict({**request, "diversity_penalty": 10.0}))["data"]
    assert len(set(same)) == 1  # without the penalty every group finds the same beam
    assert len(set(diverse)) == 4 and all(text.startswith(SEED) for text in diverse)


def test_over_limit_values_are_capped_and_reported(server, reference):
    body = ok(server.predict([{"prompt": SEED, "max_length": 2000, "min_length": 100}]))
    assert body["data"] == reference.generate(SEED, max_length=512, min_length=64)[0]
    assert "max_length 2000 is over the limit of 512; capped to 512" in body["message"]
    assert "min_length 100 is over the limit of 64; capped to 64" in body["message"]


def test_ignored_values_are_reported(server):
    body = ok(server.predict({"prompt": SEED, "max_length": 20, "temperature": 0.7, "length_penalty": 2.0}))
    assert "temperature only applies with do_sample: true; ignored" in body["message"]
    assert "length_penalty only applies with num_beams > 1; ignored" in body["message"]


def test_several_prompts_come_back_in_order(server):
    prompts = ["The weather was", "Kubernetes runs", "She opened the book"]
    alone = [ok(server.predict({"prompt": p, "max_length": 20}))["data"] for p in prompts]
    together = ok(server.predict([{"prompt": p, "max_length": 20} for p in prompts]))["data"]
    assert together == alone


def test_several_prompts_times_several_sequences(server):
    body = ok(
        server.predict(
            [
                {"prompt": "The weather was", "max_length": 20, "num_beams": 2, "num_return_sequences": 2},
                {
                    "prompt": "Kubernetes runs",
                    "max_length": 20,
                    "max_time": 5.0,
                    "num_beams": 3,
                    "num_return_sequences": 3,
                },
                {"prompt": "She opened", "max_length": 600},
            ]
        )
    )
    first, second, third = body["data"]
    assert len(first) == 2 and len(second) == 3 and isinstance(third, str)
    assert all(t.startswith("The weather was") for t in first) and third.startswith("She opened")
    assert body["message"] == "[2].max_length 600 is over the limit of 512; capped to 512"


def test_prompt_comes_back_verbatim(server):
    prompt = "Unicode \u00e9t\u00e9 \U0001f642, a literal <|endoftext|>, and   spaces ."
    data = ok(server.predict({"prompt": prompt, "max_length": 60}))["data"]
    assert data.startswith(prompt) and len(data) > len(prompt)


@pytest.fixture(scope="module")
def eos_server(eos_dir, cache_dir, tmp_path_factory):
    """A server whose model ends every continuation with EOS as early as it may."""
    from .server import ready_server

    with ready_server(eos_dir, cache_dir, tmp_path_factory.mktemp("eos") / "log") as s:
        yield s


def test_min_length_holds_off_eos_and_special_tokens_are_removed(eos_server):
    prompt_tokens = 8
    prompt = "If I was a billionaire"
    stops_at_once = ok(eos_server.predict({"prompt": prompt, "max_length": 40}))["data"]
    held_off = ok(eos_server.predict({"prompt": prompt, "max_length": 40, "min_length": prompt_tokens + 20}))["data"]
    assert stops_at_once == prompt  # EOS first, and EOS is not part of the text
    assert held_off.startswith(prompt) and len(held_off) > len(prompt)
    assert "<|endoftext|>" not in held_off


def test_beam_search_with_eos_and_early_stopping(eos_server):
    body = ok(
        eos_server.predict(
            {
                "prompt": "If I was",
                "max_length": 30,
                "min_length": 12,
                "num_beams": 3,
                "num_return_sequences": 3,
                "early_stopping": True,
                "length_penalty": 1.5,
            }
        )
    )
    assert len(body["data"]) == 3 and all("<|endoftext|>" not in text for text in body["data"])


def test_max_new_tokens_counts_new_tokens_only(server, reference):
    prompt_tokens = len(reference.tokenizer(SEED).input_ids)
    body = ok(server.predict({"prompt": SEED, "max_new_tokens": 7, "details": True}))
    assert body["data"]["generated_tokens"] == 7 and body["data"]["prompt_tokens"] == prompt_tokens
    assert body["data"]["text"] == reference.generate(SEED, max_length=prompt_tokens + 7)[0]


def test_a_seed_gives_the_same_text_even_among_other_requests(server):
    from concurrent.futures import ThreadPoolExecutor

    seeded = {"prompt": SEED, "max_new_tokens": 30, "do_sample": True, "seed": 2024}
    alone = ok(server.predict(seeded))["data"]
    with ThreadPoolExecutor(4) as pool:
        crowd = [
            pool.submit(server.predict, {"prompt": f"noise {i}", "max_new_tokens": 40, "do_sample": True})
            for i in range(3)
        ]
        together = pool.submit(server.predict, seeded)
        assert all(ok(f.result()) for f in crowd)
    assert ok(together.result())["data"] == alone
    assert ok(server.predict({**seeded, "seed": 2025}))["data"] != alone


def test_stop_strings_end_the_text_and_details_say_why(server):
    text = ok(server.predict({"prompt": SEED, "max_new_tokens": 40}))["data"][len(SEED) :]
    stop = text[20:23]
    body = ok(
        server.predict(
            [
                {"prompt": SEED, "max_new_tokens": 40, "stop": [stop], "details": True},
                {"prompt": SEED, "max_new_tokens": 40, "num_beams": 2, "stop": stop},
            ]
        )
    )
    continuous, beams = body["data"]
    assert continuous["text"] == SEED + text[: text.index(stop)] and continuous["finish_reason"] == "stop"
    assert continuous["generated_tokens"] < 40
    assert stop not in beams[len(SEED) :]  # beam search cuts its texts the same way
