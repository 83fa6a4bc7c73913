"""Mail sent once (issue 10, item 7): once the provider accepted a mail, nothing may make the shop send
it again; where a second copy cannot be ruled out (a worker killed right after the acceptance), it
carries the same Message-ID, so receiving systems can drop it. SMTP is a local server smtplib talks to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from shop.notifications.jobs import send_notification
from shop.notifications.models import SentNotification
from tests.fakes.smtp import FakeSmtp

SHIPPED = ("order.shipped", "ann@example.com", {"number": "W1", "lines": [], "link": "https://shop.example/o/W1"})


@pytest.fixture
def smtp(app, monkeypatch):
    with FakeSmtp() as fake:
        for key, value in {
            "MAIL_BACKEND": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": fake.port,
            "SMTP_USERNAME": "",
            "SMTP_STARTTLS": False,
            "MAIL_FROM": "Shop <shop@example.com>",
        }.items():
            monkeypatch.setitem(app.config, key, value)
        yield fake


def row(db_session) -> SentNotification:
    return db_session.scalar(
        select(SentNotification)
        .where(SentNotification.object_key == "order:W1")
        .execution_options(populate_existing=True)
    )


def test_a_mail_the_server_accepted_counts_as_sent_whatever_happens_after(app, db_session, smtp):
    smtp.quit_reply = "421 4.3.2 Service shutting down"  # accepted the mail, then refused a polite goodbye
    assert send_notification(*SHIPPED)
    assert row(db_session).status == "sent"
    assert send_notification(*SHIPPED) is None  # RQ's retry or a duplicate job: nothing to send
    assert len(smtp.messages) == 1


def test_a_mail_sent_again_after_a_crash_carries_the_same_message_id(app, db_session, smtp):
    assert send_notification(*SHIPPED)
    # What a worker killed between the server's acceptance and the `sent` mark leaves behind: a claim
    # still "sending", stale once a mail job can no longer be running. It is taken over and sent again.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    db_session.execute(
        update(SentNotification)
        .where(SentNotification.object_key == "order:W1")
        .values(status="sending", sent_at=None, claimed_at=an_hour_ago)
    )
    db_session.commit()
    assert send_notification(*SHIPPED)
    first, second = smtp.messages
    assert first["Message-ID"] == second["Message-ID"] and first["Message-ID"].endswith("@example.com>")
    assert row(db_session).status == "sent"
    other = send_notification("order.shipped", "ann@example.com", {"number": "W2", "lines": [], "link": "l"})
    assert other and smtp.messages[-1]["Message-ID"] != first["Message-ID"]  # one id per notification
