"""Fixtures the unit tests share: the tiny GPT-J loaded once per test module (the loader the 6B uses).

Module-scoped, as each file had them: a module's tests share one model, and no module sees another's.
"""

from __future__ import annotations

import pytest

from predictor.loading.loader import load
from predictor.settings import parse_settings


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load(parse_settings(["--model", str(tiny_dir)], {}))


@pytest.fixture(scope="module")
def eos_loaded(eos_dir):
    return load(parse_settings(["--model", str(eos_dir)], {}))
