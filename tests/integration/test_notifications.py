"""The notification layer: templates, backends (file, SendGrid through its SDK), and after-commit queueing."""

import email
from email import policy

import pytest
from rq import Queue

from shop.notifications import notify
from shop.notifications.jobs import send_notification
from tests.fakes.sendgrid import FakeSendGrid

PAYLOAD = {"name": "Ann", "link": "https://shop.example/account/verify/abc", "hours": 24}


def test_file_backend_writes_a_readable_multipart_mail(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path))
    with app.app_context():
        name = send_notification("account.verify_email", "ann@example.com", PAYLOAD)
    msg = email.message_from_bytes((tmp_path / name).read_bytes(), policy=policy.default)
    assert msg["To"] == "ann@example.com" and msg["Subject"] == "Confirm your e-mail address"
    assert msg["From"] == app.config["MAIL_FROM"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Hi Ann" in text and PAYLOAD["link"] in text and "24 hours" in text
    assert f'href="{PAYLOAD["link"]}"' in html and "<html" in html


def test_sendgrid_backend_speaks_the_v3_api_through_the_official_sdk(app, monkeypatch):
    with FakeSendGrid() as fake:
        for key, value in {
            "MAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": fake.api_key,
            "SENDGRID_API_HOST": fake.url,
        }.items():
            monkeypatch.setitem(app.config, key, value)
        with app.app_context():
            send_notification(
                "account.password_reset",
                "bo@example.com",
                {"name": "Bo", "link": "https://shop.example/r/1", "minutes": 60},
            )
    [sent] = fake.messages
    assert sent["personalizations"][0]["to"] == [{"email": "bo@example.com"}]
    assert sent["subject"] == "Reset your password" and sent["from"]["email"] == app.config["MAIL_FROM"]
    bodies = {c["type"]: c["value"] for c in sent["content"]}
    assert "https://shop.example/r/1" in bodies["text/plain"] and "60 minutes" in bodies["text/plain"]
    assert "text/html" in bodies


def test_sendgrid_failure_raises_so_the_job_is_retried(app, monkeypatch):
    with FakeSendGrid() as fake:
        fake.fail_next = 1
        for key, value in {
            "MAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": fake.api_key,
            "SENDGRID_API_HOST": fake.url,
        }.items():
            monkeypatch.setitem(app.config, key, value)
        with app.app_context(), pytest.raises(Exception):
            send_notification("account.verify_email", "cy@example.com", PAYLOAD)
        assert fake.messages == []


def test_mail_is_queued_only_when_the_transaction_commits(app, db_session, redis_client):
    mail = Queue("mail", connection=redis_client)
    notify("account.verify_email", "rolled@example.com", PAYLOAD)
    db_session.rollback()
    assert mail.count == 0
    notify("account.verify_email", "kept@example.com", PAYLOAD)
    assert mail.count == 0  # not before the commit
    db_session.commit()
    [job] = mail.jobs
    assert job.args == ("account.verify_email", "kept@example.com", PAYLOAD)
    assert job.retries_left == 5


def test_unknown_events_are_refused(app, db_session):
    with pytest.raises(ValueError):
        notify("account.nonsense", "x@example.com", {})
