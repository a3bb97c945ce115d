"""Layers a test needs that a machine may lack (PostgreSQL, a browser, Redis): skipped here, required in CI."""

import os
import shutil
from pathlib import Path

import pytest

# .ci/run sets this: a missing layer then fails the run instead of skipping, so a green CI run means it ran.
REQUIRE_ALL_LAYERS = os.environ.get("BRAINMRI_REQUIRE_ALL_LAYERS") == "1"


def skip_unless_required(reason: str) -> None:
    """Skip a test whose layer is missing here; where every layer is required (CI), fail it instead."""
    if REQUIRE_ALL_LAYERS:
        pytest.fail(f"{reason} (BRAINMRI_REQUIRE_ALL_LAYERS=1: every layer must run)")
    pytest.skip(reason)


def require_tools(*names: str) -> None:
    """Skip (fail under BRAINMRI_REQUIRE_ALL_LAYERS=1) when a program the test runs is not installed."""
    missing = [n for n in names if shutil.which(n) is None and not Path(n).is_file()]
    if missing:
        skip_unless_required(f"not installed: {', '.join(missing)} (make test installs them as root)")
