"""What every request and response goes through for safety (issue #9, items 3, 5 and 6).

- Hosts: absolute URLs come from PUBLIC_BASE_URL only; a Host header outside TRUSTED_HOSTS is 400
  (Flask checks `app.config["TRUSTED_HOSTS"]` while it binds the URL map; we answer in our own shape).
- Bodies: MAX_CONTENT_LENGTH is refused with 413 before the body is read (a view may allow more with
  `@body_limit("SETTING")`), and JSON nested deeper than JSON_MAX_DEPTH is 400 before it is parsed.
- Headers: a nonce-based Content-Security-Policy with frame-ancestors 'none', X-Frame-Options, nosniff,
  Referrer-Policy, Permissions-Policy, Cross-Origin-Opener-Policy, HSTS in production, and no version banner.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import urlsplit

from flask import Flask, current_app, g, jsonify, render_template, request
from flask.globals import request_ctx
from flask.wrappers import Request
from werkzeug.exceptions import RequestEntityTooLarge, SecurityError

from shop.errors import ApiError, error_body, wants_json

SERVER_BANNER = "shop"
PROBE_PATHS = ("/healthz", "/readyz")  # load balancers and orchestrators probe by IP address


# -- absolute URLs ------------------------------------------------------------------------------
def external_url(endpoint: str, **values) -> str:
    """An absolute URL for `endpoint`, always at PUBLIC_BASE_URL (never the request's Host header)."""
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return current_app.config["PUBLIC_BASE_URL"] + path


def public_netloc() -> str:
    """host[:port] of PUBLIC_BASE_URL."""
    return urlsplit(current_app.config["PUBLIC_BASE_URL"]).netloc


def is_own_url(url: str | None) -> bool:
    """True for an absolute http(s) URL on this shop: PUBLIC_BASE_URL's host, or the (trusted) host in use."""
    if not url:
        return False
    parts = urlsplit(url)
    own = {public_netloc()}
    if current_app.config.get("TRUSTED_HOSTS"):  # then request.host has passed the allow-list
        own.add(request.host)
    return parts.scheme in ("http", "https") and parts.netloc in own


def _untrusted_host(exc: SecurityError):
    """400 for a Host header outside TRUSTED_HOSTS; the page's links point at PUBLIC_BASE_URL.
    Health probes are answered whatever the host: they build no links."""
    base = urlsplit(current_app.config["PUBLIC_BASE_URL"])
    # Flask left the request without a URL adapter; bind one to the public address so url_for works.
    request_ctx.url_adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme or "http"
    )
    if request.path in PROBE_PATHS and request.method in ("GET", "HEAD"):
        endpoint, args = request_ctx.url_adapter.match(request.path, request.method)
        return current_app.ensure_sync(current_app.view_functions[endpoint])(**args)
    message = "This server does not answer to that host name."
    if wants_json():
        return jsonify(error_body("untrusted_host", message)), 400
    return render_template("errors/error.html", status=400, title="Unknown host", message=message), 400


# -- request bodies -----------------------------------------------------------------------------
def body_limit(setting: str):
    """Let one view accept bodies up to app.config[setting] bytes instead of MAX_CONTENT_LENGTH."""

    def mark(view):
        view.max_body_setting = setting
        return view

    return mark


def _refuse_large_bodies():
    """413 as soon as the declared length is too large, before a byte of the body is read."""
    view = current_app.view_functions.get(request.endpoint or "")
    setting = getattr(view, "max_body_setting", None)
    if setting:
        request.max_content_length = current_app.config[setting]
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge(f"The body is larger than this address accepts ({limit} bytes).")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.S)  # an unterminated string runs to the end: linear
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST_PAIR = re.compile(rb"\[\]|\{\}")


def json_too_deep(data: bytes, limit: int) -> bool:
    """Whether arrays and objects in `data` nest deeper than `limit`, found without parsing it.

    Strings are dropped, then each pass removes the innermost bracket pairs: passes = depth.
    Unbalanced brackets stop the passes early and are left for the JSON parser to refuse."""
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", data))
    for _ in range(limit):
        if not brackets:
            return False
        reduced = _INNERMOST_PAIR.sub(b"", brackets)
        if reduced == brackets:
            return False
        brackets = reduced
    return bool(brackets)


class ShopRequest(Request):
    """Flask's request, refusing JSON nested deeper than JSON_MAX_DEPTH (Python's parsers recurse)."""

    def get_json(self, force=False, silent=False, cache=True):
        if (force or self.is_json) and not getattr(self, "_json_depth_checked", False):
            limit = current_app.config["JSON_MAX_DEPTH"]
            if json_too_deep(self.get_data(cache=True), limit):
                raise ApiError(
                    400, "malformed_request", f"The JSON body nests deeper than {limit} levels.", {"max_depth": limit}
                )
            self._json_depth_checked = True
        return super().get_json(force=force, silent=silent, cache=cache)


# -- response headers ---------------------------------------------------------------------------
def csp_nonce() -> str:
    """This response's CSP nonce, for <script nonce="..."> and <style nonce="...">."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return g.csp_nonce


def _origin(url: str) -> str | None:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _handler_hashes(handlers) -> str:
    """'unsafe-hashes' sources for inline event handlers Flask-Admin's own templates render."""
    digests = [base64.b64encode(hashlib.sha256(h.encode()).digest()).decode() for h in sorted(handlers)]
    return " 'unsafe-hashes' " + " ".join(f"'sha256-{d}'" for d in digests) if digests else ""


def _payment_pages(cfg) -> str:
    """Where "Place order and pay" and "Pay now" may redirect to (form-action covers a form's redirects): Stripe's
    hosted Checkout page in Stripe mode, and a Stripe-compatible server's own page when STRIPE_API_BASE points at one."""
    if cfg.get("PAYMENT_PROVIDER") != "stripe":
        return ""
    base = _origin(cfg.get("STRIPE_API_BASE"))
    return " https://checkout.stripe.com" + (f" {base}" if base and base != "https://api.stripe.com" else "")


def content_security_policy() -> str:
    """The policy for an HTML page: scripts only from here or with this response's nonce."""
    cfg = current_app.config
    own = " ".join(o for o in dict.fromkeys([_origin(cfg["PUBLIC_BASE_URL"]), _origin(cfg.get("CDN_BASE_URL"))]) if o)
    uploads = own + (
        " " + (_origin(cfg.get("S3_ENDPOINT_URL")) or "https://*.amazonaws.com")
        if cfg.get("STORAGE_BACKEND") == "s3"
        else ""
    )
    script = style = f"'self' 'nonce-{csp_nonce()}'"
    if request.path.startswith("/api/docs"):  # Swagger UI (third-party) may write style attributes
        style = "'self' 'unsafe-inline'"
    if request.path.startswith("/admin"):
        script += _handler_hashes(current_app.extensions.get("admin_inline_handlers", ()))
    directives = {
        "default-src": "'self'",
        "script-src": script,
        "style-src": style,
        "img-src": f"'self' data: https: {own}",  # product images may live on any https host
        "font-src": "'self' data:",
        "connect-src": f"'self' {uploads}",
        "form-action": f"'self' {own}{_payment_pages(cfg)}",
        "frame-ancestors": "'none'",
        "base-uri": "'self'",
        "object-src": "'none'",
    }
    return "; ".join(f"{name} {value}".strip() for name, value in directives.items())


def _security_headers(response):
    headers = response.headers
    if response.mimetype == "text/html":
        headers.setdefault("Content-Security-Policy", content_security_policy())
    else:  # JSON, images, files: nothing in them may run or be framed
        headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # Guest order tokens travel in URLs: other sites get no referrer at all. Same-origin requests keep
    # theirs, which Flask-WTF's CSRF check needs over https.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    hsts = current_app.config.get("HSTS_SECONDS", 0)
    if current_app.config.get("ENV_NAME") == "production" and hsts:
        headers.setdefault("Strict-Transport-Security", f"max-age={hsts}; includeSubDomains")
    return response


def _hide_server_banner() -> None:
    """Servers name themselves and their versions in `Server`; say only "shop". werkzeug's development
    server (make run, the tests' live servers) and gunicorn read these attributes per response."""
    import sys

    from werkzeug.serving import WSGIRequestHandler

    WSGIRequestHandler.version_string = lambda self: SERVER_BANNER
    gunicorn_wsgi = sys.modules.get("gunicorn.http.wsgi")
    if gunicorn_wsgi is not None:
        gunicorn_wsgi.SERVER = SERVER_BANNER


def _admin_inline_handlers(app: Flask) -> set[str]:
    """The onclick="..." bodies Flask-Admin's templates write for our views (delete, actions, filters,
    inline lists): allowed by hash, so the back-office needs no 'unsafe-inline' for scripts."""
    from flask_admin.model.fields import InlineFieldList
    from wtforms.fields.core import UnboundField

    handlers = {
        "return false;",
        "return faHelpers.safeConfirm('Are you sure you want to delete this record?');",
        "javascript:void(0)",
    }  # the href of its menu links, followed when a handler does not cancel
    for admin in app.extensions.get("admin", []):
        admin.csp_nonce_generator = csp_nonce  # Flask-Admin's own <script> and <link> tags carry the nonce
        for view in admin._views:
            handlers.update(f"return modelActions.execute('{name}');" for name, _ in getattr(view, "_actions", []))
            form_class = getattr(view, "_create_form_class", None)
            for name in dir(form_class) if form_class else ():
                field = getattr(form_class, name, None)
                if isinstance(field, UnboundField) and issubclass(field.field_class, InlineFieldList):
                    handlers.add(f"faForm.addInlineField(this, '{name}');")
    return handlers


def init_app(app: Flask) -> None:
    """Install the request class, the body limits, the host refusal and the response headers.
    Call it after the back-office is set up."""
    app.request_class = ShopRequest
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.extensions["admin_inline_handlers"] = _admin_inline_handlers(app)
    app.register_error_handler(SecurityError, _untrusted_host)
    app.before_request(_refuse_large_bodies)
    app.after_request(_security_headers)
    _hide_server_banner()
