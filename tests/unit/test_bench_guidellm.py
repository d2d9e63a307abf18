"""bench/guidellm.py: GuideLLM's plain command, and its report read so a table of zeros fails the run."""

from __future__ import annotations

from pathlib import Path

from bench import guidellm


def stats(median: float, total: float = 0.0, mean: float | None = None) -> dict:
    return {"successful": {"median": median, "mean": median if mean is None else mean, "total_sum": total}}


def report(successful: int, errored: int, output_tokens: float, tok_per_s: float) -> dict:
    errored_requests = [{"info": {"error": "HTTPStatusError('400 Bad Request')"}}] * errored
    return {
        "benchmarks": [
            {
                "scheduler_metrics": {"requests_made": {"successful": successful, "errored": errored, "incomplete": 0}},
                "metrics": {
                    "output_token_count": stats(0, output_tokens),
                    "output_tokens_per_second": stats(tok_per_s),
                    "time_to_first_token_ms": stats(155.0),
                    "inter_token_latency_ms": stats(73.9),
                },
                "requests": {"errored": errored_requests},
            }
        ]
    }


def test_a_whole_run_is_real_numbers():
    result = guidellm.summary(report(8, 0, 128, 10.5))
    assert (result.successful, result.output_tokens, result.ttft_ms, result.itl_ms) == (8, 128, 155.0, 73.9)
    assert result.real(requests=8, output_tokens=16)


def test_a_table_of_zeros_or_a_short_run_is_not():
    zeros = guidellm.summary(report(0, 8, 0, 0.0))  # what GuideLLM exits 0 with when every request failed
    assert not zeros.real(requests=8, output_tokens=16) and "400 Bad Request" in zeros.errors[0]
    assert not guidellm.summary(report(7, 1, 112, 9.0)).real(requests=8, output_tokens=16)
    assert not guidellm.summary(report(8, 0, 100, 9.0)).real(requests=8, output_tokens=16)  # ended early


def test_the_command_is_the_plain_one():
    argv = guidellm.command("guidellm", "http://127.0.0.1:9", Path("/m"), 8, 32, 16, Path("/o.json"))
    backend = argv[argv.index("--backend") + 1]
    # Only the completions format (GPT-J has no chat template): no validate_backend, no extras.
    assert backend == "kind=openai_http,target=http://127.0.0.1:9/openai,request_format=/v1/completions"
    assert argv.count("--backend") == 1 and "extras" not in " ".join(argv)
