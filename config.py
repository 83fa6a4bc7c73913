"""Settings, read from the environment. The only module that reads os.environ for the app.

`SHOP_ENV` picks the class: development (default), test or production. The environment is read
when `get_config()` is called (by create_app), not when this module is imported, so a process that
sets its environment first (the test suite, the embedded stack) is always what the app sees.
"""

import ipaddress
import os
import secrets
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
# Signed everything outside production until issue 9: published in the source, so never accepted again.
PUBLISHED_KEYS = {"dev-only-secret-change-me"}
LOOPBACK_HOSTS = ["localhost", "127.0.0.1"]


def _database_url(url: str) -> str:
    """Accept the standard postgres:// and postgresql:// forms; use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _trusted_hosts(env, public_base_url: str) -> list[str] | None:
    """The Host names the app answers to: TRUSTED_HOSTS (comma list; "*" for any) plus PUBLIC_BASE_URL's host,
    and the loopback names outside production."""
    raw = env.get("TRUSTED_HOSTS", "").strip()
    if raw == "*":
        return None
    hosts = [h.strip().lower() for h in raw.split(",") if h.strip()]
    hosts.append(urlsplit(public_base_url).hostname or "localhost")
    if env.get("SHOP_ENV", "development") != "production":
        hosts += LOOPBACK_HOSTS
    return list(dict.fromkeys(hosts))


def _networks(raw: str) -> list:
    """ "127.0.0.1/32, 10.0.0.0/8" -> ip_network objects (a bare address is a /32 or /128)."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]


def from_environment(env=None) -> dict:
    """Every setting that comes from the environment, with its default."""
    env = os.environ if env is None else env

    def text(name, default=""):
        return env.get(name, default)

    def number(name, default):
        return int(env.get(name, default))

    def flag(name, default=""):
        return env.get(name, default).lower() in ("1", "true", "yes", "on")

    # ABUSE_LIMITS=off makes every RATE_* and HOLD_* limit below default to off (a set one still applies): for
    # load benchmarks from one address. Off by default under SHOP_ENV=test: every test client is 127.0.0.1 and
    # the counters live in a Redis the tests share; the tests of the limits set them on the app's config.
    limits_on = flag("ABUSE_LIMITS", "off" if env.get("SHOP_ENV") == "test" else "on")

    def cap(name, default):
        """A whole-number limit; 0 turns it off."""
        return number(name, default if limits_on else 0)

    def rate(name, default):
        """A request rate "COUNT/SECONDS" (e.g. "60/60": 60 a minute, a fixed window in Redis); "0": off."""
        raw = text(name, default if limits_on else "0").strip()
        count, _, seconds = raw.partition("/")
        try:
            rule = (int(count or 0), int(seconds or 0))
        except ValueError:
            raise RuntimeError(f'{name} must look like "60/60" (count/seconds) or "0", not {raw!r}') from None
        if rule[0] > 0 and rule[1] <= 0:
            raise RuntimeError(f'{name} needs a window in seconds after the count: "60/60", not {raw!r}')
        return rule if rule[0] > 0 else None

    public_base_url = text("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    var_dir = text("SHOP_VAR_DIR", os.path.join(HERE, "var"))  # mail and uploads default under it too
    return {
        # Signs sessions, API tokens, mailed links and test-gateway webhooks. Required in production. Unset in
        # development: a random key generated once per data directory (VAR_DIR/secret_key, mode 0600), and only
        # while the web server listens on loopback; in tests: a random key per process.
        "SECRET_KEY": text("SECRET_KEY"),
        # The embedded stack's data directory (`make run --var`); the generated development key lives in it.
        "VAR_DIR": var_dir,
        # The address the web server listens on, as its starter reports it (`HOST=... make run` sets it; `flask run`
        # users may set FLASK_RUN_HOST). Development without SECRET_KEY refuses anything but loopback.
        "BIND_HOST": text("SHOP_BIND_HOST") or text("FLASK_RUN_HOST") or "127.0.0.1",
        # Back-office sessions end this long after log-in, or after this long without a request.
        "STAFF_SESSION_HOURS": number("STAFF_SESSION_HOURS", 12),
        "STAFF_IDLE_MINUTES": number("STAFF_IDLE_MINUTES", 60),
        "SQLALCHEMY_DATABASE_URI": _database_url(text("DATABASE_URL", "postgresql://postgres@127.0.0.1:15432/shop")),
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            "pool_size": number("DB_POOL_SIZE", 10),
            "max_overflow": number("DB_MAX_OVERFLOW", 10),
        },
        "REDIS_URL": text("REDIS_URL", "redis://127.0.0.1:16379/0"),
        "TYPESENSE_URL": text("TYPESENSE_URL", "http://127.0.0.1:18108"),
        # The event stream (shop.stream): redis://host:port/db (Redis Streams; empty = REDIS_URL) or
        # kafka://host:port[,host:port] (confluent-kafka). EVENT_STREAM_TOPIC names the stream / topic.
        "EVENT_STREAM_URL": text("EVENT_STREAM_URL", ""),
        "EVENT_STREAM_TOPIC": text("EVENT_STREAM_TOPIC", "shop.events"),
        # Redis Streams keep about this many entries (approximate MAXLEN trimming); Kafka topics are created with
        # EVENT_STREAM_PARTITIONS partitions. A consumer's unacknowledged entries go to another after
        # EVENT_CLAIM_IDLE_MS (Redis XAUTOCLAIM; Kafka reassigns a dead member's partitions by itself).
        "EVENT_STREAM_MAXLEN": number("EVENT_STREAM_MAXLEN", 1_000_000),
        "EVENT_STREAM_PARTITIONS": number("EVENT_STREAM_PARTITIONS", 3),
        "EVENT_CLAIM_IDLE_MS": number("EVENT_CLAIM_IDLE_MS", 30_000),
        # Partner webhooks may reach loopback and private addresses (development and tests only).
        "WEBHOOK_ALLOW_PRIVATE": flag("WEBHOOK_ALLOW_PRIVATE", "0"),
        # Seconds a partner's endpoint has to answer a delivery before it counts as failed (and is retried).
        "WEBHOOK_TIMEOUT": float(text("WEBHOOK_TIMEOUT", "10")),
        "TYPESENSE_API_KEY": text("TYPESENSE_API_KEY", "dev-typesense-key"),
        # The alias searches use (collections behind it are <alias>_<timestamp>); seconds before falling back.
        "TYPESENSE_COLLECTION": text("TYPESENSE_COLLECTION", "products"),
        "TYPESENSE_TIMEOUT": float(text("TYPESENSE_TIMEOUT", "2")),
        # The PostgreSQL search fallback counts option values over this many of the most relevant matches at most
        # (more matches: counts scaled to the total, flagged as estimates); category and price counts stay exact.
        "SEARCH_FACET_SAMPLE": number("SEARCH_FACET_SAMPLE", 1000),
        "CDN_BASE_URL": text("CDN_BASE_URL").rstrip("/"),
        "SHOP_NAME": text("SHOP_NAME", "The Shop"),
        "SHOP_CURRENCY": text("SHOP_CURRENCY", "USD"),
        # Catalogue pages may be cached by browsers and a CDN for this long (seconds).
        "CATALOG_MAX_AGE": number("CATALOG_MAX_AGE", 10),
        # Redis cache of catalogue reads (shop/cache.py): invalidated by every catalogue change, with
        # this TTL as a safety net. Off by default under SHOP_ENV=test: tests flush data without
        # committing, so no change hook fires; the cache tests switch it on.
        "CACHE_ENABLED": flag("CACHE_ENABLED", "0" if env.get("SHOP_ENV") == "test" else "1"),
        "CACHE_TTL_SECONDS": number("CACHE_TTL_SECONDS", 60),
        # After a Redis error the cache steps aside (PostgreSQL answers) for this long before trying again.
        "CACHE_RETRY_SECONDS": number("CACHE_RETRY_SECONDS", 5),
        "RESERVATION_TTL_SECONDS": number("RESERVATION_TTL_SECONDS", 900),
        # The stock gate (shop/inventory/gate.py): sold-out variants refused at checkout without their row lock;
        # a flag lapses after this many seconds whatever happens (a removal lost to a Redis error).
        "STOCK_GATE_ENABLED": flag("STOCK_GATE_ENABLED", "1"),
        "STOCK_GATE_SECONDS": number("STOCK_GATE_SECONDS", 5),
        # A bank payment submitted on Stripe's page before the hold ended keeps its stock this long for the bank.
        "ASYNC_PAYMENT_HOLD_SECONDS": number("ASYNC_PAYMENT_HOLD_SECONDS", 5 * 24 * 3600),
        # How long the signed "See your order" link in an order mail opens that order, in any browser (days).
        "ORDER_LINK_MAX_AGE_DAYS": number("ORDER_LINK_MAX_AGE_DAYS", 30),
        "LOW_STOCK_THRESHOLD": number("LOW_STOCK_THRESHOLD", 5),
        "PAYMENT_PROVIDER": text("PAYMENT_PROVIDER", "stripe" if env.get("STRIPE_SECRET_KEY") else "test"),
        "STRIPE_SECRET_KEY": text("STRIPE_SECRET_KEY"),
        "STRIPE_WEBHOOK_SECRET": text("STRIPE_WEBHOOK_SECRET"),
        "STRIPE_API_BASE": text("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/"),
        # Shipping: flat rate per method, free standard shipping from this goods total (minor units).
        "FREE_SHIPPING_THRESHOLD": number("FREE_SHIPPING_THRESHOLD", 7500),
        # Tax rates in basis points by COUNTRY or COUNTRY-REGION, "*" the default: '{"US-CA": 725, "*": 0}'.
        "TAX_RATES": text("TAX_RATES", ""),
        # Number of reverse proxies in front of the app whose X-Forwarded-* headers to trust (0: none).
        "PROXY_COUNT": number("PROXY_COUNT", 0),
        # API tokens (API.md: access 15 minutes, refresh 30 days).
        "ACCESS_TOKEN_SECONDS": number("ACCESS_TOKEN_SECONDS", 15 * 60),
        "REFRESH_TOKEN_SECONDS": number("REFRESH_TOKEN_SECONDS", 30 * 24 * 3600),
        # Log-in throttling: failures allowed per account and per IP within the window.
        "LOGIN_MAX_FAILURES_PER_ACCOUNT": number("LOGIN_MAX_FAILURES_PER_ACCOUNT", 5),
        "LOGIN_MAX_FAILURES_PER_IP": number("LOGIN_MAX_FAILURES_PER_IP", 20),
        "LOGIN_THROTTLE_WINDOW_SECONDS": number("LOGIN_THROTTLE_WINDOW_SECONDS", 15 * 60),
        # Request rates per client IP (and per target where it says so), "COUNT/SECONDS" fixed windows in
        # Redis; beyond them 429 rate_limited with Retry-After. "0" turns one off.
        "RATE_SIGNUPS_PER_IP": rate("RATE_SIGNUPS_PER_IP", "10/3600"),  # API and storefront sign-ups
        "RATE_RESETS_PER_IP": rate("RATE_RESETS_PER_IP", "10/3600"),  # password-reset requests
        "RATE_RESETS_PER_EMAIL": rate("RATE_RESETS_PER_EMAIL", "3/3600"),  # ...per address asked for
        "RATE_VERIFY_RESENDS_PER_IP": rate("RATE_VERIFY_RESENDS_PER_IP", "10/3600"),  # confirmation mails
        "RATE_VERIFY_RESENDS_PER_USER": rate("RATE_VERIFY_RESENDS_PER_USER", "3/3600"),  # ...per account
        "RATE_CART_CREATES_PER_IP": rate("RATE_CART_CREATES_PER_IP", "60/3600"),  # new carts (API and storefront)
        "RATE_CART_WRITES_PER_IP": rate("RATE_CART_WRITES_PER_IP", "120/60"),  # add, change, remove lines
        "RATE_CHECKOUTS_PER_IP": rate("RATE_CHECKOUTS_PER_IP", "10/600"),  # order placements tried
        # A cart holds at most this many lines (its quantity per line is 1..100 by the contract).
        "CART_MAX_LINES": number("CART_MAX_LINES", 50),
        # Unpaid stock holds (pending orders' live reservations), counted per client at checkout; beyond,
        # 409 hold_limit_reached. Pending orders and units per e-mail/account, and per IP (NAT: larger).
        "HOLD_MAX_ORDERS": cap("HOLD_MAX_ORDERS", 3),
        "HOLD_MAX_ORDERS_PER_IP": cap("HOLD_MAX_ORDERS_PER_IP", 10),
        "HOLD_MAX_UNITS": cap("HOLD_MAX_UNITS", 100),
        "HOLD_MAX_UNITS_PER_IP": cap("HOLD_MAX_UNITS_PER_IP", 300),
        # Of one SKU a client (e-mail, account or IP) may hold unpaid at most this percent of its stock on
        # hand, or HOLD_SKU_MIN_UNITS if that is more (so small stocks stay buyable).
        "HOLD_SKU_SHARE_PERCENT": cap("HOLD_SKU_SHARE_PERCENT", 25),
        "HOLD_SKU_MIN_UNITS": number("HOLD_SKU_MIN_UNITS", 5),
        "EMAIL_TOKEN_MAX_AGE": number("EMAIL_TOKEN_MAX_AGE", 24 * 3600),
        "RESET_TOKEN_MAX_AGE": number("RESET_TOKEN_MAX_AGE", 3600),
        # Mail: file (under var/mail), smtp or sendgrid.
        "MAIL_BACKEND": text("MAIL_BACKEND", "file"),
        "MAIL_FROM": text("MAIL_FROM", "shop@example.com"),
        # A mail claimed by a job that died mid-send (a killed worker) is taken over by a retry after this many
        # seconds; longer than a mail job may run (RQ stops it after 120 s), so a live sender is never doubled.
        "MAIL_CLAIM_STALE_SECONDS": number("MAIL_CLAIM_STALE_SECONDS", 300),
        "MAIL_DIR": text("MAIL_DIR", os.path.join(var_dir, "mail")),
        "SENDGRID_API_KEY": text("SENDGRID_API_KEY"),
        "SENDGRID_API_HOST": text("SENDGRID_API_HOST", "https://api.sendgrid.com"),
        "SMTP_HOST": text("SMTP_HOST", "localhost"),
        "SMTP_PORT": number("SMTP_PORT", 25),
        "SMTP_USERNAME": text("SMTP_USERNAME"),
        "SMTP_PASSWORD": text("SMTP_PASSWORD"),
        "SMTP_STARTTLS": flag("SMTP_STARTTLS"),
        # Base URL of every absolute link (mails, upload and payment URLs, webhooks): https://shop.example.com.
        # Never taken from the request's Host header. Required in production.
        "PUBLIC_BASE_URL": public_base_url,
        # Host headers the app answers to (comma list, "*" for any); others get 400. PUBLIC_BASE_URL's host is
        # always included, and outside production also localhost and 127.0.0.1.
        "TRUSTED_HOSTS": _trusted_hosts(env, public_base_url),
        # Largest request body (bytes) before 413 payload_too_large; the local upload URL allows UPLOAD_MAX_BYTES.
        "MAX_CONTENT_LENGTH": number("MAX_CONTENT_LENGTH", 1024 * 1024),
        # Deepest nesting of arrays and objects a JSON body may have (400 malformed_request beyond).
        "JSON_MAX_DEPTH": number("JSON_MAX_DEPTH", 32),
        # Strict-Transport-Security max-age in production (0: no header). Set it once the site is https-only.
        "HSTS_SECONDS": number("HSTS_SECONDS", 365 * 24 * 3600),
        # Clients (comma list of IPs or CIDRs) that see /readyz's per-dependency details (latencies, errors);
        # others get only {"status"}. Loopback by default; the address is the one after PROXY_COUNT proxies.
        "READYZ_DETAILS_ALLOW": _networks(text("READYZ_DETAILS_ALLOW", "127.0.0.1/32,::1/128")),
        # Uploaded images are decoded and encoded again (no trailing payloads or metadata); larger ones are refused.
        "UPLOAD_MAX_PIXELS": number("UPLOAD_MAX_PIXELS", 25_000_000),
        # Uploads: local (signed URLs served by the app, files under UPLOAD_DIR) or s3.
        "STORAGE_BACKEND": text("STORAGE_BACKEND", "local"),
        "UPLOAD_DIR": text("UPLOAD_DIR", os.path.join(var_dir, "uploads")),
        "UPLOAD_MAX_BYTES": number("UPLOAD_MAX_BYTES", 10 * 1024 * 1024),
        "UPLOAD_URL_SECONDS": number("UPLOAD_URL_SECONDS", 600),
        "S3_BUCKET": text("S3_BUCKET"),
        "S3_ENDPOINT_URL": text("S3_ENDPOINT_URL") or None,
        "S3_REGION": text("S3_REGION") or text("AWS_DEFAULT_REGION") or "us-east-1",
        # Observability (docs/observability.md). GET /metrics in Prometheus's text format (METRICS=off: no endpoint,
        # no counting), answered only to clients in METRICS_ALLOW (IPs or CIDRs, the address after PROXY_COUNT
        # proxies) or presenting METRICS_TOKEN as a bearer token. With several processes (gunicorn workers, RQ
        # workers on this host) set PROMETHEUS_MULTIPROC_DIR to an empty directory they share (prometheus-client
        # reads it itself). A worker on a host of its own serves its figures on WORKER_METRICS_PORT.
        "METRICS_ENABLED": flag("METRICS", "on"),
        "METRICS_ALLOW": _networks(text("METRICS_ALLOW", "127.0.0.1/32,::1/128")),
        "METRICS_TOKEN": text("METRICS_TOKEN"),
        "WORKER_METRICS_PORT": number("WORKER_METRICS_PORT", 0),
        # The back-office operations page asks this Prometheus for last-hour figures (empty: this process's own).
        "PROMETHEUS_URL": text("PROMETHEUS_URL").rstrip("/"),
        # Logs: one JSON object per line (json; the default in production) or text lines (development, tests).
        "LOG_FORMAT": text("LOG_FORMAT", "json" if env.get("SHOP_ENV") == "production" else "text"),
        "LOG_LEVEL": text("LOG_LEVEL", "INFO").upper(),
        # Traces: exported over OTLP/HTTP when set (the SDK reads OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER and
        # OTEL_TRACES_SAMPLER_ARG, OTEL_EXPORTER_OTLP_HEADERS itself).
        "OTEL_EXPORTER_OTLP_ENDPOINT": text("OTEL_EXPORTER_OTLP_ENDPOINT").rstrip("/"),
        # Errors to Sentry (sentry-sdk) when set, with personal data scrubbed.
        "SENTRY_DSN": text("SENTRY_DSN"),
        "SENTRY_ENVIRONMENT": text("SENTRY_ENVIRONMENT", env.get("SHOP_ENV", "development")),
    }


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (an address only this machine can reach)."""
    host = (host or "").strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


_process_keys: list[str] = []


def _process_key() -> str:
    """A random key for this process: every app it builds agrees on it, and nothing outlives it."""
    if not _process_keys:
        _process_keys.append(secrets.token_hex(32))
    return _process_keys[0]


def data_dir_key(var_dir: str) -> str:
    """The random key kept in `var_dir`/secret_key: created once (mode 0600), then reused by every process."""
    path = os.path.join(var_dir, "secret_key")
    if not os.path.exists(path):
        os.makedirs(var_dir, exist_ok=True)
        # Written aside, then linked into place: the web server, the worker and the CLI may race here,
        # and exactly one key wins; nobody reads a half-written file.
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)  # a key others on the machine can read signs nothing safely
    with open(path) as f:
        key = f.read().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path} does not hold a usable key: delete it and a new one is generated")
    return key


class Config:
    """What does not come from the environment."""

    ENV_NAME = "development"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    # True when SECRET_KEY was generated on this machine: the app then answers loopback clients only.
    SECRET_KEY_LOCAL_ONLY = False

    @classmethod
    def generated_secret(cls, settings: dict) -> dict:
        """Settings to use when SECRET_KEY is unset: none here (production refuses to start)."""
        return {}


class DevelopmentConfig(Config):
    @classmethod
    def generated_secret(cls, settings: dict) -> dict:
        if not is_loopback(settings["BIND_HOST"]):
            raise RuntimeError(
                f"SECRET_KEY is not set and the shop would listen on {settings['BIND_HOST']}: a key generated on "
                "this machine is only for a shop reached from it. Set SECRET_KEY (python -c 'import secrets; "
                "print(secrets.token_hex(32))') or listen on 127.0.0.1."
            )
        return {"SECRET_KEY": data_dir_key(settings["VAR_DIR"]), "SECRET_KEY_LOCAL_ONLY": True}


class TestConfig(Config):
    ENV_NAME = "test"
    TESTING = True
    WTF_CSRF_ENABLED = True  # tests prove that forms without the token are refused
    # Every JSON answer of /api/v1 is checked against its operation's declared statuses and models (a test that
    # gets an answer the OpenAPI document does not describe fails with BrokenContract).
    CHECK_API_RESPONSES = True

    @classmethod
    def generated_secret(cls, settings: dict) -> dict:
        return {"SECRET_KEY": _process_key()}


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"

    @classmethod
    def validate(cls):
        if not cls.SECRET_KEY:
            raise RuntimeError("SECRET_KEY must be set in production")
        if not os.environ.get("DATABASE_URL"):
            raise RuntimeError("DATABASE_URL must be set in production")
        if cls.PAYMENT_PROVIDER == "test" and os.environ.get("ALLOW_TEST_PAYMENTS") != "1":
            raise RuntimeError(
                "production needs a real payment provider: set STRIPE_SECRET_KEY "
                "(or ALLOW_TEST_PAYMENTS=1 for a staging shop that takes no money)"
            )
        if not os.environ.get("PUBLIC_BASE_URL"):
            raise RuntimeError(
                "PUBLIC_BASE_URL must be set in production (https://shop.example.com): every "
                "absolute link is built from it, never from the request's Host header"
            )
        if cls.WEBHOOK_ALLOW_PRIVATE:
            raise RuntimeError(
                "WEBHOOK_ALLOW_PRIVATE is for development and tests: in production it would let "
                "whoever registers a partner webhook reach the shop's private network"
            )


CONFIGS = {"development": DevelopmentConfig, "test": TestConfig, "production": ProductionConfig}


def get_config(name: str | None = None):
    """The settings class for `name` (or $SHOP_ENV), filled from the environment as it is now."""
    name = name or os.environ.get("SHOP_ENV", "development")
    try:
        base = CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"SHOP_ENV must be one of {', '.join(CONFIGS)}, not {name!r}") from None
    settings = from_environment()
    if settings["SECRET_KEY"] in PUBLISHED_KEYS:
        raise RuntimeError("SECRET_KEY is a value published in this project's source; choose a random one")
    if not settings["SECRET_KEY"]:
        settings.update(base.generated_secret(settings))
    return type(base.__name__, (base,), settings)
