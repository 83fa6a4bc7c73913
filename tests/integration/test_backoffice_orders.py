"""The back-office orders, refunds, webhook events and dashboard under API.md's role table.

Each role sees the orders; personal data and payment details only where its row allows; each
button (a POST with CSRF) works for the roles in its row and is 403 with nothing changed for the rest.
"""

import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from shop.accounts.permissions import Permission as P
from shop.audit.models import AuditEntry
from shop.orders.models import Order, OrderEvent, OrderLine
from shop.payments.models import Payment, Refund, WebhookEvent
from tests.integration.test_permissions import ROLES, TABLE, as_user, csrf_token, world  # noqa: F401 - fixture

_n = itertools.count(1)
BUYER = "buyer.private@example.com"
PHONE = "+1 555 0100 77"
STREET = "12 Warehouse Lane"
TRANSITIONS = [  # (from, to, permission needed)
    ("confirmed", "processing", P.ORDERS_FULFIL),
    ("processing", "shipped", P.ORDERS_FULFIL),
    ("shipped", "delivered", P.ORDERS_FULFIL),
    ("confirmed", "cancelled", P.ORDERS_CANCEL),
    ("processing", "cancelled", P.ORDERS_CANCEL),
    ("delivered", "returned", P.ORDERS_CANCEL),
]


def make_order(db_session, world, status="confirmed", *, paid=True, created_at=None, total=5500, currency="USD"):
    """An order as checkout leaves it (lines, events) and, when paid, its succeeded test payment."""
    n = next(_n)
    variant = world["variant"]
    order = Order(
        number=f"T-{n:05d}-{uuid.uuid4().hex[:4].upper()}",
        user_id=world["customer"].id,
        email=BUYER,
        status=status,
        currency=currency,
        subtotal=total - 500,
        discount=0,
        shipping=500,
        tax=0,
        total=total,
        shipping_method="standard",
        shipping_address={
            "name": "Pat Buyer",
            "line1": STREET,
            "city": "Springfield",
            "region": "IL",
            "postal_code": "12345",
            "country": "US",
            "phone": PHONE,
        },
        billing_address={
            "name": "Pat Buyer",
            "line1": "1 Billing Road",
            "city": "Springfield",
            "postal_code": "12345",
            "country": "US",
        },
    )
    if created_at is not None:
        order.created_at = created_at
    order.lines = [
        OrderLine(
            variant_id=variant.id,
            sku=variant.sku,
            name="Tee",
            options=variant.options,
            quantity=2,
            unit_price=(total - 500) // 2,
            line_total=total - 500,
        )
    ]
    provider_id = f"pi_test_x{n}"
    order.events = [OrderEvent(from_status=None, to_status="pending", actor="customer", note="Order placed")]
    if status != "pending":
        order.events.append(
            OrderEvent(
                from_status="pending", to_status="confirmed", actor="test", note=f"Payment {provider_id} succeeded"
            )
        )
    db_session.add(order)
    db_session.flush()
    if paid:
        db_session.add(
            Payment(
                order_id=order.id,
                provider="test",
                provider_id=provider_id,
                status="succeeded",
                amount=total,
                currency=currency,
            )
        )
        db_session.flush()
    return order


def fresh(db_session, order):
    db_session.expire_all()
    return db_session.get(Order, order.id)


def event_count(db_session, order) -> int:
    return db_session.scalar(select(func.count()).select_from(OrderEvent).where(OrderEvent.order_id == order.id))


# -- seeing orders --------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_orders_with_personal_data_and_payments_per_its_row(app, world, db_session, role):
    order = make_order(db_session, world)
    client = as_user(app, world["staff"][role])

    listing = client.get("/admin/orders/")
    assert listing.status_code == 200
    html = listing.get_data(as_text=True)
    assert order.number in html and "$55.00" in html
    assert (BUYER in html) == (role in TABLE[P.CUSTOMERS_PII])
    assert ("Customer e-mail" in html) == (role in TABLE[P.CUSTOMERS_PII])

    page = client.get(f"/admin/orders/{order.id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert order.number in html and "Tee" in html and "Order placed" in html
    assert (BUYER in html) == (role in TABLE[P.CUSTOMERS_PII])
    assert (STREET in html) == (role in TABLE[P.ORDER_SHIPPING_ADDRESS])
    # laid out as the country writes it (the picker reads "City, ST ZIP" as on the parcel's label)
    assert ("Springfield, IL 12345" in html) == (role in TABLE[P.ORDER_SHIPPING_ADDRESS])
    assert (PHONE in html) == (role in TABLE[P.CUSTOMERS_PII])  # warehouse: the address, not the phone
    assert ("1 Billing Road" in html) == (role in TABLE[P.CUSTOMERS_PII])
    payments_visible = role in TABLE[P.PAYMENTS]
    assert ("pi_test_x" in html) == payments_visible  # not even inside an event note
    assert ("Payments</h2>" in html) == payments_visible


def test_the_details_link_leads_to_the_order_page(app, world, db_session):
    order = make_order(db_session, world)
    client = as_user(app, world["staff"]["warehouse"])
    resp = client.get(f"/admin/orders/details/?id={order.id}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/admin/orders/{order.id}")
    assert client.get("/admin/orders/999999999").status_code == 404


def test_orders_are_searched_by_number_and_filtered_by_status(app, world, db_session):
    confirmed = make_order(db_session, world, "confirmed")
    shipped = make_order(db_session, world, "shipped")
    client = as_user(app, world["staff"]["analyst"])
    html = client.get(f"/admin/orders/?search={shipped.number}").get_data(as_text=True)
    assert shipped.number in html and confirmed.number not in html
    html = client.get("/admin/orders/?flt0_0=confirmed").get_data(as_text=True)
    assert confirmed.number in html and shipped.number not in html


@pytest.mark.parametrize("path", ["/admin/orders/new/", "/admin/orders/edit/?id=1"])
@pytest.mark.parametrize("role", ROLES)
def test_orders_are_never_created_or_edited_in_the_list(app, world, role, path):
    assert as_user(app, world["staff"][role]).get(path).status_code == 403


def test_orders_are_for_staff_only(app, world, db_session):
    order = make_order(db_session, world)
    for path in ("/admin/orders/", f"/admin/orders/{order.id}"):
        anonymous = app.test_client().get(path)
        assert anonymous.status_code == 302 and "/admin/login" in anonymous.headers["Location"]
        assert as_user(app, world["customer"]).get(path).status_code == 403


@pytest.mark.parametrize("role", ROLES)
def test_the_order_page_offers_the_buttons_of_the_role(app, world, db_session, role):
    confirmed = make_order(db_session, world, "confirmed")
    delivered = make_order(db_session, world, "delivered")
    client = as_user(app, world["staff"][role])
    html = client.get(f"/admin/orders/{confirmed.id}").get_data(as_text=True)
    assert ("Start processing" in html) == (role in TABLE[P.ORDERS_FULFIL])
    assert "Mark shipped" not in html  # not a move from confirmed
    assert ("Cancel order" in html) == (role in TABLE[P.ORDERS_CANCEL])
    assert (f'action="/admin/orders/{confirmed.id}/refund"' in html) == (role in TABLE[P.PAYMENTS])
    html = client.get(f"/admin/orders/{delivered.id}").get_data(as_text=True)
    assert ("Record return" in html) == (role in TABLE[P.ORDERS_CANCEL])
    assert "Cancel order" not in html


# -- moving orders --------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("start,target,permission", TRANSITIONS)
def test_status_buttons_follow_the_table(app, world, db_session, redis_client, role, start, target, permission):
    order = make_order(db_session, world, start)
    before = event_count(db_session, order)
    user = world["staff"][role]
    client = as_user(app, user)
    resp = client.post(
        f"/admin/orders/{order.id}/transition",
        data={"csrf_token": csrf_token(client), "status": target, "note": "by the book"},
    )
    order = fresh(db_session, order)
    if role in TABLE[permission]:
        assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/admin/orders/{order.id}")
        assert order.status == target
        last = order.events[-1]
        assert (last.from_status, last.to_status, last.actor, last.note) == (start, target, user.email, "by the book")
        assert event_count(db_session, order) == before + 1
        audited = db_session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "Order", AuditEntry.entity_id == str(order.id))
        ).all()
        assert any(a.actor_email == user.email and a.channel == "back-office" for a in audited)
    else:
        assert resp.status_code == 403
        assert order.status == start and event_count(db_session, order) == before


@pytest.mark.parametrize("target", ["confirmed", "refunded", "pending"])
def test_moves_only_the_system_makes_are_refused_to_every_role(app, world, db_session, target):
    order = make_order(db_session, world, "pending" if target == "confirmed" else "returned")
    client = as_user(app, world["staff"]["admin"])
    resp = client.post(
        f"/admin/orders/{order.id}/transition", data={"csrf_token": csrf_token(client), "status": target}
    )
    assert resp.status_code == 403
    assert fresh(db_session, order).status == ("pending" if target == "confirmed" else "returned")


def test_an_unknown_status_is_a_bad_request(app, world, db_session):
    order = make_order(db_session, world)
    client = as_user(app, world["staff"]["admin"])
    resp = client.post(
        f"/admin/orders/{order.id}/transition", data={"csrf_token": csrf_token(client), "status": "teleported"}
    )
    assert resp.status_code == 400 and fresh(db_session, order).status == "confirmed"


def test_a_move_the_state_machine_refuses_becomes_a_message(app, world, db_session):
    order = make_order(db_session, world, "confirmed")
    before = event_count(db_session, order)
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(
        f"/admin/orders/{order.id}/transition", data={"csrf_token": csrf_token(client), "status": "delivered"}
    )
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "An order that is confirmed cannot become delivered." in page and 'role="alert"' in page
    assert fresh(db_session, order).status == "confirmed" and event_count(db_session, order) == before


def test_status_buttons_without_a_csrf_token_are_refused(app, world, db_session):
    order = make_order(db_session, world, "confirmed")
    client = as_user(app, world["staff"]["admin"])
    resp = client.post(f"/admin/orders/{order.id}/transition", data={"status": "processing"})
    assert resp.status_code == 400 and fresh(db_session, order).status == "confirmed"


def test_a_move_on_a_missing_order_is_404(app, world, db_session):
    client = as_user(app, world["staff"]["admin"])
    resp = client.post(
        "/admin/orders/999999999/transition", data={"csrf_token": csrf_token(client), "status": "processing"}
    )
    assert resp.status_code == 404


# -- refunds --------------------------------------------------------------------------------------
def refund_form(client, amount="12.50", reason="Scuffed box", key=None):
    return {
        "csrf_token": csrf_token(client),
        "amount": amount,
        "reason": reason,
        "idempotency_key": key or uuid.uuid4().hex,
    }


def refunds_of(db_session, order):
    db_session.expire_all()
    return db_session.scalars(select(Refund).join(Payment).where(Payment.order_id == order.id)).all()


@pytest.mark.parametrize("role", ROLES)
def test_refund_button_follows_the_table(app, world, db_session, redis_client, role):
    order = make_order(db_session, world, "delivered")
    user = world["staff"][role]
    client = as_user(app, user)
    resp = client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client))
    payment = db_session.scalar(select(Payment).where(Payment.order_id == order.id))
    refunds = refunds_of(db_session, order)
    if role in TABLE[P.PAYMENTS]:
        assert resp.status_code == 302
        assert [(r.amount, r.reason, r.actor, r.status) for r in refunds] == [
            (1250, "Scuffed box", user.email, "succeeded")
        ]
        assert payment.refunded_amount == 1250
        assert fresh(db_session, order).status == "delivered"  # a part refund is no status move
        page = client.get(f"/admin/orders/{order.id}").get_data(as_text=True)
        assert "Refunded $12.50" in page and "Scuffed box" in page
    else:
        assert resp.status_code == 403
        assert refunds == [] and payment.refunded_amount == 0


def test_a_full_refund_of_a_returned_order_marks_it_refunded(app, world, db_session, redis_client):
    order = make_order(db_session, world, "returned")
    user = world["staff"]["support"]
    client = as_user(app, user)
    resp = client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, amount="55.00", reason="Returned"))
    assert resp.status_code == 302
    order = fresh(db_session, order)
    assert order.status == "refunded"
    assert (order.events[-1].to_status, order.events[-1].actor) == ("refunded", user.email)


@pytest.mark.parametrize(
    "amount,message",
    [
        ("60.00", "The refund must be between 1 and 5500."),
        ("0", "The refund must be between 1 and 5500."),
        ("12.505", "Enter the amount like 12.50"),
        ("twelve", "Enter the amount like 12.50"),
        ("", "Enter an amount, e.g. 12.50."),
    ],
)
def test_a_refund_the_service_refuses_becomes_a_message(app, world, db_session, redis_client, amount, message):
    order = make_order(db_session, world, "delivered")
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, amount=amount))
    assert resp.status_code == 302
    assert message in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert refunds_of(db_session, order) == []


def test_refunding_an_unpaid_order_becomes_a_message(app, world, db_session, redis_client):
    order = make_order(db_session, world, "confirmed", paid=False)
    client = as_user(app, world["staff"]["manager"])
    resp = client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client))
    assert resp.status_code == 302
    assert "no paid amount left to refund" in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_a_refund_form_sent_twice_refunds_once(app, world, db_session, redis_client):
    order = make_order(db_session, world, "delivered")
    client = as_user(app, world["staff"]["manager"])
    data = refund_form(client)
    assert client.post(f"/admin/orders/{order.id}/refund", data=data).status_code == 302
    again = client.post(f"/admin/orders/{order.id}/refund", data=data)
    assert again.status_code == 302
    assert "not made twice" in client.get(again.headers["Location"]).get_data(as_text=True)
    assert [r.amount for r in refunds_of(db_session, order)] == [1250]


def test_a_failed_refund_can_be_corrected_and_sent_with_the_same_form(app, world, db_session, redis_client):
    order = make_order(db_session, world, "delivered")
    client = as_user(app, world["staff"]["manager"])
    key = uuid.uuid4().hex
    client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, amount="99.00", key=key))
    client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, amount="9.00", key=key))
    assert [r.amount for r in refunds_of(db_session, order)] == [900]


def test_refund_without_a_csrf_token_is_refused(app, world, db_session):
    order = make_order(db_session, world, "delivered")
    client = as_user(app, world["staff"]["admin"])
    data = refund_form(client)
    del data["csrf_token"]
    assert client.post(f"/admin/orders/{order.id}/refund", data=data).status_code == 400
    assert refunds_of(db_session, order) == []


# -- webhook events -------------------------------------------------------------------------------
def failed_event(db_session, world, *, payload=None):
    order = make_order(db_session, world, "pending", paid=False)
    payment = Payment(
        order_id=order.id,
        provider="test",
        provider_id=f"pi_test_w{order.id}",
        status="requires_payment",
        amount=order.total,
        currency=order.currency,
    )
    db_session.add(payment)
    event_id = (payload or {}).get("id") or f"evt_{uuid.uuid4().hex[:12]}"
    payload = payload or {
        "id": event_id,
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": payment.provider_id, "amount": order.total}},
    }
    row = WebhookEvent(
        provider="stripe",
        event_id=event_id,
        type=payload.get("type", "x"),
        payload=payload,
        status="failed",
        attempts=1,
        last_error="OperationalError: database was down",
    )
    db_session.add(row)
    db_session.flush()
    return order, row


@pytest.mark.parametrize("role", ROLES)
def test_webhook_events_are_for_admins(app, world, db_session, redis_client, role):
    order, row = failed_event(db_session, world)
    client = as_user(app, world["staff"][role])
    listing = client.get("/admin/webhook-events/")
    resp = client.post("/admin/webhook-events/retry", data={"csrf_token": csrf_token(client), "id": row.id})
    db_session.expire_all()
    if role in TABLE[P.STAFF_MANAGE]:
        html = listing.get_data(as_text=True)
        assert listing.status_code == 200
        assert row.event_id in html and "database was down" in html and ">Retry" in html
        assert resp.status_code == 302
        assert db_session.get(WebhookEvent, row.id).status == "processed"
        assert db_session.get(Order, order.id).status == "confirmed"
    else:
        assert listing.status_code == 403 and resp.status_code == 403
        assert db_session.get(WebhookEvent, row.id).status == "failed"
        assert db_session.get(Order, order.id).status == "pending"


def test_an_event_shows_its_payload_to_admins(app, world, db_session):
    _, row = failed_event(db_session, world)
    resp = as_user(app, world["staff"]["admin"]).get(f"/admin/webhook-events/details/?id={row.id}")
    assert resp.status_code == 200 and "payment_intent.succeeded" in resp.get_data(as_text=True)
    for role in ("warehouse", "support", "analyst", "manager"):
        assert as_user(app, world["staff"][role]).get(f"/admin/webhook-events/details/?id={row.id}").status_code == 403


def test_a_refund_the_provider_cannot_make_stays_pending_and_is_retried_once(
    app, world, db_session, redis_client, monkeypatch
):
    """A timeout may hide a refund the provider did make: the row stays pending with its amount held,
    a second form cannot start another refund, and the scheduled retry (same row, same idempotency
    key) settles it."""
    from shop.payments.gateways import TestGateway
    from shop.payments.services import retry_pending_refunds

    calls = []
    real = TestGateway.refund

    def down(self, payment, refund):
        calls.append(refund.id)
        raise ConnectionError("provider down")

    order = make_order(db_session, world, "delivered")
    client = as_user(app, world["staff"]["support"])
    data = refund_form(client)
    monkeypatch.setattr(TestGateway, "refund", down)
    resp = client.post(f"/admin/orders/{order.id}/refund", data=data)
    assert resp.status_code == 302
    assert "will be retried automatically" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert [r.status for r in refunds_of(db_session, order)] == ["pending"]
    held = db_session.scalar(select(Payment).where(Payment.order_id == order.id)).refunded_amount
    assert held > 0
    again = client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client))
    assert "still waiting for the provider" in client.get(again.headers["Location"]).get_data(as_text=True)
    assert len(refunds_of(db_session, order)) == 1

    def back_up(self, payment, refund):
        calls.append(refund.id)
        return real(self, payment, refund)

    monkeypatch.setattr(TestGateway, "refund", back_up)
    assert retry_pending_refunds(older_than_seconds=0) == 1
    db_session.expire_all()
    [record] = refunds_of(db_session, order)
    assert record.status == "succeeded" and calls == [record.id, record.id]  # the same refund asked twice
    assert db_session.scalar(select(Payment).where(Payment.order_id == order.id)).refunded_amount == held


def test_a_retry_that_fails_again_is_reported_and_counted(app, world, db_session, redis_client):
    _, row = failed_event(
        db_session, world, payload={"id": "evt_broken_1", "type": "payment_intent.succeeded", "data": {}}
    )
    client = as_user(app, world["staff"]["admin"])
    resp = client.post("/admin/webhook-events/retry", data={"csrf_token": csrf_token(client), "id": row.id})
    assert resp.status_code == 302
    assert "failed again" in client.get(resp.headers["Location"]).get_data(as_text=True)
    db_session.expire_all()
    row = db_session.get(WebhookEvent, row.id)
    assert row.status == "failed" and row.attempts == 2 and "KeyError" in row.last_error
    assert db_session.scalar(select(func.count()).select_from(WebhookEvent)) == 1


def test_the_bulk_retry_action_applies_failed_events(app, world, db_session, redis_client):
    order, row = failed_event(db_session, world)
    client = as_user(app, world["staff"]["admin"])
    resp = client.post(
        "/admin/webhook-events/action/",
        data={"csrf_token": csrf_token(client), "action": "retry", "rowid": [str(row.id)]},
    )
    assert resp.status_code == 302
    db_session.expire_all()
    assert db_session.get(WebhookEvent, row.id).status == "processed"
    assert db_session.get(Order, order.id).status == "confirmed"


# -- the dashboard --------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_todays_orders_card(app, world, db_session, role):
    from tests.integration.test_sales_read_model import project

    project(  # the card reads the sales read model, fed by the orders' events
        make_order(db_session, world, "confirmed", total=5500),
        make_order(db_session, world, "shipped", total=2000),
        make_order(db_session, world, "refunded", total=1000),
        make_order(db_session, world, "pending", paid=False, total=9900),  # not paid
        make_order(db_session, world, "cancelled", total=7700),  # not counted
        make_order(db_session, world, "delivered", total=3300, created_at=datetime.now(UTC) - timedelta(days=2)),
    )  # not today
    html = as_user(app, world["staff"][role]).get("/admin/").get_data(as_text=True)
    card = re.search(r"Today's orders.*?</div></div></div>", html, re.S).group(0)
    assert "3 orders" in card
    assert ("$85.00" in card) == (role in TABLE[P.REPORTS_VIEW])
    assert ("Revenue" in card) == (role in TABLE[P.REPORTS_VIEW])
