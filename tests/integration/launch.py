"""Run the real server with test-only behaviour patched in; production never imports this file.

GPTJ_TEST_LOAD_GATE=<path>    loading waits until the file exists (to watch readiness turn 200)
GPTJ_TEST_FAIL_PROMPT=<text>  generation raises for prompts containing the text (a 500 on demand)
"""

from __future__ import annotations

import os
import sys
import time

from predictor import loading, runner
from predictor.__main__ import main

_gate = os.environ.get("GPTJ_TEST_LOAD_GATE")
_fail = os.environ.get("GPTJ_TEST_FAIL_PROMPT")

if _gate:
    _load = loading.load

    def _gated_load(settings):
        while not os.path.exists(_gate):
            time.sleep(0.05)
        return _load(settings)

    loading.load = _gated_load

if _fail:
    _run = runner.Runner.run

    def _failing_run(self, request):
        if _fail in request.prompt:
            raise RuntimeError("injected fault with secret-internal-detail")
        return _run(self, request)

    runner.Runner.run = _failing_run

if __name__ == "__main__":
    sys.exit(main())
