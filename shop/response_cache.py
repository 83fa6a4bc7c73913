"""Whole answers to anonymous catalogue reads, kept in Redis and served before Flask runs (no session, CSRF,
request hooks, database or template): the second level of the catalogue cache (shop/cache.py is the first).

Which answers: those the app itself marks shareable, `Cache-Control: public, ... s-maxage=N` (shop/http.py's
`cacheable()`: catalogue pages and the catalogue API), with status 200 and no cookie set. They are kept for N
seconds at most (the time a CDN may keep them too: CATALOG_MAX_AGE, shorter before a sale starts or ends) and are
unreachable at once after any catalogue change: an entry records the catalogue's and the categories' generations
(shop/cache.py) it was made at, read *before* the app ran, and a read serves it only while both are unchanged.

Which requests: GET or HEAD of the catalogue's paths (CATALOGUE), without an Authorization header and without a
session that holds something to show (a flashed message); the key is the host, the path and the query string as
sent. Storefront pages carry nothing per visitor (the add-to-cart form fetches its CSRF token and the cart badge
its count with small requests of their own), which is why they can be shared.

A hit costs one Redis round trip (the two generations and the entry in one MGET). It answers 304 to a matching
If-None-Match, carries a fresh X-Request-ID and `X-Cache: HIT` (`MISS` when the app answered). With CACHE_ENABLED
off, or while the catalogue cache steps aside after a Redis error, every request goes to the app.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from shop.cache import CATEGORIES_GEN_KEY, GEN_KEY, CatalogCache
from shop.telemetry import metrics

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

log = logging.getLogger(__name__)

CATALOGUE = re.compile(r"^/(?:|products|c/[^/]+|p/[^/]+|p/[^/]+/related|api/v1/(?:products(?:/[^/]+)?|categories))$")
KEY = "catalog:v1:response:{}"
MAX_BODY = 2 * 1024 * 1024  # a bigger answer is not kept
NOT_KEPT = {"x-request-id", "set-cookie", "date", "x-cache"}
S_MAXAGE = re.compile(r"(?:^|[,\s])s-maxage=(\d+)")


def _header(environ: WSGIEnvironment, name: str) -> str:
    return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))


class ResponseCache:
    """WSGI middleware in front of the Flask app (see the module's docstring)."""

    def __init__(self, wsgi_app: WSGIApplication, app: Flask):
        self.wsgi_app = wsgi_app
        self.app = app

    # --- who may be answered from here ----------------------------------------------------------------

    def _cache(self) -> CatalogCache | None:
        cache: CatalogCache | None = self.app.extensions.get("catalog_cache")
        if cache is None or not cache.enabled or not cache.available():
            return None
        return cache

    def _eligible(self, environ: WSGIEnvironment) -> bool:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") or _header(environ, "Authorization"):
            return False
        if not CATALOGUE.match(str(environ.get("PATH_INFO", ""))):
            return False
        if self.app.config.get("SECRET_KEY_LOCAL_ONLY"):
            from config import is_loopback

            if not is_loopback(str(environ.get("REMOTE_ADDR", ""))):
                return False  # the app refuses other clients (shop._local_clients_only): let it say so
        return not self._session_has_news(environ)

    def _session_has_news(self, environ: WSGIEnvironment) -> bool:
        """Whether the visitor's session holds something this page would show them (a flashed message)."""
        cookie_name = self.app.config.get("SESSION_COOKIE_NAME", "session")
        cookies = _header(environ, "Cookie")
        if cookie_name not in cookies:
            return False
        from werkzeug.http import parse_cookie

        value = parse_cookie(cookies).get(cookie_name)
        if not value:
            return False
        try:
            with self.app.app_context():  # Flask's session serializer reads the app's JSON provider
                serializer = self.app.session_interface.get_signing_serializer(self.app)  # type: ignore[attr-defined]
                data = serializer.loads(value) if serializer is not None else {}
        except Exception:  # noqa: BLE001 - a bad or old cookie: the app decides what to do with it
            return True
        return bool(isinstance(data, dict) and data.get("_flashes"))

    @staticmethod
    def key(environ: WSGIEnvironment) -> str:
        query = environ.get("QUERY_STRING", "")
        raw = f"{environ.get('wsgi.url_scheme', 'http')}://{_header(environ, 'Host')}{environ.get('PATH_INFO', '')}"
        return KEY.format(uuid.uuid5(uuid.NAMESPACE_URL, raw + ("?" + query if query else "")).hex)

    # --- the middleware ---------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        cache = self._cache() if self._eligible(environ) else None
        if cache is None:
            return self.wsgi_app(environ, start_response)
        key = self.key(environ)
        got = cache.attempt(lambda r: r.mget(GEN_KEY, CATEGORIES_GEN_KEY, key))
        if got is None:
            return self.wsgi_app(environ, start_response)
        gens = (int(got[0] or 0), int(got[1] or 0))
        if got[2] is not None:
            hit = self._answer(got[2], gens, environ, start_response)
            if hit is not None:
                _HIT.inc()
                return hit
        _MISS.inc()
        return self._fill(cache, key, gens, environ, start_response)

    def _answer(
        self, entry: bytes, gens: tuple[int, int], environ: WSGIEnvironment, start_response: StartResponse
    ) -> list[bytes] | None:
        head, _, body = entry.partition(b"\n")
        try:
            meta = json.loads(head)
        except ValueError:
            return None
        if (meta.get("gen"), meta.get("cgen")) != gens:
            return None  # the catalogue changed since: the app answers (and a fresh entry replaces this one)
        environ["shop.route"] = meta.get("route")  # for the request figures (shop.telemetry)
        headers = [(k, v) for k, v in meta["headers"]]
        incoming = _header(environ, "X-Request-ID")
        request_id = incoming if 0 < len(incoming) <= 200 and incoming.isprintable() else uuid.uuid4().hex
        headers += [("X-Request-ID", request_id), ("X-Cache", "HIT")]
        etag = dict((k.lower(), v) for k, v in meta["headers"]).get("etag")
        if etag and etag in [t.strip() for t in _header(environ, "If-None-Match").split(",")]:
            kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-type")]
            start_response("304 NOT MODIFIED", kept)
            return []
        start_response(meta["status"], headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _fill(
        self,
        cache: CatalogCache,
        key: str,
        gens: tuple[int, int],
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        """The app's answer, passed on as it comes, and kept when it is shareable."""
        seen: dict[str, Any] = {}

        def remember(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, [*headers, ("X-Cache", "MISS")], exc_info)

        body = self.wsgi_app(environ, remember)
        if environ.get("REQUEST_METHOD") != "GET":
            return body
        try:
            chunks = list(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        ttl = self._shareable_for(seen.get("status", ""), seen.get("headers", []))
        data = b"".join(chunks)
        if ttl and len(data) <= MAX_BODY:
            kept = [(k, v) for k, v in seen["headers"] if k.lower() not in NOT_KEPT]
            head = json.dumps(
                {
                    "gen": gens[0],
                    "cgen": gens[1],
                    "status": seen["status"],
                    "headers": kept,
                    "route": environ.get("shop.route"),
                }
            )
            cache.attempt(lambda r: r.set(key, head.encode() + b"\n" + data, ex=ttl))
        return chunks

    @staticmethod
    def _shareable_for(status: str, headers: list[tuple[str, str]]) -> int:
        """Seconds a shared cache may keep this answer (0: not at all)."""
        if not status.startswith("200"):
            return 0
        lower = [(k.lower(), v) for k, v in headers]
        if any(k == "set-cookie" for k, _ in lower):
            return 0
        control = next((v for k, v in lower if k == "cache-control"), "")
        found = S_MAXAGE.search(control)
        if "public" not in control or "private" in control or "no-store" in control or not found:
            return 0
        return int(found.group(1))


_HIT, _MISS = metrics.CACHE.labels("response", "hit"), metrics.CACHE.labels("response", "miss")


def init_app(app: Flask) -> None:
    """Put the response cache in front of the app (inside ProxyFix, so it keys on the client's host and scheme)."""
    app.wsgi_app = ResponseCache(app.wsgi_app, app)  # type: ignore[method-assign]
