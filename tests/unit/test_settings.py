"""Settings from flags and environment: precedence, validation, defaults."""

from __future__ import annotations

import pytest

from predictor import settings as settings_module
from predictor.settings import Limits, parse_settings


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_module, "KSERVE_MOUNT", tmp_path / "absent")
    s = parse_settings([], {"HOME": "/home/someone"})
    assert s.model_name == "gptj" and s.model == "tiny" and s.dtype == "auto"
    assert s.limits == Limits()
    assert str(s.cache_dir) == "/home/someone/.cache/gptj-predictor"
    assert s.server.http_port == 8080 and s.server.workers == 1
    assert s.server.enable_grpc is False  # HTTP only, unless the image's GPTJ_ENABLE_GRPC says otherwise


def test_grpc_is_on_where_the_environment_says_so_and_a_flag_wins():
    assert parse_settings([], {"GPTJ_ENABLE_GRPC": "true"}).server.enable_grpc is True
    assert parse_settings(["--enable_grpc", "false"], {"GPTJ_ENABLE_GRPC": "true"}).server.enable_grpc is False


def test_device_is_its_own_flag_not_a_prefix_of_device_map():
    s = parse_settings(["--device", "cuda"], {})
    assert (s.device, s.device_map) == ("cuda", "auto")
    assert parse_settings([], {}).device == "auto"
    s = parse_settings([], {"GPTJ_DEVICE": "cpu", "GPTJ_DEVICE_MAP": "sequential"})
    assert (s.device, s.device_map) == ("cpu", "sequential")


def test_kserve_mount_is_the_default_model_when_it_exists(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_module, "KSERVE_MOUNT", tmp_path)
    assert parse_settings([], {}).model == str(tmp_path)


def test_environment_then_flags(monkeypatch, tmp_path):
    env = {
        "GPTJ_MODEL": "/models/a",
        "GPTJ_MAX_LENGTH_LIMIT": "256",
        "GPTJ_DTYPE": "bfloat16",
        "GPTJ_MAX_BODY_BYTES": "2048",
        "GPTJ_CACHE_DIR": str(tmp_path),
    }
    s = parse_settings([], env)
    assert (s.model, s.limits.max_length, s.dtype, s.limits.max_body_bytes) == ("/models/a", 256, "bfloat16", 2048)
    assert s.cache_dir == tmp_path
    s = parse_settings(["--model", "/models/b", "--max_length_limit", "128"], env)
    assert (s.model, s.limits.max_length) == ("/models/b", 128)  # a flag wins over the variable


def test_every_limit_has_a_flag():
    s = parse_settings(
        [
            "--max_length_limit",
            "300",
            "--min_length_limit",
            "10",
            "--default_new_tokens",
            "7",
            "--max_num_beams",
            "3",
            "--max_return_sequences",
            "2",
            "--max_prompts",
            "5",
            "--max_body_bytes",
            "999",
        ],
        {},
    )
    assert s.limits == Limits(300, 10, 7, 3, 2, 5, 999)


def test_lowering_the_max_length_limit_alone_is_enough():
    limits = parse_settings(["--max_length_limit", "40"], {}).limits
    assert (limits.max_length, limits.min_length, limits.default_new_tokens) == (40, 40, 50)


def test_api_keys_and_the_stall_bound():
    s = parse_settings([], {})
    assert s.operations.api_keys_file is None and s.operations.engine_stall_s == 120  # no auth by default
    s = parse_settings([], {"GPTJ_API_KEYS_FILE": "/etc/gptj/auth/keys", "GPTJ_ENGINE_STALL_SECONDS": "30"})
    assert str(s.operations.api_keys_file) == "/etc/gptj/auth/keys" and s.operations.engine_stall_s == 30
    s = parse_settings(["--api_keys_file", "", "--engine_stall_seconds", "2.5"], {"GPTJ_API_KEYS_FILE": "/k"})
    assert s.operations.api_keys_file is None and s.operations.engine_stall_s == 2.5


def test_the_prefill_chunk_from_the_environment_and_a_flag():
    assert parse_settings([], {}).batch.max_prefill_tokens == 256
    assert parse_settings([], {"GPTJ_MAX_PREFILL_TOKENS": "64"}).batch.max_prefill_tokens == 64
    assert (
        parse_settings(["--max_prefill_tokens", "32"], {"GPTJ_MAX_PREFILL_TOKENS": "64"}).batch.max_prefill_tokens == 32
    )


def test_kserve_flags_pass_through():
    s = parse_settings(["--http_port", "9000", "--model_name", "other", "--enable_docs_url", "true"], {})
    assert (s.server.http_port, s.model_name, s.server.enable_docs_url) == (9000, "other", True)


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--max_length_limit", "0"], {}, "argument --max_length_limit: must be >= 1 (got 0)"),
        (["--max_length_limit", "lots"], {}, "argument --max_length_limit"),
        (["--dtype", "int4"], {}, "must be one of auto, float16, bfloat16, float32 (got 'int4')"),
        ([], {"GPTJ_MAX_PROMPTS": "-3"}, "environment variable GPTJ_MAX_PROMPTS: must be >= 1 (got -3)"),
        (["--workers", "2"], {}, "--workers must be 1"),
        (["--engine_stall_seconds", "0"], {}, "argument --engine_stall_seconds: must be between 1 and 86400 seconds"),
        (["--device", "gpu"], {}, "argument --device: must be one of auto, cuda, cpu (got 'gpu')"),
        ([], {"GPTJ_DEVICE": "GPU"}, "environment variable GPTJ_DEVICE: must be one of auto, cuda, cpu"),
        # Never a prefix of another flag: `--max_batch 4` used to set --max_batch_size (or _tokens).
        (["--max_batch", "4"], {}, "unrecognized arguments: --max_batch 4"),
        (["--dev", "cuda"], {}, "unrecognized arguments: --dev cuda"),
        (["--http_p", "9000"], {}, "unrecognized arguments: --http_p 9000"),  # KServe's flags too
        (["--max_prefill_tokens", "0"], {}, "argument --max_prefill_tokens: must be >= 1 (got 0)"),
        (["--max_prefill_tokens", "half"], {}, "argument --max_prefill_tokens: invalid"),
        ([], {"GPTJ_MAX_PREFILL_TOKENS": "-1"}, "environment variable GPTJ_MAX_PREFILL_TOKENS: must be >= 1 (got -1)"),
        (["--max_batch_size", "0"], {}, "argument --max_batch_size: must be auto or >= 1 (got 0)"),
        ([], {"GPTJ_MAX_BATCH_SIZE": "lots"}, "GPTJ_MAX_BATCH_SIZE: must be auto or a number (got 'lots')"),
    ],
)
def test_invalid_settings_exit_with_a_message(argv, env, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, env)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
