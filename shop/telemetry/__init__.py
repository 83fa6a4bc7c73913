"""Observability: Prometheus metrics (metrics.py), OpenTelemetry traces (tracing.py), JSON logs (logs.py) and
Sentry (errors.py), set up by init_app() for the web app and init_process() for workers, relay and consumers.
docs/observability.md is the operator's guide."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, g, request

from shop.telemetry import logs, metrics, tracing

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication
    from sqlalchemy.engine import Connection
    from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor, ExecutionContext
    from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# One request's SQL: [statements, seconds].
_Tally = list[float]

bp = Blueprint("telemetry", __name__)


def init_process(app: Flask, service: str) -> None:
    """What every process of the shop sets up: logs, Sentry, traces, SQL and pool figures."""
    logs.configure(app.config.get("LOG_FORMAT", "text"), app.config.get("LOG_LEVEL", "INFO"))
    if app.config.get("SENTRY_DSN"):
        from shop.telemetry import errors

        errors.init(app)
    if app.config.get("METRICS_ENABLED", True):
        _count_sql()
    tracing.init(app, service)


def init_app(app: Flask, service: str = "shop-web") -> None:
    """The app: the above, plus request figures and GET /metrics."""
    init_process(app, service)
    app.register_blueprint(bp)

    @app.before_request
    def _note_request() -> None:
        environ = request.environ
        environ["shop.route"] = request.url_rule.rule if request.url_rule is not None else None

    @app.after_request
    def _note_answer(response: Response) -> Response:
        environ = request.environ
        environ["shop.request_id"] = g.get("request_id")
        environ["shop.user_id"] = logs._user_id()
        ids = tracing.current_ids()  # the request's span (started by the instrumentation's own hook)
        if ids:
            environ["shop.trace_id"] = ids[0]
        return response

    # Before_request hooks run in order: the route is noted before any other hook can refuse the request.
    funcs = app.before_request_funcs.setdefault(None, [])
    funcs.insert(0, funcs.pop())
    app.wsgi_app = RequestFigures(  # type: ignore[method-assign]
        app.wsgi_app,
        counting=app.config.get("METRICS_ENABLED", True),
        access_log=app.config.get("LOG_FORMAT") == "json",
    )


# Polled every few seconds by load balancers and Prometheus: counted, but no access line each time.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestFigures:
    """The outermost WSGI layer: counts each request by route template, method and status class, times it to the
    end of its body, records the SQL it ran, and writes its access line (JSON logs). The route is what the app (or
    the response cache, for an answer it kept) noted in the environ; requests no route matched share one label."""

    def __init__(self, wsgi_app: WSGIApplication, counting: bool = True, access_log: bool = False) -> None:
        self.wsgi_app, self.counting, self.access_log = wsgi_app, counting, access_log

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        seen = {"status": "500"}
        sql = _SQL.begin()

        def noting(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            seen["status"] = status
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, noting)
        except BaseException:
            self._done(environ, "500", started, sql)
            raise
        return _Closing(body, lambda: self._done(environ, seen["status"], started, sql))

    def _done(self, environ: dict[str, Any], status: str, started: float, sql: _Tally | None) -> None:
        seconds = time.perf_counter() - started
        route = environ.get("shop.route") or "(unmatched)"
        method = environ.get("REQUEST_METHOD", "GET")
        if self.counting:
            metrics.HTTP_REQUESTS.labels(route, method, f"{status[:1]}xx").inc()
            metrics.HTTP_LATENCY.labels(route, method).observe(seconds)
            if sql is not None:
                metrics.DB_QUERIES.observe(sql[0])
                metrics.DB_TIME.observe(sql[1])
        _SQL.end(sql)
        if self.access_log and route not in QUIET_ROUTES:
            logs.access_line(environ, status, seconds)


class _Closing:
    """The body, passed on as it is, with `done` called once when the server closes it."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self.body, self._done, self.finished = body, done, False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if not self.finished:
                self.finished = True
                self._done()


class _SqlTally(threading.local):
    """SQL statements and their time in the request this thread serves (None outside one)."""

    current: _Tally | None = None

    def begin(self) -> _Tally:
        self.current = [0, 0.0]
        return self.current

    def end(self, tally: _Tally | None) -> None:
        if self.current is tally:
            self.current = None


_SQL = _SqlTally()
_sql_hooked = False


def _count_sql() -> None:
    """Every engine's statements (counted into the request that ran them) and pool check-outs, once per process."""
    global _sql_hooked
    if _sql_hooked:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(
        conn: Connection,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        conn.info["shop_sql_started"] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(
        conn: Connection,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        tally = _SQL.current
        if tally is not None:
            tally[0] += 1
            tally[1] += time.perf_counter() - conn.info.pop("shop_sql_started", time.perf_counter())

    @event.listens_for(Pool, "checkout")
    def _out(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, proxy: PoolProxiedConnection) -> None:
        metrics.DB_POOL_IN_USE.inc()

    @event.listens_for(Pool, "checkin")
    def _in(dbapi_conn: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        metrics.DB_POOL_IN_USE.dec()

    _sql_hooked = True


def _allowed() -> bool:
    """Whether this client may read /metrics: its address in METRICS_ALLOW, or METRICS_TOKEN as a bearer token."""
    import hmac

    token = current_app.config.get("METRICS_TOKEN")
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    from shop.health import client_in

    return client_in("METRICS_ALLOW")


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus's text format, for METRICS_ALLOW's addresses (or METRICS_TOKEN's bearer) only."""
    from shop.errors import NotAllowed, NotFound

    if not current_app.config.get("METRICS_ENABLED", True):
        raise NotFound("not_found", "Metrics are turned off (METRICS=off).")
    if not _allowed():
        raise NotAllowed("forbidden", "Metrics are only served to the monitoring system's addresses.")
    body, content_type = metrics.exposition(current_app)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
