"""The `probe` fixture: a fresh Probe (support.py) for each test's models to report to."""

from __future__ import annotations

import pytest

from .support import Probe


@pytest.fixture
def probe() -> Probe:
    return Probe()
