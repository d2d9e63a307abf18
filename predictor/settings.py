"""Settings: parsed once in ``main()`` from flags and environment variables, then frozen.

Every option is a flag (KServe's own flags work too, its parser is our parent) and, for the ones
that are ours, an environment variable; a flag wins over the variable, the variable over the
default. Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from predictor.values import boolean as _bool
from predictor.values import choice as _choice
from predictor.values import number as _number
from predictor.values import or_auto as _or_auto

#: Where KServe's storage initializer puts a model given by ``storageUri``.
KSERVE_MOUNT = Path("/mnt/models")
DTYPES = ("auto", "float16", "bfloat16", "float32")
DEVICES = ("auto", "cuda", "cpu")  # predictor/loading/device.py says what each one promises


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (deployment settings)."""

    max_length: int = 512  # cap on max_length: prompt + new tokens
    min_length: int = 64  # cap on min_length
    default_new_tokens: int = 50  # new tokens when a request gives no max_length
    max_num_beams: int = 8
    max_return_sequences: int = 8
    max_prompts: int = 16  # request objects in one body
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True)
class BatchPolicy:
    """How the engine forms batches (deployment settings; the defaults suit one GPU)."""

    max_batch_size: int = 32  # requests (prompts) per generate call
    # --max_batch_size auto: the static path's cache sets the bound (generation/capacity.py); 32 elsewhere
    auto_batch_size: bool = False
    max_batch_tokens: int = 16384  # rows x (longest prompt + most new tokens): bounds KV-cache memory
    # An idle engine starts once no request has arrived for batch_wait_s, or max_batch_wait_s after
    # the first: a burst that arrives within milliseconds shares one prefill. Later arrivals join the
    # running batch at the next step anyway, so the wait stays short (it adds to time to first token).
    batch_wait_s: float = 0.002
    max_batch_wait_s: float = 0.01
    # A step prefills at most this many prompt tokens (a longer prompt joins in chunks, one per step,
    # between the running rows' decode steps: generation/prefill.py). 256 costs about one decode step
    # of a full batch on the CPU bench model (docs/performance.md, "Chunked prefill").
    max_prefill_tokens: int = 256
    # The continuous batch's cache is allocated up front (the static path, generation/paths.py): rows alone
    # bound it, and max_batch_tokens is left to beam search, whose cache still grows.
    preallocated: bool = False


@dataclass(frozen=True)
class Speed:
    """How generation runs on a GPU (generation/static.py); each part can be turned off."""

    decode_path: str = "auto"  # auto: static (preallocated cache, generation/static.py) on one GPU, else dynamic
    cuda_graphs: bool = True  # replay the static path's decode step as CUDA graphs
    kv_cache_memory_fraction: float = 0.92  # share of the GPU memory free after loading: cache + prefill room
    attn_implementation: str = "auto"  # transformers' attention for prefill and beam search (auto: its pick)
    cpu_kernels: str = "auto"  # on CPU: linears as oneDNN-packed matmuls (loading/kernels.py); plain: off


@dataclass(frozen=True)
class Operations:
    """How the server behaves under load, failure and shutdown (deployment settings)."""

    max_queued_requests: int = 256  # prompts waiting for the batch; more get 429 with Retry-After
    request_timeout_s: float | None = 300.0  # arrival to answer; None: no limit
    drain_timeout_s: float = 30.0  # SIGTERM: longest wait for in-flight requests before exiting
    log_prompts: bool = False  # prompts and outputs in the per-request log line
    fault_injection: bool = False  # [[fault:...]] markers in a prompt inject failures (faults.py)
    # A step (a prefill, a decode step, a beam-search token) running longer than this means the engine
    # is stuck: liveness turns 503. The longest legitimate step is a prefill of a full batch, well under
    # 10 s on a GPU (CUDA graphs are captured while loading, before the engine starts); 120 s leaves
    # room for slow GPUs and the first steps' lazy initialisation. Raise it for a large model on a CPU.
    engine_stall_s: float = 120.0
    api_keys_file: Path | None = None  # accepted API keys, one per line (edge/auth.py); None: no auth
    # Longest wait for a structured-output grammar to compile (edge/structured.py): past it a 400.
    structured_compile_timeout_s: float = 10.0


@dataclass(frozen=True)
class Settings:
    """Everything the predictor needs, validated."""

    model_name: str
    model: str  # "tiny", a local directory, /mnt/models, or a Hugging Face hub id
    dtype: str
    device: str  # auto: CUDA when usable, else the CPU; cuda: CUDA or exit; cpu: the CPU
    device_map: str
    cache_dir: Path
    limits: Limits
    batch: BatchPolicy
    operations: Operations
    speed: Speed
    server: argparse.Namespace  # KServe's ModelServer flags, passed through untouched


_positive = _number(int, 1)
_non_negative = _number(int, 0)
_milliseconds = _number(float, 0, 10_000, unit=" ms")
_seconds = _number(float, 0, 86_400, unit=" seconds")
_stall_seconds = _number(float, 1, 86_400, unit=" seconds")
_fraction = _number(float, 0, 1, above=True)
_compile_seconds = _number(float, 0, 600, above=True)


def _default_cache_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "/tmp")) / ".cache")
    return str(Path(base) / "gptj-predictor")


# (flag, env var, parse, default or a function of the environment, help)
_Option = tuple[str, str, Callable[[str], Any], Any, str]
# One option per row: the table reads as data, so the formatter leaves it as written.
# fmt: off
_OPTIONS: tuple[_Option, ...] = (
    ("model", "GPTJ_MODEL", str, None,
     "model source: 'tiny' (embedded random GPT-J), a local directory, or a Hugging Face hub id; "
     f"default: {KSERVE_MOUNT} when it exists, else 'tiny'"),
    ("dtype", "GPTJ_DTYPE", _choice(*DTYPES), "auto", "weights dtype: auto = float16 on CUDA, float32 on CPU"),
    ("device", "GPTJ_DEVICE", _choice(*DEVICES), "auto",
     "auto: CUDA when usable, else the CPU; cuda: exit at start-up unless the weights fit on the GPU(s), "
     "never offloading to the CPU; cpu: the CPU even where a GPU is visible"),
    ("device_map", "GPTJ_DEVICE_MAP", str, "auto",
     "accelerate device_map on CUDA ('auto' spreads layers over every visible GPU)"),
    ("cache_dir", "GPTJ_CACHE_DIR", str, _default_cache_dir, "where the tiny model is built once"),
    ("max_length_limit", "GPTJ_MAX_LENGTH_LIMIT", _positive, Limits.max_length,
     "cap on max_length (prompt + new tokens)"),
    ("min_length_limit", "GPTJ_MIN_LENGTH_LIMIT", _non_negative, Limits.min_length, "cap on min_length"),
    ("default_new_tokens", "GPTJ_DEFAULT_NEW_TOKENS", _positive, Limits.default_new_tokens,
     "new tokens generated when a request gives no max_length"),
    ("max_num_beams", "GPTJ_MAX_NUM_BEAMS", _positive, Limits.max_num_beams, "largest num_beams"),
    ("max_return_sequences", "GPTJ_MAX_RETURN_SEQUENCES", _positive, Limits.max_return_sequences,
     "largest num_return_sequences"),
    ("max_prompts", "GPTJ_MAX_PROMPTS", _positive, Limits.max_prompts, "request objects per body"),
    ("max_body_bytes", "GPTJ_MAX_BODY_BYTES", _positive, Limits.max_body_bytes,
     "largest request body in bytes (413 above)"),
    ("max_batch_size", "GPTJ_MAX_BATCH_SIZE", _or_auto(_positive), "auto",
     "most sequences generated together; auto: as many as the KV cache holds on the static path, else 32"),
    ("max_batch_tokens", "GPTJ_MAX_BATCH_TOKENS", _positive, BatchPolicy.max_batch_tokens,
     "most tokens in a batch: rows x (longest prompt + most new tokens)"),
    ("batch_wait_ms", "GPTJ_BATCH_WAIT_MS", _milliseconds, BatchPolicy.batch_wait_s * 1000,
     "start a batch once no request has arrived for this long"),
    ("max_batch_wait_ms", "GPTJ_MAX_BATCH_WAIT_MS", _milliseconds, BatchPolicy.max_batch_wait_s * 1000,
     "start a batch at the latest this long after its oldest request arrived"),
    ("max_prefill_tokens", "GPTJ_MAX_PREFILL_TOKENS", _positive, BatchPolicy.max_prefill_tokens,
     "most prompt tokens prefilled in one step; a longer prompt is prefilled in chunks between decode steps"),
    ("max_queued_requests", "GPTJ_MAX_QUEUED_REQUESTS", _positive, Operations.max_queued_requests,
     "prompts that may wait for the batch; more get 429 with Retry-After"),
    ("request_timeout_seconds", "GPTJ_REQUEST_TIMEOUT_SECONDS", _seconds, Operations.request_timeout_s,
     "a request not answered this long after it arrived is stopped and gets 504 (0: no limit)"),
    ("drain_timeout_seconds", "GPTJ_DRAIN_TIMEOUT_SECONDS", _seconds, Operations.drain_timeout_s,
     "on SIGTERM, wait at most this long for in-flight requests (keep below terminationGracePeriodSeconds)"),
    ("log_prompts", "GPTJ_LOG_PROMPTS", _bool, Operations.log_prompts,
     "put prompts and outputs in the per-request log line"),
    ("fault_injection", "GPTJ_FAULT_INJECTION", _bool, Operations.fault_injection,
     ("for failure testing: [[fault:oom]], [[fault:error]], [[fault:fatal]], [[fault:stall]] or "
      "[[fault:device]] in a prompt injects that failure")),
    ("engine_stall_seconds", "GPTJ_ENGINE_STALL_SECONDS", _stall_seconds, Operations.engine_stall_s,
     "a generation step running longer than this marks the engine failed: liveness answers 503"),
    ("api_keys_file", "GPTJ_API_KEYS_FILE", str, "",
     ("file of accepted API keys, one per line (clients send Authorization: Bearer <key>); "
      "re-read when it changes; empty: no authentication")),
    ("structured_compile_timeout", "GPTJ_STRUCTURED_COMPILE_TIMEOUT", _compile_seconds,
     Operations.structured_compile_timeout_s,
     "seconds a structured-output grammar (JSON schema, regex, choice, grammar) may take to compile; longer: 400"),
    ("decode_path", "GPTJ_DECODE_PATH", _choice("auto", "static", "dynamic"), Speed.decode_path,
     "auto: a preallocated KV cache (static) on one GPU, a growing one (dynamic) elsewhere"),
    ("cuda_graphs", "GPTJ_CUDA_GRAPHS", _bool, Speed.cuda_graphs,
     "replay the static path's decode step as CUDA graphs"),
    ("kv_cache_memory_fraction", "GPTJ_KV_CACHE_MEMORY_FRACTION", _fraction, Speed.kv_cache_memory_fraction,
     "share of the GPU memory free after loading that the static KV cache and its prefill room may take"),
    ("attn_implementation", "GPTJ_ATTN_IMPLEMENTATION", _choice("auto", "sdpa", "eager"), Speed.attn_implementation,
     "transformers' attention for prefill and beam search (auto: sdpa where the installed transformers has it)"),
    ("cpu_kernels", "GPTJ_CPU_KERNELS", _choice("auto", "packed", "plain"), Speed.cpu_kernels,
     "on CPU, the linears as oneDNN matmuls over weights packed at load (auto, packed), or PyTorch's plain ones"),
)
# fmt: on


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Our flags on top of KServe's ModelServer flags, with defaults taken from ``environ``."""
    from kserve.model_server import (
        parser as kserve_parser,  # KServe parses argv on import
    )

    parser = argparse.ArgumentParser(
        prog="python -m predictor",
        description="Serve GPT-J with KServe.",
        parents=[kserve_parser],
        # No prefixes of flags: argparse's default read `--device cuda` as `--device_map cuda` before
        # --device existed, and the server started on the CPU. A flag is its full name or an error.
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # One process, one GPU, one engine, model name gptj. KServe's gRPC listener (v2 over gRPC, beside
    # HTTP on --grpc_port) is off for `python -m predictor` and on in the image (GPTJ_ENABLE_GRPC=true
    # in the Dockerfile): idle, it costs 3 MiB and a few sleeping threads (docs/api.md, gRPC).
    try:
        grpc = _bool(environ.get("GPTJ_ENABLE_GRPC", "false"))
    except ValueError as exc:
        parser.error(f"environment variable GPTJ_ENABLE_GRPC: {exc}")
    parser.set_defaults(model_name="gptj", enable_grpc=grpc)
    for flag, env, parse, default, help_text in _OPTIONS:
        if callable(default):
            default = default(environ)
        if env in environ:
            try:
                default = parse(environ[env])
            except ValueError as exc:
                parser.error(f"environment variable {env}: {exc}")
        parser.add_argument(f"--{flag}", type=_argparse_type(parse), default=default, help=f"{help_text} [env {env}]")
    return parser


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    # argparse shows ArgumentTypeError messages verbatim ("argument --x: must be >= 1 (got 0)").
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and environment into validated Settings (exits 2 with a message on error)."""
    environ = os.environ if environ is None else environ
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.error("--workers must be 1: one process owns the GPU and its engine")
    if args.max_queued_requests < args.max_prompts:
        parser.error("--max_queued_requests must be >= --max_prompts, or a full request could never be queued")
    limits = Limits(**{f.name: getattr(args, _limit_flag(f.name)) for f in fields(Limits)})
    # A min_length cap above the max_length cap could never be met; lowering one limit alone is fine.
    limits = replace(limits, min_length=min(limits.min_length, limits.max_length))
    batch = BatchPolicy(
        max_batch_size=args.max_batch_size or BatchPolicy.max_batch_size,
        auto_batch_size=args.max_batch_size is None,
        max_batch_tokens=args.max_batch_tokens,
        batch_wait_s=args.batch_wait_ms / 1000,
        max_batch_wait_s=args.max_batch_wait_ms / 1000,
        max_prefill_tokens=args.max_prefill_tokens,
    )
    operations = Operations(
        max_queued_requests=args.max_queued_requests,
        request_timeout_s=args.request_timeout_seconds or None,
        drain_timeout_s=args.drain_timeout_seconds,
        log_prompts=args.log_prompts,
        fault_injection=args.fault_injection,
        engine_stall_s=args.engine_stall_seconds,
        api_keys_file=Path(args.api_keys_file) if args.api_keys_file else None,
        structured_compile_timeout_s=args.structured_compile_timeout,
    )
    speed = Speed(
        decode_path=args.decode_path,
        cuda_graphs=args.cuda_graphs,
        kv_cache_memory_fraction=args.kv_cache_memory_fraction,
        attn_implementation=args.attn_implementation,
        cpu_kernels=args.cpu_kernels,
    )
    model = args.model or (str(KSERVE_MOUNT) if KSERVE_MOUNT.is_dir() else "tiny")
    return Settings(
        model_name=args.model_name,
        model=model,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        cache_dir=Path(args.cache_dir),
        limits=limits,
        batch=batch,
        operations=operations,
        speed=speed,
        server=args,
    )


def _limit_flag(name: str) -> str:
    return {"max_length": "max_length_limit", "min_length": "min_length_limit"}.get(name, name)
