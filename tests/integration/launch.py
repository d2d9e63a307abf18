"""Run the real server with test-only behaviour patched in; production never imports this file.

GPTJ_TEST_LOAD_GATE=<path>    loading waits until the file exists (to watch readiness turn 200)
GPTJ_TEST_FAIL_PROMPT=<text>  generation raises for any batch that a prompt containing the text joins
                              (a 500 on demand; requests that joined with it are retried alone)
"""

from __future__ import annotations

import os
import sys
import time

from predictor.__main__ import main
from predictor.generation import beams, continuous
from predictor.loading import loader

_gate = os.environ.get("GPTJ_TEST_LOAD_GATE")
_fail = os.environ.get("GPTJ_TEST_FAIL_PROMPT")

if _gate:
    _load = loader.load

    def _gated_load(settings):
        while not os.path.exists(_gate):
            time.sleep(0.05)
        return _load(settings)

    loader.load = _gated_load

if _fail:
    _join, _generate = continuous.ContinuousBatch.join, beams.Runner._generate

    def _check(requests):
        if any(_fail in request.prompt for request in requests):
            raise RuntimeError("injected fault with secret-internal-detail")

    def _failing_join(self, entries):
        _check([request for _, request in entries])
        return _join(self, entries)

    def _failing_generate(self, requests):
        _check(requests)
        return _generate(self, requests)

    continuous.ContinuousBatch.join = _failing_join
    beams.Runner._generate = _failing_generate

if __name__ == "__main__":
    sys.exit(main())
