"""The shop: create_app() builds the Flask application (storefront, API, CLI) from config.py."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, g, request
from werkzeug.routing import IntegerConverter

from config import get_config
from shop.extensions import csrf, db, login_manager, migrate, redis_ext

REQUEST_ID_HEADER = "X-Request-ID"


def create_app(config=None, service: str = "shop-web") -> Flask:
    """Build the app. `config` is a settings class or a name (development, test, production); `service` names the
    process in traces (shop-web, shop-worker, shop-relay, shop-events, shop-scheduler)."""
    app = Flask(__name__, template_folder="../templates", static_folder="static")
    app.url_map.converters["int"] = BoundedInt  # ids beyond PostgreSQL's integer are 404, not 500
    cfg = config if isinstance(config, type) else get_config(config)
    if hasattr(cfg, "validate"):
        cfg.validate()
    app.config.from_object(cfg)
    app.json.sort_keys = False  # keep fields in the order the contract lists them

    db.init_app(app)
    _end_sessions_of_a_dead_database(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    csrf.init_app(app)
    redis_ext.init_app(app)
    from shop import cache as catalog_cache

    catalog_cache.init_app(app)  # the catalogue's Redis cache, and its invalidation on every change
    from shop import response_cache

    response_cache.init_app(app)  # whole anonymous catalogue answers, served before Flask runs
    _login(app)
    if app.config["PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    # Register every model with SQLAlchemy (and so with Alembic), and the session hooks.
    from shop import afterwards as _after_commit_hooks  # noqa: F401
    from shop import cli, errors, health, media
    from shop import consumers as _consumer_models  # noqa: F401  (consumed_event)
    from shop import idempotency as _idempotency_models  # noqa: F401
    from shop.accounts import models as _accounts_models  # noqa: F401
    from shop.api import bp as api_bp
    from shop.audit import services as _audit_hooks  # noqa: F401
    from shop.cart import models as _cart_models  # noqa: F401
    from shop.catalog import changes as _catalog_change_hooks  # noqa: F401
    from shop.catalog import models as _catalog_models  # noqa: F401
    from shop.inventory import models as _inventory_models  # noqa: F401

    # The domains' receivers of shop.events signals (an order cancelled: coupon uses, stock and money back).
    from shop.inventory import services as _inventory_receivers  # noqa: F401
    from shop.notifications import models as _notification_models  # noqa: F401
    from shop.orders import models as _order_models  # noqa: F401
    from shop.payments import models as _payment_models  # noqa: F401
    from shop.payments import services as _payment_receivers  # noqa: F401
    from shop.payments.routes import bp as payments_bp
    from shop.promotions import models as _promotion_models  # noqa: F401
    from shop.promotions import services as _promotion_receivers  # noqa: F401
    from shop.search import hooks as _search_hooks  # noqa: F401
    from shop.storefront import bp as storefront_bp
    from shop.webhooks import bp as webhooks_bp

    app.register_blueprint(storefront_bp)
    app.register_blueprint(api_bp, url_prefix="/api")
    if app.config.get("CHECK_API_RESPONSES"):
        from shop.api.openapi import check_response

        app.after_request(check_response)
    app.register_blueprint(health.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(payments_bp)
    app.register_blueprint(webhooks_bp)
    csrf.exempt(api_bp)  # the JSON API authenticates with bearer tokens, not cookies
    cli.register(app)
    from admin import init_admin

    init_admin(app)
    errors.register(app)
    from shop import security

    security.init_app(app)  # hosts, body limits, JSON depth, security headers (after the back-office)
    from shop.idempotency import release_locks

    app.teardown_request(release_locks)
    _request_ids(app)
    from shop import telemetry

    telemetry.init_app(app, service)  # logs, traces, Sentry; request figures outermost, and GET /metrics
    return app


def _end_sessions_of_a_dead_database(app: Flask) -> None:
    """Registered after Flask-SQLAlchemy's own teardown, so it runs first: when PostgreSQL dies while a request
    holds a connection, that connection cannot even roll back, and the failed rollback in the teardown would turn
    an answer already made (a 503, often) into a 500. The connection is dropped (SQLAlchemy invalidates it), and
    so is the session; the next request takes a fresh one."""
    from sqlalchemy.exc import SQLAlchemyError

    @app.teardown_appcontext
    def _remove_session(exc):
        try:
            db.session.remove()
        except SQLAlchemyError as err:
            logging.getLogger(__name__).warning(
                "dropped a database session whose connection died: %s", str(err).splitlines()[0][:200]
            )
            db.session.registry.clear()


class BoundedInt(IntegerConverter):
    """Flask's <int:...>, limited to what an integer column can hold."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def _login(app: Flask) -> None:
    """Flask-Login over the signed cookie session; the user row's versions end every copy (accounts/sessions.py)."""
    from shop.accounts.sessions import load_user

    login_manager.init_app(app)
    login_manager.login_view = "storefront.login"
    login_manager.login_message = "Please log in to see that page."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"
    login_manager.user_loader(load_user)
    if app.config.get("SECRET_KEY_LOCAL_ONLY"):
        _local_clients_only(app)


def _local_clients_only(app: Flask) -> None:
    """A key generated on this machine (config.py) signs for a shop reached from it: refuse other clients,
    whatever server (flask run --host, gunicorn -b) put the app on the network."""
    from config import is_loopback

    @app.before_request
    def refuse_remote_clients():
        if not is_loopback(request.remote_addr or ""):
            from shop.errors import ApiError

            raise ApiError(
                403,
                "secret_key_required",
                "This development shop answers only this machine: set SECRET_KEY to serve other clients.",
            )


def _request_ids(app: Flask) -> None:
    """Every response carries X-Request-ID, echoing the client's when it sent a sane one."""

    @app.before_request
    def refuse_nul_bytes():
        # PostgreSQL text cannot hold NUL: refuse it at the door rather than fail deep inside.
        form_nul = request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") and any(
            "\x00" in v for v in request.form.values()
        )
        if form_nul or "\x00" in request.path or b"%00" in request.query_string or b"\x00" in request.query_string:
            from shop.errors import ApiError

            raise ApiError(400, "malformed_request", "The request contains a NUL character.")

    @app.before_request
    def assign_request_id():
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if 0 < len(incoming) <= 200 and incoming.isprintable() else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
        if request.path.startswith(("/api/", "/webhooks/")):
            # Carts, orders and /me are private; only catalogue answers say otherwise (shop/http.py).
            response.headers.setdefault("Cache-Control", "private, no-store")
        return response
