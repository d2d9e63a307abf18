"""The benchmark as a list of phases that cannot lose each other's figures.

A lent GPU call has a hard time limit and the first one on a new stack is the likeliest to break
late (a server that never gets ready, a concurrency level that hangs). So each phase has its own
time limit, a phase that raises or runs out of time records its error in the results and the next
phase runs, and the JSON is rewritten after every phase: whatever ran is on disk (and in ``$OUT``,
which the device tool brings back) even if the process is killed a moment later.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator, Sequence


class PhaseTimeout(Exception):
    """A phase ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise PhaseTimeout in this (the main) thread once ``seconds`` have passed.

    SIGALRM, because a phase is ordinary blocking code (a generate call, an HTTP load): the handler
    raises at the next Python bytecode, so a CUDA kernel already launched still finishes, but a
    wait for a server that never answers ends. Signals reach only the main thread; elsewhere (or
    without a limit) the phase runs unbounded.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise PhaseTimeout(f"ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Phases:
    """Runs phases into ``results`` and writes it to every path in ``paths`` after each one.

    ``results["phases"][name]`` says how each went: ``{"status": "ok" | "failed" | "timeout" |
    "skipped", "seconds": ..., "error": ...}``.
    """

    def __init__(
        self,
        results: dict,
        paths: Sequence[Path],
        extra: Callable[[dict], dict[Path, dict]] | None = None,
        scale: float = 1.0,
    ) -> None:
        # extra: more files to rewrite each time, computed from the results (the GPU summary);
        # scale: multiplies every time limit (a slower machine, a smoke run)
        self.results, self.paths, self.extra, self.scale = results, list(paths), extra, scale
        results.setdefault("phases", {})

    def run(self, name: str, fn: Callable[[], dict | None], timeout: float | None, needs: Sequence[str] = ()) -> bool:
        """Run one phase, merge the figures it returns into the results, write them; True if it worked."""
        missing = [need for need in needs if not self.ok(need)]
        timeout = timeout * self.scale if timeout else None
        started = time.monotonic()
        status, error = "ok", None
        if missing:
            status, error = "skipped", f"needs {', '.join(missing)}, which did not complete"
        else:
            print(f"== {name} (time limit {timeout:g} s)" if timeout else f"== {name}", flush=True)
            try:
                with time_limit(timeout):
                    figures = fn()
                merge(self.results, figures or {})
            except Exception as exc:  # noqa: BLE001 - one phase's failure must not cost the others their figures
                status = "timeout" if isinstance(exc, PhaseTimeout) else "failed"
                error = f"{type(exc).__name__}: {exc}"[-4000:]
                traceback.print_exc(file=sys.stderr)
        self.results["phases"][name] = {"status": status, "seconds": round(time.monotonic() - started, 3)}
        if error is not None:
            self.results["phases"][name]["error"] = error
            print(f"== {name}: {status}: {error.splitlines()[0][:300]}", file=sys.stderr, flush=True)
        self.write()
        return status == "ok"

    def ok(self, name: str) -> bool:
        return self.results["phases"].get(name, {}).get("status") == "ok"

    def failed(self) -> list[str]:
        return [name for name, phase in self.results["phases"].items() if phase["status"] != "ok"]

    def write(self) -> None:
        files = {path: self.results for path in self.paths}
        if self.extra is not None:
            files.update(self.extra(self.results))
        for path, content in files.items():
            write_json(path, content)


def merge(results: dict, figures: dict) -> None:
    """Figures into results; dictionaries (such as ``levels``) are merged key by key, not replaced."""
    for key, value in figures.items():
        if isinstance(value, dict) and isinstance(results.get(key), dict):
            merge(results[key], value)
        else:
            results[key] = value


def write_json(path: Path, content: dict) -> None:
    """Whole or not at all: a kill mid-write leaves the previous version, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(content, indent=2, default=str) + "\n")
    os.replace(partial, path)


def device_out() -> Path | None:
    """The device tool's ``$OUT`` (what is written there comes back), when it is set."""
    out = os.environ.get("OUT")
    return Path(out) if out else None
