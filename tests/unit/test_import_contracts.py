"""The import contracts in .importlinter hold: layers with no cycle between the shop's packages, models that import
no services, domains that never import the web layers. A new import that breaks one fails here, naming the chain."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "3 kept" in result.stdout
