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


def test_production_refuses_partner_webhooks_into_private_networks(monkeypatch):
    for name, value in (
        ("SECRET_KEY", "k" * 64),
        ("DATABASE_URL", "postgres://x@y/z"),
        ("ALLOW_TEST_PAYMENTS", "1"),
        ("PUBLIC_BASE_URL", "https://shop.example.com"),
    ):
        monkeypatch.setenv(name, value)
    get_config("production").validate()  # the rest is in order
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")
    with pytest.raises(RuntimeError, match="WEBHOOK_ALLOW_PRIVATE"):
        get_config("production").validate()


def test_defaults_point_at_the_embedded_stack():
    settings = from_environment({})
    assert settings["MAIL_BACKEND"] == "file" and settings["STORAGE_BACKEND"] == "local"
    assert settings["PAYMENT_PROVIDER"] == "test"
    assert from_environment({"STRIPE_SECRET_KEY": "sk_x"})["PAYMENT_PROVIDER"] == "stripe"


# -- the signing key (issue 9, item 2) ---------------------------------------------------------------
@pytest.fixture
def no_secret(monkeypatch, tmp_path):
    for name in ("SECRET_KEY", "SHOP_BIND_HOST", "FLASK_RUN_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHOP_VAR_DIR", str(tmp_path / "var"))
    return tmp_path / "var" / "secret_key"


def test_development_generates_a_private_key_once_per_data_directory(no_secret, monkeypatch, tmp_path):
    key = get_config("development").SECRET_KEY
    assert len(key) >= 64 and key != "dev-only-secret-change-me"
    assert no_secret.read_text().strip() == key and no_secret.stat().st_mode & 0o777 == 0o600
    assert get_config("development").SECRET_KEY == key  # reused by the next start (the worker, the CLI)
    monkeypatch.setenv("SHOP_VAR_DIR", str(tmp_path / "another"))
    assert get_config("development").SECRET_KEY != key  # another data directory, another key


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "shop.example.com", "::"])
def test_development_without_a_secret_refuses_a_non_loopback_bind(no_secret, monkeypatch, host):
    monkeypatch.setenv("SHOP_BIND_HOST", host)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        get_config("development")
    assert not no_secret.exists()
    monkeypatch.setenv("SECRET_KEY", "a" * 64)  # with a key of its own, it may listen anywhere
    assert get_config("development").SECRET_KEY == "a" * 64


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_development_on_loopback_uses_the_generated_key(no_secret, monkeypatch, host):
    monkeypatch.setenv("SHOP_BIND_HOST", host)
    assert get_config("development").SECRET_KEY_LOCAL_ONLY is True and no_secret.exists()


def test_tests_get_a_random_key_per_process(no_secret):
    key = get_config("test").SECRET_KEY
    assert len(key) >= 64 and key != "dev-only-secret-change-me" and get_config("test").SECRET_KEY == key
    assert not no_secret.exists()


@pytest.mark.parametrize("env_name", ["development", "test", "production"])
def test_the_once_published_key_is_refused_everywhere(monkeypatch, env_name):
    monkeypatch.setenv("SECRET_KEY", "dev-only-secret-change-me")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        get_config(env_name)
