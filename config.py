"""Settings, read from the environment. The only module that reads os.environ for the app.

`SHOP_ENV` picks the class: development (default), test or production.
"""
import os


def _database_url(url: str) -> str:
    """Accept the standard postgres:// and postgresql:// forms; use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class Config:
    ENV_NAME = "development"
    SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-secret-change-me")
    SQLALCHEMY_DATABASE_URI = _database_url(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:15432/shop"))
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": _int("DB_POOL_SIZE", 10),
                                 "max_overflow": _int("DB_MAX_OVERFLOW", 10)}
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0")
    TYPESENSE_URL = os.environ.get("TYPESENSE_URL", "http://127.0.0.1:18108")
    TYPESENSE_API_KEY = os.environ.get("TYPESENSE_API_KEY", "dev-typesense-key")
    CDN_BASE_URL = os.environ.get("CDN_BASE_URL", "").rstrip("/")
    SHOP_NAME = os.environ.get("SHOP_NAME", "The Shop")
    SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "USD")
    # Catalogue pages may be cached by browsers and a CDN for this long (seconds).
    CATALOG_MAX_AGE = _int("CATALOG_MAX_AGE", 60)
    RESERVATION_TTL_SECONDS = _int("RESERVATION_TTL_SECONDS", 900)
    LOW_STOCK_THRESHOLD = _int("LOW_STOCK_THRESHOLD", 5)
    PAYMENT_PROVIDER = os.environ.get("PAYMENT_PROVIDER", "stripe" if os.environ.get("STRIPE_SECRET_KEY") else "test")
    MAIL_BACKEND = os.environ.get("MAIL_BACKEND", "file")
    MAIL_FROM = os.environ.get("MAIL_FROM", "shop@example.com")
    STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "local")
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    JSON_SORT_KEYS = False


class DevelopmentConfig(Config):
    pass


class TestConfig(Config):
    ENV_NAME = "test"
    TESTING = True
    CATALOG_MAX_AGE = 60


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"

    @classmethod
    def validate(cls):
        if cls.SECRET_KEY == Config.SECRET_KEY or not os.environ.get("SECRET_KEY"):
            raise RuntimeError("SECRET_KEY must be set in production")
        if not os.environ.get("DATABASE_URL"):
            raise RuntimeError("DATABASE_URL must be set in production")


CONFIGS = {"development": DevelopmentConfig, "test": TestConfig, "production": ProductionConfig}


def get_config(name: str | None = None):
    """The settings class for `name`, or for $SHOP_ENV."""
    name = name or os.environ.get("SHOP_ENV", "development")
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"SHOP_ENV must be one of {', '.join(CONFIGS)}, not {name!r}") from None
