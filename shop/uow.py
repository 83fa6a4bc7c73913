"""The unit of work: a block of database work that commits as a whole or leaves nothing behind.

    try:
        with unit_of_work():
            carts.add_item(cart, sku, quantity)
    except DomainError as exc:
        flash(problem_text(exc), "error")

The block commits when it ends normally. When anything is raised inside it (a domain refusal, a bug, a lost
connection) or by its commit, the session is rolled back and the same exception goes on up, unchanged: the
caller's `except` decides what the shopper sees, and never has to remember `db.session.rollback()`. After the
rollback the session is clean, so the view may read, or try again, in the same request: nothing half-made of
the refused attempt can ride along with a later commit (outbox rows recorded by `after_commit()` and
`events.publish()` are dropped with it).

The domain services own their transactions (one public function, one transaction, committed inside), so around
a service call the unit's own commit usually finds nothing left to write; what the unit adds is the rollback of
whatever a refusal left behind: rows flushed, row locks taken, a failed flush. Units do not nest: a commit
inside a unit (a service's, or an inner unit's) commits everything the outer one did so far.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask_sqlalchemy.session import Session
from sqlalchemy.orm import scoped_session

from shop.extensions import db


@contextmanager
def unit_of_work() -> Iterator[scoped_session[Session]]:
    """Commit the block's work, or roll all of it back and re-raise (see the module docstring)."""
    session = db.session
    try:
        yield session
        session.commit()
    except BaseException:
        discard()
        raise


def discard() -> None:
    """Roll the session back without hiding the failure that led here: a connection that died under a request
    may fail to roll back as well (the pool discards it), and the original exception is the one that matters."""
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the original failure is what matters
        pass
