"""The demo seed and the migrations, on real PostgreSQL."""

import os

import psycopg
import pytest
from sqlalchemy import func, select

from shop.catalog.models import Category, Product, Variant
from shop.catalog.seed import seed_demo


def test_demo_seed_is_believable_and_deterministic(committed_db):
    from shop import create_app
    from shop.catalog.seed import reset_catalogue
    from shop.extensions import db
    from tests.conftest import config_for

    app = create_app(config_for(committed_db))
    with app.app_context():
        counts = seed_demo(200, batch=64)  # several batches, as a large seed would run
        assert counts["categories"] >= 10 and counts["products"] == 200 and counts["variants"] >= 1000
        s = db.session
        assert s.scalar(select(func.count()).select_from(Category).where(Category.parent_id.isnot(None))) >= 10
        sold_out = s.scalar(select(func.count()).select_from(Variant).where(Variant.on_hand == 0))
        assert 0 < sold_out < counts["variants"] // 2
        assert s.scalar(select(func.count(func.distinct(Variant.sku)))) == counts["variants"]
        first = s.execute(select(Product.slug, Product.price_min, Product.price_max).order_by(Product.id)).all()
        reset_catalogue()
        seed_demo(200)
        assert s.execute(select(Product.slug, Product.price_min, Product.price_max).order_by(Product.id)).all() == first
        db.engine.dispose()


def test_migrations_upgrade_an_empty_database_and_downgrade_cleanly():
    from flask_migrate import downgrade, upgrade

    from shop import create_app
    from shop.extensions import db
    from tests.conftest import _server_url, config_for

    base = os.environ["DATABASE_URL"]
    name = "shop_migration_check"
    admin = _server_url(base, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    app = create_app(config_for(_server_url(base, name)))
    try:
        with app.app_context():
            upgrade()
            with psycopg.connect(_server_url(base, name)) as conn:
                tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
            assert {"category", "product", "product_option", "variant", "product_image"} <= tables
            downgrade(revision="-1")
            upgrade()
            downgrade(revision="base")
            with psycopg.connect(_server_url(base, name)) as conn:
                left = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
            assert left == {"alembic_version"}
            db.engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_variant_sku_is_unique_in_the_database(db_session):
    from sqlalchemy.exc import IntegrityError

    from tests.factories import make_category, make_product

    cat = make_category()
    p = make_product(cat)
    db_session.add(
        Variant(product_id=p.id, sku=p.variants[0].sku, options={"size": "XL", "colour": "Black"}, price_amount=100)
    )
    with pytest.raises(IntegrityError):
        db_session.flush()


def test_catalogue_rules_refuse_bad_products(db_session):
    from shop.catalog.services import CatalogError, build_product
    from tests.factories import make_category

    cat = make_category()
    with pytest.raises(CatalogError, match="one value of each option"):
        build_product(
            category_id=cat.id,
            name="X",
            options=[("size", ["S"])],
            variants=[{"sku": "X-1", "options": {"size": "XXL"}, "price_amount": 100}],
        )
    with pytest.raises(CatalogError, match="share the options"):
        build_product(
            category_id=cat.id,
            name="Y",
            options=[("size", ["S"])],
            variants=[
                {"sku": "Y-1", "options": {"size": "S"}, "price_amount": 100},
                {"sku": "Y-2", "options": {"size": "S"}, "price_amount": 100},
            ],
        )
    with pytest.raises(CatalogError, match="negative"):
        build_product(
            category_id=cat.id, name="Z", options=[], variants=[{"sku": "Z-1", "options": {}, "price_amount": -1}]
        )
