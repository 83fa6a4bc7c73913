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


def _wait(predicate, what, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _deep_ready(port) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz?deep=1", timeout=10) as resp:
            return resp.status == 200
    except OSError:  # 503 (HTTPError) while a process has not beaten yet
        return False


def _shop_children(proc, *words) -> list[psutil.Process]:
    """make run's children whose command line holds every word (e.g. "worker.py", "mail")."""
    found = []
    for child in psutil.Process(proc.pid).children():
        try:
            if all(word in child.cmdline() for word in words):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _run_until_serving(var_dir, port):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "TYPESENSE_URL", "TYPESENSE_API_KEY", "SHOP_ENV", "SECRET_KEY")
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "shop.devstack", "run", "--var", str(var_dir), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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


def _stop(proc, output, var_dir, *, with_make_stop=False):
    if with_make_stop:  # what `make stop` runs, for a `make run` in the background
        done = subprocess.run(
            [sys.executable, "-m", "shop.devstack", "stop", "--var", str(var_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0 and f"stopped the shop (pid {proc.pid})" in done.stdout, done
    else:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    proc.wait(timeout=60)
    time.sleep(0.5)
    left = _shop_processes(var_dir)  # e.g. a killed worker's scheduler process, still holding our stdout
    for leftover in left:
        leftover.kill()
    output.append(proc.stdout.read())  # through the same buffered reader readline() used
    assert proc.returncode == 0, "".join(output)
    assert left == [], f"shop processes left running after Ctrl-C: {[p.cmdline() for p in left]}"


def _shop_processes(var_dir) -> list[psutil.Process]:
    """Processes make run started for this var/ (workers and the web server have it in SHOP_VAR_DIR)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SHOP_VAR_DIR") == str(var_dir):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.mark.slow  # two minutes and more: `make run` from an empty data directory, then its shop walked
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
        # A worker per queue, the relay and the scheduler run and say so; one killed is started again.
        _wait(lambda: _deep_ready(port), "/readyz?deep=1 to see every worker, the scheduler and the relay")
        [mail_worker] = _shop_children(proc, "worker.py", "mail")
        mail_worker.kill()
        _wait(
            lambda: [p for p in _shop_children(proc, "worker.py", "mail") if p.pid != mail_worker.pid],
            "the mail worker to be started again",
        )
        _wait(lambda: _deep_ready(port), "the restarted mail worker's heartbeat")
    finally:
        _stop(proc, output, var_dir)
    assert "worker-mail exited with -9; restarting it in 1s" in "".join(output)
    assert "Seeded 15 categories, 200 products" in "".join(output)
    assert "manager@demo.shop" in "".join(output)  # the banner gives the demo staff logins
    time.sleep(0.5)
    assert _children_using(var_dir) == [], "processes left running after Ctrl-C"
    key_file = var_dir / "secret_key"  # no SECRET_KEY given: one generated for this data directory
    key = key_file.read_text()
    assert key_file.stat().st_mode & 0o777 == 0o600 and "dev-only" not in key

    # A second run reuses var/: same data, no second seed, the same key (sessions survive a restart);
    # `make stop` stops it as Ctrl-C would, and forgets its pid.
    proc, output = _run_until_serving(var_dir, port)
    assert (var_dir / "run.pid").read_text().strip() == str(proc.pid)
    _stop(proc, output, var_dir, with_make_stop=True)
    assert not (var_dir / "run.pid").exists()
    assert "already has products; not seeding" in "".join(output)
    assert key_file.read_text() == key
    assert _children_using(var_dir) == []
