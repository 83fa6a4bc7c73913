"""Extensions, created once and unbound; create_app() binds them. Nothing connects at import."""

from datetime import datetime

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from redis import Redis
from rq import Queue
from sqlalchemy import DateTime, MetaData
from sqlalchemy.orm import DeclarativeBase, registry

# Deterministic constraint names, so Alembic migrations can drop what they create.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    # Every timestamp is timezone-aware (timestamptz), stored and compared in UTC.
    registry = registry(
        metadata=MetaData(naming_convention=NAMING), type_annotation_map={datetime: DateTime(timezone=True)}
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()

QUEUE_NAMES = ("default", "mail", "search")


class RedisExtension:
    """A Redis connection pool per app, from its REDIS_URL; `client` is the current app's."""

    def __init__(self):
        self._last: Redis | None = None

    def init_app(self, app):
        client = Redis.from_url(
            app.config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=2, health_check_interval=30
        )
        app.extensions["redis"] = self
        app.extensions["redis_client"] = client
        self._last = client

    @property
    def client(self) -> Redis:
        from flask import current_app, has_app_context

        if has_app_context():
            return current_app.extensions["redis_client"]
        return self._last  # outside any app (scripts built around one app)

    def queue(self, name: str = "default") -> Queue:
        if name not in QUEUE_NAMES:
            raise ValueError(f"unknown queue {name!r}")
        return Queue(name, connection=self.client)


redis_ext = RedisExtension()
