import pytest

from config import _database_url, from_environment, get_config


def test_database_url_accepts_standard_forms():
    assert _database_url("postgres://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert _database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


def test_unknown_environment_name_is_refused():
    with pytest.raises(RuntimeError, match="SHOP_ENV"):
        get_config("staging")


def test_settings_are_read_when_the_app_is_built_not_at_import(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://someone@db.example:6543/shop")
    monkeypatch.setenv("LOW_STOCK_THRESHOLD", "9")
    cfg = get_config("production")
    assert cfg.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://someone@db.example:6543/shop"
    assert cfg.LOW_STOCK_THRESHOLD == 9 and cfg.SESSION_COOKIE_SECURE is True


def test_production_refuses_to_start_without_a_secret(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgres://x@y/z")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        get_config("production").validate()


def test_defaults_point_at_the_embedded_stack():
    settings = from_environment({})
    assert settings["MAIL_BACKEND"] == "file" and settings["STORAGE_BACKEND"] == "local"
    assert settings["PAYMENT_PROVIDER"] == "test"
    assert from_environment({"STRIPE_SECRET_KEY": "sk_x"})["PAYMENT_PROVIDER"] == "stripe"
