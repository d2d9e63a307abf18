"""What the engine runs, on /metrics and in the start-up log: a silent fallback must be visible.

On a CPU the default is the dynamic path; `--decode_path static` there runs the static cache without
CUDA graphs, which is what a GPU whose graph capture failed falls back to: the path says "static",
not "graphs".
"""

from __future__ import annotations

import re

from .server import metrics


def decode_info(server) -> list[dict[str, str]]:
    """The labels of every gptj_decode_info sample whose value is 1."""
    found = []
    for line in server.client.get("/metrics").text.splitlines():
        if match := re.match(r"^gptj_decode_info\{(.*)\} 1\.0$", line):
            found.append(dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))))
    return found


def test_the_dynamic_path_is_reported_on_metrics_and_in_the_log(server):
    (info,) = decode_info(server)
    assert info == {
        "path": "dynamic",
        "cuda_graphs": "0",
        "attention": "sdpa",  # transformers 5.24's pick for GPT-J under --attn_implementation auto
        "dtype": "float32",
        "kv_rows": "32",  # --max_batch_size's default: rows the dynamic batch admits
        "kv_tokens_per_row": "512",  # --max_length_limit's default
        "decode_attention": "-",  # the static step's kernel; the dynamic path runs transformers' attention
    }
    assert metrics(server)["gptj_kv_cache_reserved_bytes"] == 0  # the dynamic cache grows per step
    assert "the engine runs: path dynamic, cuda_graphs 0, attention sdpa, dtype float32" in server.log()


def test_the_static_path_without_graphs_says_static_and_what_it_reserved(start_server, tiny_dir, cache_dir):
    s = start_server(
        ["--model", str(tiny_dir), "--cache_dir", str(cache_dir), "--decode_path", "static"]
        + ["--max_batch_size", "2", "--max_return_sequences", "2", "--max_length_limit", "128"]
        + ["--attn_implementation", "eager"]
    )
    (info,) = decode_info(s)
    assert info == {
        "path": "static",
        "cuda_graphs": "0",
        "attention": "eager",
        "dtype": "float32",
        "kv_rows": "2",
        "kv_tokens_per_row": "128",
        "decode_attention": "row_spans",  # eager: each run of rows over its own span
    }
    # key and value, 2 layers x 64 wide in float32, for 2 rows x 128 tokens
    assert metrics(s)["gptj_kv_cache_reserved_bytes"] == 2 * 128 * (2 * 2 * 64 * 4)
    assert metrics(s)["gptj_kv_cache_tokens"] == 2 * 128
    assert "decode path: static, KV cache 2 rows x 128 tokens (0.0 GiB), attention row_spans" in s.log()
