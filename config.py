"""Settings, read from the environment. The only module that reads os.environ for the app.

`SHOP_ENV` picks the class: development (default), test or production. The environment is read
when `get_config()` is called (by create_app), not when this module is imported, so a process that
sets its environment first (the test suite, the embedded stack) is always what the app sees.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _database_url(url: str) -> str:
    """Accept the standard postgres:// and postgresql:// forms; use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def from_environment(env=None) -> dict:
    """Every setting that comes from the environment, with its default."""
    env = os.environ if env is None else env

    def text(name, default=""):
        return env.get(name, default)

    def number(name, default):
        return int(env.get(name, default))

    def flag(name, default=""):
        return env.get(name, default).lower() in ("1", "true", "yes", "on")

    return {
        "SECRET_KEY": text("SECRET_KEY", "dev-only-secret-change-me"),
        "SQLALCHEMY_DATABASE_URI": _database_url(text("DATABASE_URL", "postgresql://postgres@127.0.0.1:15432/shop")),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "pool_size": number("DB_POOL_SIZE", 10),
                                      "max_overflow": number("DB_MAX_OVERFLOW", 10)},
        "REDIS_URL": text("REDIS_URL", "redis://127.0.0.1:16379/0"),
        "TYPESENSE_URL": text("TYPESENSE_URL", "http://127.0.0.1:18108"),
        "TYPESENSE_API_KEY": text("TYPESENSE_API_KEY", "dev-typesense-key"),
        # The alias searches use (collections behind it are <alias>_<timestamp>); seconds before falling back.
        "TYPESENSE_COLLECTION": text("TYPESENSE_COLLECTION", "products"),
        "TYPESENSE_TIMEOUT": float(text("TYPESENSE_TIMEOUT", "2")),
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
        "EMAIL_TOKEN_MAX_AGE": number("EMAIL_TOKEN_MAX_AGE", 24 * 3600),
        "RESET_TOKEN_MAX_AGE": number("RESET_TOKEN_MAX_AGE", 3600),
        # Mail: file (under var/mail), smtp or sendgrid.
        "MAIL_BACKEND": text("MAIL_BACKEND", "file"),
        "MAIL_FROM": text("MAIL_FROM", "shop@example.com"),
        "MAIL_DIR": text("MAIL_DIR", os.path.join(HERE, "var", "mail")),
        "SENDGRID_API_KEY": text("SENDGRID_API_KEY"),
        "SENDGRID_API_HOST": text("SENDGRID_API_HOST", "https://api.sendgrid.com"),
        "SMTP_HOST": text("SMTP_HOST", "localhost"),
        "SMTP_PORT": number("SMTP_PORT", 25),
        "SMTP_USERNAME": text("SMTP_USERNAME"),
        "SMTP_PASSWORD": text("SMTP_PASSWORD"),
        "SMTP_STARTTLS": flag("SMTP_STARTTLS"),
        # Base URL for links in e-mails sent outside a request (https://shop.example.com).
        "PUBLIC_BASE_URL": text("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        # Uploads: local (signed URLs served by the app, files under UPLOAD_DIR) or s3.
        "STORAGE_BACKEND": text("STORAGE_BACKEND", "local"),
        "UPLOAD_DIR": text("UPLOAD_DIR", os.path.join(HERE, "var", "uploads")),
        "UPLOAD_MAX_BYTES": number("UPLOAD_MAX_BYTES", 10 * 1024 * 1024),
        "UPLOAD_URL_SECONDS": number("UPLOAD_URL_SECONDS", 600),
        "S3_BUCKET": text("S3_BUCKET"),
        "S3_ENDPOINT_URL": text("S3_ENDPOINT_URL") or None,
        "S3_REGION": text("S3_REGION") or text("AWS_DEFAULT_REGION") or "us-east-1",
    }


class Config:
    """What does not come from the environment."""

    ENV_NAME = "development"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"


class DevelopmentConfig(Config):
    pass


class TestConfig(Config):
    ENV_NAME = "test"
    TESTING = True
    WTF_CSRF_ENABLED = True  # tests prove that forms without the token are refused


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"

    @classmethod
    def validate(cls):
        if not os.environ.get("SECRET_KEY") or cls.SECRET_KEY == "dev-only-secret-change-me":
            raise RuntimeError("SECRET_KEY must be set in production")
        if not os.environ.get("DATABASE_URL"):
            raise RuntimeError("DATABASE_URL must be set in production")
        if cls.PAYMENT_PROVIDER == "test" and os.environ.get("ALLOW_TEST_PAYMENTS") != "1":
            raise RuntimeError("production needs a real payment provider: set STRIPE_SECRET_KEY "
                               "(or ALLOW_TEST_PAYMENTS=1 for a staging shop that takes no money)")


CONFIGS = {"development": DevelopmentConfig, "test": TestConfig, "production": ProductionConfig}


def get_config(name: str | None = None):
    """The settings class for `name` (or $SHOP_ENV), filled from the environment as it is now."""
    name = name or os.environ.get("SHOP_ENV", "development")
    try:
        base = CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"SHOP_ENV must be one of {', '.join(CONFIGS)}, not {name!r}") from None
    return type(base.__name__, (base,), from_environment())
