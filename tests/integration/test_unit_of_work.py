"""shop.uow.unit_of_work(): a unit commits as a whole or leaves nothing behind, and the session stays usable
after a failed one. On a database of the test's own (committed_db), so commits are real and what was written is
read back over a connection of its own, never through the session under test."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop import create_app, events
from shop.catalog.models import Category
from shop.errors import ValidationError
from shop.extensions import db
from shop.inventory import services as inventory
from shop.uow import unit_of_work
from tests.conftest import config_for
from tests.factories import make_category, make_product


@pytest.fixture
def shop(committed_db):
    app = create_app(config_for(committed_db))
    with app.app_context():
        yield committed_db
        db.engine.dispose()


def written(url: str) -> dict[str, int]:
    """What is committed, seen from outside the session."""
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            for table in ("category", "product", "variant", "outbox_job")
        }


@pytest.mark.parametrize("failure", ["refusal", "bug"])
def test_a_failure_inside_the_unit_writes_nothing_and_leaves_the_session_usable(shop, failure):
    before = written(shop)
    with pytest.raises(ValidationError if failure == "refusal" else RuntimeError):
        with unit_of_work():
            category = make_category(slug="half-made")  # flushed: the rows are in the open transaction
            product = make_product(category, stock=5)
            variant_id = product.variants[0].id
            events.publish("stock.changed", "variant", variant_id, {"variant_id": variant_id})  # an outbox row
            if failure == "refusal":  # a real service refusing after the writes above (a stock count below 0)
                inventory.set_on_hand(variant_id, -1)
            raise RuntimeError("a bug after the writes")
    assert written(shop) == before  # no category, product, variant or event of the failed unit
    assert db.session.scalar(select(func.count()).select_from(Category).where(Category.slug == "half-made")) == 0
    with unit_of_work():  # the same session goes on working
        make_category(slug="after-the-failure")
    assert written(shop)["category"] == before["category"] + 1


def test_success_commits(shop):
    before = written(shop)
    with unit_of_work() as session:
        category = make_category(slug="kept")
        session.add(Category(name="Kept too", slug="kept-too", parent_id=category.id))
    after = written(shop)
    assert after["category"] == before["category"] + 2
    with psycopg.connect(shop) as conn:
        assert conn.execute("SELECT slug FROM category WHERE slug LIKE 'kept%' ORDER BY slug").fetchall() == [
            ("kept",),
            ("kept-too",),
        ]


def test_a_commit_that_fails_is_rolled_back_too(shop):
    before = written(shop)
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:  # the unique slug breaks only at the commit's flush
            session.add_all([Category(name="One", slug="twice"), Category(name="Two", slug="twice")])
    assert written(shop) == before
    # Rolled back, not left waiting for a rollback (PendingRollbackError): the session answers at once.
    assert db.session.scalar(select(func.count()).select_from(Category).where(Category.slug == "twice")) == 0
