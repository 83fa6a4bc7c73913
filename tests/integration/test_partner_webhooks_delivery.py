"""Partner webhook deliveries against a real local receiver that verifies signatures with `standardwebhooks`:
an event reaches the endpoints subscribed to it, signed; 500s, timeouts and refused connections are retried on
schedule (the clock moved, not waited for) and then delivered; a delivery that never succeeds gives up after more
than 24 hours; three days of failures disable the endpoint and mail the admins, and a disabled endpoint gets
nothing; redirects and DNS answers are checked at every hop; two workers never send one attempt twice."""

from __future__ import annotations

import email
import threading
from datetime import UTC, datetime, timedelta, timezone
from email import policy

import pytest
from rq import Queue
from sqlalchemy import func, select

from shop import consumers
from shop.events import envelope
from shop.extensions import db
from shop.partners import attempts, jobs, services
from shop.partners.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.integration.test_buying_api import shelf  # noqa: F401 - fixture
from tests.integration.test_partner_webhooks import A, Receiver, call, private_ok, private_refused, resolving, world  # noqa: F401

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


@pytest.fixture
def short_timeout(app, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_TIMEOUT", 1.0)


def endpoint_for(receiver: Receiver, events=("order.placed",), url: str | None = None) -> WebhookEndpoint:
    endpoint, secret = services.create_endpoint({"url": url or receiver.url, "events": list(events)})
    receiver.secret = secret
    return endpoint


def placed(order_id: int = 7) -> dict:
    return envelope(
        "order.placed", "order", order_id, {"number": f"A{order_id}", "total": {"amount": 4200, "currency": "USD"}}
    )


def delivery(delivery_id: int) -> WebhookDelivery:
    db.session.expire_all()
    return db.session.get(WebhookDelivery, delivery_id)


def log(delivery_id: int) -> list[WebhookAttempt]:
    return list(
        db.session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
        )
    )


def test_an_event_reaches_each_subscribed_endpoint_once_signed(db_session, redis_client, private_ok):
    consumers.load_groups()
    with Receiver() as wants, Receiver() as other, Receiver() as off:
        endpoint_for(wants, ("order.placed", "order.shipped"))
        endpoint_for(other, ("order.shipped",))
        disabled = endpoint_for(off)
        services.update_endpoint(disabled.id, {"enabled": False})
        event = placed()
        assert consumers.handle("webhooks", event) is True
        assert consumers.handle("webhooks", event) is False  # redelivered by the stream: no second delivery
        assert attempts.deliver_due() == 1
    [got] = wants.delivered()
    assert got["envelope"] == event and got["headers"]["webhook-id"] == event["id"]
    assert got["body"] == services.body_of(event) and got["body"].startswith('{"id":')
    assert got["headers"]["Content-Type"] == "application/json"
    assert other.hits == 0 and off.hits == 0 and wants.bad == []
    [row] = db_session.scalars(select(WebhookDelivery)).all()
    assert row.state == "succeeded" and row.attempts == 1 and row.event_type == "order.placed"


def test_an_endpoint_hears_only_what_happens_after_it_was_registered(db_session, redis_client, private_ok):
    """A consumer that lags (or a new group reading the stream from its start) must not send a new partner the
    shop's past."""
    consumers.load_groups()
    with Receiver() as partner:
        endpoint = endpoint_for(partner, ("order.placed",))
        old = {**placed(1), "occurred_at": (endpoint.created_at - timedelta(seconds=5)).isoformat()}
        assert consumers.handle("webhooks", old) is True  # applied: there is nothing for this endpoint
        new = placed(2)
        assert consumers.handle("webhooks", new) is True
    assert db_session.scalars(select(WebhookDelivery.event_id)).all() == [new["id"]]


def test_500s_timeouts_and_refusals_are_retried_on_schedule_then_delivered(
    db_session, redis_client, private_ok, short_timeout, receiver
):
    endpoint = endpoint_for(receiver)
    [d] = services.record_deliveries(placed(), now=T0)
    receiver.answers = [500, ("sleep", 2.5)]
    assert attempts.deliver_due(now=T0) == 1
    first = delivery(d)
    assert first.state == "pending" and first.attempts == 1 and first.last_status == 500
    assert T0 + timedelta(seconds=4) <= first.next_attempt_at <= T0 + timedelta(seconds=6)
    assert db_session.get(WebhookEndpoint, endpoint.id).failing_since == T0
    assert attempts.deliver_due(now=T0 + timedelta(seconds=3)) == 0  # not due yet
    t1 = T0 + timedelta(seconds=7)
    assert attempts.deliver_due(now=t1) == 1  # stalls past the 1 s timeout
    second = delivery(d)
    assert "timed out" in second.last_error and second.last_status is None
    assert t1 + timedelta(minutes=4) <= second.next_attempt_at <= t1 + timedelta(minutes=6)
    receiver.close()
    t2 = t1 + timedelta(minutes=7)
    assert attempts.deliver_due(now=t2 - timedelta(minutes=4, seconds=1)) == 0
    assert attempts.deliver_due(now=t2) == 1
    third = delivery(d)
    assert "refused" in third.last_error and third.state == "pending"
    assert t2 + timedelta(minutes=24) <= third.next_attempt_at <= t2 + timedelta(minutes=36)
    receiver.open()
    assert attempts.deliver_due(now=t2 + timedelta(minutes=37)) == 1
    done = delivery(d)
    assert done.state == "succeeded" and done.attempts == 4 and done.finished_at == t2 + timedelta(minutes=37)
    assert db_session.get(WebhookEndpoint, endpoint.id).failing_since is None  # a success ends the streak
    assert [r["status"] for r in receiver.received] == [500, 204] and receiver.bad == []
    assert len({r["headers"]["webhook-id"] for r in receiver.received}) == 1  # one id on every attempt
    tries = log(d)
    assert [a.status_code for a in tries] == [500, None, None, 204]
    assert [bool(a.error) for a in tries] == [False, True, True, False]
    assert len(tries[0].response_excerpt) == 2048 and tries[0].response_excerpt.startswith('{"answer": 500')
    assert tries[1].duration_ms >= 900 and tries[0].request_headers["webhook-id"] == done.event_id
    assert tries[0].request_excerpt == done.body[:2048]


def test_a_delivery_that_never_succeeds_is_tried_over_a_day_then_failed(db_session, redis_client, private_ok, receiver):
    receiver.default = 503
    endpoint_for(receiver)
    [d] = services.record_deliveries(placed(), now=T0)
    now, times = T0, []
    while delivery(d).state == "pending":
        now = delivery(d).next_attempt_at
        assert attempts.deliver_due(now=now) == 1
        times.append(now)
    failed = delivery(d)
    assert failed.state == "failed" and failed.attempts == len(times) >= 8
    assert times[-1] - times[0] >= timedelta(hours=24)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == sorted(gaps[:5]) + gaps[5:] and gaps[0] < timedelta(seconds=7)  # growing pauses
    assert attempts.deliver_due(now=now + timedelta(days=1)) == 0 and receiver.hits == len(times)


def test_three_days_of_failures_disable_the_endpoint_and_mail_the_admins(
    app, db_session, redis_client, private_ok, receiver, world, tmp_path, monkeypatch
):
    receiver.default = 500
    endpoint = endpoint_for(receiver)
    [first] = services.record_deliveries(placed(1), now=T0)
    assert attempts.deliver_due(now=T0) == 1
    day2 = T0 + timedelta(days=2)
    [second] = services.record_deliveries(placed(2), now=day2)
    assert attempts.deliver_due(now=day2) == 2  # the first one's retry was due too
    assert db_session.get(WebhookEndpoint, endpoint.id).enabled is True  # failing for 2 days only
    hits = receiver.hits
    attempts.deliver_due(now=T0 + timedelta(days=3, minutes=1))
    off = db_session.get(WebhookEndpoint, endpoint.id)
    db_session.refresh(off)
    assert off.enabled is False and off.disabled_at == T0 + timedelta(days=3, minutes=1)
    assert "3 days" in off.disabled_reason
    assert receiver.hits == hits  # its due retries were not sent
    assert services.record_deliveries(placed(3)) == []  # and new events make no delivery
    assert attempts.deliver_due(now=T0 + timedelta(days=4)) == 0 and receiver.hits == hits
    # Every admin is mailed, once.
    jobs_ = [j for j in Queue("mail", connection=redis_client).jobs if j.args[0] == "webhooks.endpoint_disabled"]
    assert [j.args[1] for j in jobs_] == ["admin@example.com"]
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path))
    from shop.notifications.jobs import send_notification

    name = send_notification(*jobs_[0].args, **jobs_[0].kwargs)
    mail = email.message_from_bytes((tmp_path / name).read_bytes(), policy=policy.default)
    assert mail["Subject"] == "Webhook endpoint disabled: 127.0.0.1"
    text = mail.get_body(("plain",)).get_content()
    assert receiver.url in text and "HTTP 500" in text and "01 December 2026 09:00 UTC" in text
    assert f"/admin/partner-webhooks/{endpoint.id}/deliveries" in text
    # Enabled again: the waiting delivery goes out.
    receiver.default = 200
    services.update_endpoint(endpoint.id, {"enabled": True})
    assert db_session.get(WebhookEndpoint, endpoint.id).failing_since is None
    assert attempts.deliver_due(now=T0 + timedelta(days=5)) == 2
    assert delivery(first).state == delivery(second).state == "succeeded"


# -- the SSRF guard while sending -----------------------------------------------------------------
def test_a_redirect_to_the_metadata_service_is_refused(db_session, redis_client, private_ok, receiver):
    endpoint_for(receiver)
    receiver.answers = [("redirect", "http://169.254.169.254/latest/meta-data/iam/")]
    [d] = services.record_deliveries(placed(), now=T0)
    attempts.deliver_due(now=T0)
    attempt = log(d)[0]
    assert attempt.error == (
        "redirect refused: 169.254.169.254 is a cloud metadata address: webhooks may only "
        "reach public internet addresses."
    )
    assert attempt.status_code == 307 and delivery(d).state == "pending"


def test_redirects_are_followed_three_times_at_most(db_session, redis_client, private_ok, receiver):
    endpoint_for(receiver)
    receiver.answers = [("redirect", "/moved")]
    [d] = services.record_deliveries(placed(1), now=T0)
    attempts.deliver_due(now=T0)
    assert delivery(d).state == "succeeded" and log(d)[0].url == f"http://127.0.0.1:{receiver.port}/moved"
    receiver.answers = [("redirect", "/again")] * 4
    [e] = services.record_deliveries(placed(2), now=T0)
    attempts.deliver_due(now=T0)
    assert log(e)[0].error == "more than 3 redirects" and delivery(e).state == "pending"


def test_a_name_that_resolves_elsewhere_since_registration_is_refused_at_sending(
    db_session, redis_client, private_refused, monkeypatch
):
    answers = iter([["93.184.215.14"], ["10.0.0.8"]])
    resolving(monkeypatch, {"hooks.partner.example": lambda: next(answers)})
    endpoint, _ = services.create_endpoint({"url": "https://hooks.partner.example/in", "events": ["order.placed"]})
    [d] = services.record_deliveries(placed(), now=T0)
    attempts.deliver_due(now=T0)
    assert log(d)[0].error == (
        "URL refused: hooks.partner.example (10.0.0.8) is a private address: webhooks may "
        "only reach public internet addresses."
    )


def test_the_connection_goes_to_the_address_that_was_checked(
    db_session, redis_client, private_ok, receiver, monkeypatch
):
    """DNS rebinding: the name answers a harmless address to the check and another right after. The request is
    pinned to the checked one, so it reaches the receiver (a second lookup would go to 10.255.255.1)."""
    lookups = []

    def answer():
        lookups.append(1)
        return ["127.0.0.1"] if len(lookups) % 2 else ["10.255.255.1"]

    resolving(monkeypatch, {"partner.test": answer})
    endpoint, secret = services.create_endpoint(
        {"url": f"http://partner.test:{receiver.port}/hooks", "events": ["order.placed"]}
    )
    receiver.secret = secret
    lookups.clear()
    [d] = services.record_deliveries(placed(), now=T0)
    attempts.deliver_due(now=T0)
    assert delivery(d).state == "succeeded" and len(lookups) == 1
    assert receiver.received[0]["headers"]["Host"] == f"partner.test:{receiver.port}"


# -- the API's delivery log, retry and test event --------------------------------------------------
def test_test_event_retry_and_the_delivery_log_through_the_api(
    client, db_session, redis_client, private_ok, receiver, world
):
    admin = world["staff"]["admin"]
    made = call(client, "post", A, admin, {"url": receiver.url, "events": ["order.shipped"]}).get_json()
    receiver.secret = made["secret"]
    test = call(client, "post", f"{A}/{made['id']}/test", admin)
    assert test.status_code == 202 and test.get_json()["state"] == "pending"
    assert test.get_json()["event_type"] == "webhook.test"
    assert jobs.attempt_delivery(test.get_json()["id"]) == "succeeded"  # the job queued after the commit
    [ping] = receiver.delivered("webhook.test")
    assert ping["envelope"]["aggregate"] == {"type": "webhook_endpoint", "id": str(made["id"])}
    receiver.default = 500
    [d] = services.record_deliveries(envelope("order.shipped", "order", 3, {"number": "A3"}), now=T0)
    assert attempts.deliver_due(now=T0) == 1
    receiver.default = 200
    retried = call(client, "post", f"{A}/{made['id']}/deliveries/{d}/retry", admin)
    assert retried.status_code == 202 and retried.get_json()["state"] == "pending"
    queued = [
        (j.func_name.rpartition(".")[2], j.args)
        for j in Queue("default", connection=redis_client).jobs
        if j.func_name.startswith("shop.partners.jobs.")
    ]
    # The test event and the retry are jobs of their own (a consumer's deliveries are sent by its group's `then`).
    assert queued == [("attempt_delivery", (test.get_json()["id"],)), ("attempt_delivery", (d,))]
    assert jobs.attempt_delivery(d) == "succeeded" and jobs.attempt_delivery(d) is None  # the second: nothing due
    page = call(client, "get", f"{A}/{made['id']}/deliveries?per_page=1", admin).get_json()
    assert page["total"] == 2 and page["per_page"] == 1
    [item] = page["items"]
    assert item["id"] == d and item["state"] == "succeeded" and item["attempts"] == 2
    assert [a["status_code"] for a in item["log"]] == [500, 200]
    assert all(len(a["response_excerpt"]) <= 2048 and a["duration_ms"] >= 0 for a in item["log"])
    assert item["log"][0]["request_headers"]["webhook-signature"].startswith("v1,")
    failed_only = call(client, "get", f"{A}/{made['id']}/deliveries?state=failed", admin).get_json()
    assert failed_only["total"] == 0
    bad = call(client, "get", f"{A}/{made['id']}/deliveries?state=lost&page=0", admin)
    assert bad.status_code == 422 and set(bad.get_json()["error"]["details"]["fields"]) == {"state", "page"}
    assert call(client, "post", f"{A}/{made['id']}/deliveries/999999/retry", admin).status_code == 404
    assert call(client, "get", f"{A}/999999/deliveries", admin).status_code == 404


# -- two workers at once ---------------------------------------------------------------------------
def test_two_workers_scanning_at_once_send_each_attempt_once(committed_db, receiver):
    from shop import create_app
    from tests.conftest import config_for

    shop = create_app(config_for(committed_db, WEBHOOK_ALLOW_PRIVATE=True))
    with shop.app_context():
        endpoint, receiver.secret = services.create_endpoint({"url": receiver.url, "events": ["order.placed"]})
        for i in range(40):
            services.record_deliveries(placed(i), now=T0)
        db.session.commit()
    start, counts, errors = threading.Barrier(4), [], []

    def scan():
        try:
            with shop.app_context():
                start.wait()
                counts.append(attempts.deliver_due(now=T0 + timedelta(seconds=1)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def one(delivery_id):
        with shop.app_context():
            counts.append(1 if attempts.attempt(delivery_id, now=T0 + timedelta(seconds=1)) else 0)

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sum(counts) == 40 and receiver.hits == 40
    assert sorted(r["envelope"]["aggregate"]["id"] for r in receiver.received) == sorted(str(i) for i in range(40))
    # The job path and the scan racing for one delivery: one request.
    with shop.app_context():
        [late] = services.record_deliveries(placed(99), now=T0)
        db.session.commit()
    counts.clear()
    threads = [threading.Thread(target=one, args=(late,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 1 and receiver.hits == 41
    with shop.app_context():
        assert db.session.scalar(select(func.count()).select_from(WebhookAttempt)) == 41
        assert db.session.scalar(select(func.max(WebhookDelivery.attempts))) == 1
        db.engine.dispose()


# -- end to end ------------------------------------------------------------------------------------
def consume_pending() -> int:
    """Relay every committed event to the stream and let the "webhooks" group consume it (what the relay and
    `python worker.py events` do)."""
    return consumers.drain(["webhooks"])


def test_an_order_placed_through_checkout_reaches_the_partner_signed(
    client, db_session, redis_client, private_ok, receiver, shelf
):
    from tests.integration.test_buying_api import checkout, guest_cart

    endpoint_for(receiver, ("order.placed",))
    placed_order = checkout(client, guest_cart(client, shelf["M"].sku, 2))
    assert placed_order.status_code == 201
    order = placed_order.get_json()["order"]
    assert consume_pending() >= 1
    attempts.deliver_due()
    [got] = receiver.delivered("order.placed")
    assert receiver.bad == [] and got["envelope"]["aggregate"] == {"type": "order", "id": str(order["id"])}
    assert got["headers"]["webhook-signature"].startswith("v1,") and got["envelope"]["version"] == 1
    assert got["envelope"]["data"]["number"] == order["number"]
    assert consume_pending() == 0  # nothing new: nothing is delivered twice
    attempts.deliver_due()
    assert len(receiver.delivered("order.placed")) == 1


def test_retry_of_a_delivery_being_sent_right_now_is_refused(
    client, db_session, redis_client, private_ok, receiver, world
):
    """An admin pressing Retry while a worker is sending that delivery would have it sent twice at once."""
    admin = world["staff"]["admin"]
    made = call(client, "post", A, admin, {"url": receiver.url, "events": ["order.shipped"]}).get_json()
    receiver.secret = made["secret"]
    [d] = services.record_deliveries(envelope("order.shipped", "order", 3, {"number": "A3"}))
    [held] = attempts.claim(datetime.now(UTC), delivery_id=d)  # a worker took it and is sending
    busy = call(client, "post", f"{A}/{made['id']}/deliveries/{d}/retry", admin)
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "delivery_in_progress"
    attempts.record(held, attempts.send(held, allow_private=True, timeout=5), datetime.now(UTC))
    assert delivery(d).state == "succeeded" and len(receiver.delivered("order.shipped")) == 1
    again = call(client, "post", f"{A}/{made['id']}/deliveries/{d}/retry", admin)  # done: may be sent again
    assert again.status_code == 202 and again.get_json()["state"] == "pending"
