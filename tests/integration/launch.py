"""Run the real server with one test-only hook; production never imports this file.

GPTJ_TEST_LOAD_GATE=<path>    loading waits until the file exists (to watch readiness turn 200)

Failures are injected the way an operator would, with ``--fault_injection true`` and a
``[[fault:error]]`` or ``[[fault:oom]]`` marker in a prompt (engine/faults.py). The load gate stays
here because it is no failure: it holds a healthy load still for as long as a test needs to look at
a server that is live but not ready, which no flag of the product should offer.
"""

from __future__ import annotations

import os
import sys
import time

from predictor.__main__ import main
from predictor.loading import loader

_gate = os.environ.get("GPTJ_TEST_LOAD_GATE")

if _gate:
    _load = loader.load

    def _gated_load(settings):
        while not os.path.exists(_gate):
            time.sleep(0.05)
        return _load(settings)

    loader.load = _gated_load

if __name__ == "__main__":
    sys.exit(main())
