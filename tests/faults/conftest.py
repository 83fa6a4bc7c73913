"""The servers the drills of a module share."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults.harness import Servers


@pytest.fixture(scope="module")
def servers():
    """The servers the drills of one module share (None with FAULT_FRESH_STACK=1: each shop starts its own). Per
    module, not per session: the event drill leaves products in Typesense's persisted state, which a later drill
    that kills Typesense would find again after its restart."""
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
