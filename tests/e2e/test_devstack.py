"""`make run` as a newcomer meets it: one command brings up the whole shop; Ctrl-C leaves nothing running."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from shop.devstack import ROOT, _pick_port


def _children_using(var_dir) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(var_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _run_until_serving(var_dir, port):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "TYPESENSE_URL", "TYPESENSE_API_KEY", "SHOP_ENV", "SECRET_KEY")}
    proc = subprocess.Popen([sys.executable, "-m", "shop.devstack", "run", "--var", str(var_dir), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail("make run exited early:\n" + "".join(output))
        output.append(line)
        if "The shop is running at" in line:
            return proc, output
    proc.kill()
    pytest.fail("the shop did not come up in time:\n" + "".join(output))


def _stop(proc, output):
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    proc.wait(timeout=60)
    output.append(proc.stdout.read())  # through the same buffered reader readline() used
    assert proc.returncode == 0, "".join(output)


def test_make_run_serves_the_demo_shop_and_ctrl_c_stops_everything(tmp_path):
    var_dir = tmp_path / "var"
    port = _pick_port(0)
    proc, output = _run_until_serving(var_dir, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/c/men", timeout=10) as resp:
            assert resp.status == 200 and b"products</p>" in resp.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as resp:
            assert b'"status":"ready"' in resp.read().replace(b" ", b"")
        assert len(_children_using(var_dir)) >= 3  # PostgreSQL, Redis and Typesense, all under this var/
    finally:
        _stop(proc, output)
    assert "Seeded 15 categories, 200 products" in "".join(output)
    assert "manager@demo.shop" in "".join(output)  # the banner gives the demo staff logins
    time.sleep(0.5)
    assert _children_using(var_dir) == [], "processes left running after Ctrl-C"
    key_file = var_dir / "secret_key"  # no SECRET_KEY given: one generated for this data directory
    key = key_file.read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600 and "dev-only" not in key

    # A second run reuses var/: same data, no second seed, the same key (sessions survive a restart).
    proc, output = _run_until_serving(var_dir, port)
    _stop(proc, output)
    assert "already has products; not seeding" in "".join(output)
    assert key_file.read_text() == key
    assert _children_using(var_dir) == []
