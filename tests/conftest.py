"""Test set-up on real servers.

The suite starts the embedded PostgreSQL, Redis and Typesense once per run under var/test (or uses
TEST_DATABASE_URL / TEST_REDIS_URL / TEST_TYPESENSE_URL when set), builds the schema with the real
migrations on a fresh database, and rolls back each test: every test runs inside an outer
transaction and the app's session works in SAVEPOINTs on that same connection.

Tests that need real commits (live servers, the browser, concurrency) use `committed_db`, a
database of their own that is created for them and dropped after.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.fakes.serving import ServedInThread

ROOT = Path(__file__).resolve().parent.parent
_stack = None


def _server_url(database_url: str, dbname: str) -> str:
    base, _, _ = database_url.rpartition("/")
    return f"{base}/{dbname}"


def pytest_configure(config):
    """Bring up the servers before anything imports config.py (which reads the environment)."""
    global _stack
    os.environ["SHOP_ENV"] = "test"
    # A random key per run, in the environment so the workers and servers the tests start sign alike.
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    provided = {k: os.environ.get(f"TEST_{k}") for k in ("DATABASE_URL", "REDIS_URL", "TYPESENSE_URL")}
    for key, value in provided.items():
        if value:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    if not all(provided.values()):
        from shop.devstack import Stack

        # A directory per run, so two runs (or a run beside `make run`) never share a server.
        _stack = Stack(
            ROOT / "var" / "test" / f"run-{os.getpid()}",
            ports={"postgres": 0, "redis": 0, "typesense": 0},
            database="shop_test",
            quiet=True,
            durable=False,
        )
        os.environ.update(_stack.start())
    # A fresh database every run: the schema comes from the migrations, as in production.
    url = os.environ["DATABASE_URL"]
    dbname = url.rpartition("/")[2].split("?")[0]
    _recreate_database(url, dbname)
    redis_url = os.environ["REDIS_URL"]
    if redis_url.endswith("/0"):
        os.environ["REDIS_URL"] = redis_url[:-2] + "/15"  # keep tests off a shared server's db 0


def pytest_unconfigure(config):
    if _stack is not None:
        _stack.stop()
        shutil.rmtree(_stack.var, ignore_errors=True)


def _recreate_database(url: str, dbname: str) -> None:
    with psycopg.connect(_server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        conn.execute(f'CREATE DATABASE "{dbname}"')


def stream_topic_for(database_url: str) -> str:
    """The event stream topic of the shop on this database: each test database its own, so the event consumers of
    one live shop never take (and acknowledge) the events of another sharing the suite's Redis."""
    from urllib.parse import urlsplit

    return f"shop.events.{urlsplit(database_url).path.lstrip('/')}"


def wait_until(check, seconds: float, what: str, every: float = 0.05):
    """check()'s first truthy answer within `seconds`, polling every `every` s; AssertionError naming `what` if none."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def config_for(database_url: str | None = None, **overrides):
    """The test settings pointing at another database (and its own event stream topic), or with other settings."""
    from config import _database_url, get_config

    attrs = dict(overrides)
    if database_url:
        attrs["SQLALCHEMY_DATABASE_URI"] = _database_url(database_url)
        attrs.setdefault("EVENT_STREAM_TOPIC", stream_topic_for(database_url))
    return type("TestConfigVariant", (get_config("test"),), attrs)


def local_path(url: str) -> str:
    """The path and query of an absolute URL (links are at PUBLIC_BASE_URL), for the test client."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _isolated_client_class():
    """A test client whose every request gets its own app context (and so its own `g`), as in a
    real server, even while a test holds an app context open for its database session."""
    import contextvars

    from flask.globals import _cv_app
    from flask.testing import FlaskClient

    class IsolatedClient(FlaskClient):
        def open(self, *args, **kwargs):
            def fresh():
                _cv_app.set(None)
                return FlaskClient.open(self, *args, **kwargs)

            return contextvars.copy_context().run(fresh)

    return IsolatedClient


@pytest.fixture(scope="session")
def app():
    from flask_migrate import upgrade

    from shop import create_app

    app = create_app("test")
    app.test_client_class = _isolated_client_class()
    with app.app_context():
        upgrade()
    return app


@pytest.fixture
def db_session(app):
    """The app's session inside a transaction that is rolled back after the test."""
    from flask_sqlalchemy.session import _app_ctx_id
    from sqlalchemy.orm import scoped_session, sessionmaker

    from shop.extensions import db

    with app.app_context():
        conn = db.engine.connect()
        outer = conn.begin()
        original = db.session
        db.session = scoped_session(
            sessionmaker(bind=conn, join_transaction_mode="create_savepoint"), scopefunc=_app_ctx_id
        )
        try:
            yield db.session
        finally:
            db.session.remove()
            db.session = original
            outer.rollback()
            conn.close()


@pytest.fixture
def client(app, db_session):
    return app.test_client()


@pytest.fixture
def redis_client(app):
    client = app.extensions["redis_client"]  # the suite's app's, whatever other apps a test built
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def count_queries(app):
    """Counts SQL statements sent to PostgreSQL while the returned counter is active."""
    from sqlalchemy import event

    from shop.extensions import db

    class Counter:
        def __init__(self):
            self.statements: list[str] = []

        def __enter__(self):
            self.statements = []
            event.listen(db.engine, "before_cursor_execute", self._record)
            return self

        def __exit__(self, *exc):
            event.remove(db.engine, "before_cursor_execute", self._record)

        def _record(self, conn, cursor, statement, *args):
            if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
                self.statements.append(statement)

        @property
        def count(self) -> int:
            return len(self.statements)

    return Counter


@contextlib.contextmanager
def _fresh_database(prefix: str, **settings):
    """A new database on the suite's server with the migrated schema: yields (its URL, an app on it with
    `settings`); afterwards the app's connections are closed and the database is dropped."""
    from flask_migrate import upgrade

    from shop import create_app
    from shop.extensions import db

    base = os.environ["DATABASE_URL"]
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_server_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _server_url(base, name)
    app = create_app(config_for(url, **settings))
    try:
        with app.app_context():
            upgrade()
        yield url, app
    finally:
        with app.app_context():
            db.engine.dispose()
        with psycopg.connect(_server_url(base, "postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def committed_db():
    """A database of the test's own with the migrated schema, for code that must really commit.

    Yields its URL; dropped afterwards.
    """
    with _fresh_database("shop_t") as (url, _app):
        yield url


class LiveServer(ServedInThread):
    """The real app served over HTTP by werkzeug in a thread, on a free port."""

    def __init__(self, flask_app):
        from werkzeug.serving import make_server

        super().__init__(make_server("127.0.0.1", 0, flask_app, threaded=True))
        self.url = f"http://127.0.0.1:{self.port}"
        # Absolute links (payment pages, the test gateway's webhook, upload URLs) point at this server.
        flask_app.config["PUBLIC_BASE_URL"] = self.url


@contextlib.contextmanager
def live_seeded_shop(products: int, prefix: str = "shop_demo", setup=None, **settings):
    """A live server over a fresh committed database holding `products` demo products; `setup()` runs in
    the app context after seeding (e.g. to create staff). The database is dropped afterwards."""
    from shop.catalog.seed import seed_demo

    with _fresh_database(prefix, **settings) as (url, app):
        with app.app_context():
            seed_demo(products, echo=lambda *a, **k: None)
            if setup is not None:
                setup()
        with LiveServer(app) as live:
            live.app, live.database_url = app, url
            yield live


@pytest.fixture(scope="module")
def seeded_shop():
    """A live server over a committed database holding the demo catalogue (module-wide, read-only)."""
    with live_seeded_shop(200) as live:
        yield live
