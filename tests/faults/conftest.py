"""The servers the drills share."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults.harness import Servers


@pytest.fixture(scope="session")
def servers():
    """The servers every drill's shop runs on, started once for the fault drills and the event drill (None with
    FAULT_FRESH_STACK=1: each shop starts its own)."""
    if os.environ.get("FAULT_FRESH_STACK", "0") not in ("", "0"):
        yield None
        return
    var = Path(tempfile.mkdtemp(prefix="faults-servers-"))
    shared = Servers(var)
    try:
        shared.start()
        yield shared
    finally:
        shared.stop()
        shutil.rmtree(var, ignore_errors=True)
