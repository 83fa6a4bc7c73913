"""Disputes and refunds by line in the back-office and the admin API (PAYMENT_PROVIDER=test: refunds succeed offline).

Disputes are payment details: support, manager and admin see the flag, its amount, reason, due date and what to
do; warehouse and analyst see nothing of it. A refund by line refunds the units' share that the shop computes,
never the same units twice; while a dispute is open no refund is offered (Stripe would refuse it).
"""

import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timezone

import pytest
from sqlalchemy import select

from shop.accounts.permissions import Permission as P
from shop.orders.models import Order, OrderEvent, OrderLine
from shop.payments.models import Dispute, Payment, Refund
from tests.integration.test_permissions import ROLES, TABLE, as_user, csrf_token, token_for, world  # noqa: F401

_n = itertools.count(1)
DUE = datetime(2031, 12, 20, 23, 59, tzinfo=UTC)


def paid_order(db_session, world, status="delivered"):
    """A paid order of two lines: 3 x $10.00 (A) and 1 x $20.00 (B), $5.00 off, $4.50 tax, $5.00 shipping:
    $54.50 paid, of which $49.50 for the goods."""
    n = next(_n)
    a, b = world["product"].variants[:2]
    order = Order(
        number=f"D-{n:05d}-{uuid.uuid4().hex[:4].upper()}",
        user_id=world["customer"].id,
        email="buyer@example.com",
        status=status,
        currency="USD",
        subtotal=5000,
        discount=500,
        shipping=500,
        tax=450,
        total=5450,
        shipping_method="standard",
        shipping_address={
            "name": "Pat Buyer",
            "line1": "1 Main St",
            "city": "Springfield",
            "region": "IL",
            "postal_code": "12345",
            "country": "US",
        },
    )
    order.lines = [
        OrderLine(
            variant_id=a.id, sku=a.sku, name="Tee", options=a.options, quantity=3, unit_price=1000, line_total=3000
        ),
        OrderLine(
            variant_id=b.id, sku=b.sku, name="Tee", options=b.options, quantity=1, unit_price=2000, line_total=2000
        ),
    ]
    order.events = [OrderEvent(from_status=None, to_status="pending", actor="customer", note="Order placed")]
    db_session.add(order)
    db_session.flush()
    payment = Payment(
        order_id=order.id,
        provider="test",
        provider_id=f"pi_test_x{n}{uuid.uuid4().hex[:6]}",
        status="succeeded",
        amount=5450,
        currency="USD",
    )
    db_session.add(payment)
    db_session.flush()
    return order, payment


def dispute(
    db_session, order, payment, *, reason="fraudulent", status="needs_response", closed=False, outcome=None, amount=5450
):
    """A dispute as the charge.dispute.* handlers leave it (they write no note on the order's history, which the
    shopper sees too)."""
    row = Dispute(
        payment_id=payment.id,
        order_id=order.id,
        provider_dispute_id=f"dp_{uuid.uuid4().hex[:16]}",
        amount=amount,
        currency="USD",
        reason=reason,
        status=status,
        outcome=outcome,
        evidence_due_by=None if closed else DUE,
        opened_at=datetime(2031, 12, 1, 9, 30, tzinfo=UTC),
        closed_at=datetime(2031, 12, 24, 10, 0, tzinfo=UTC) if closed else None,
    )
    db_session.add(row)
    db_session.flush()
    return row


def page(client, order) -> str:
    resp = client.get(f"/admin/orders/{order.id}")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def flashed(client, resp) -> str:
    assert resp.status_code == 302
    return client.get(resp.headers["Location"]).get_data(as_text=True)


def refund_form(client, order, *, amount="", reason="Damaged in transit", key=None, **units):
    """The order page's refund form as sent: units per line as line-<order line id>."""
    data = {
        "csrf_token": csrf_token(client),
        "amount": amount,
        "reason": reason,
        "idempotency_key": key or uuid.uuid4().hex,
    }
    for index, quantity in units.items():  # a=2 -> the first line, b=1 -> the second
        data[f"line-{order.lines['ab'.index(index)].id}"] = str(quantity)
    return data


def refunds_of(db_session, order):
    db_session.expire_all()
    return db_session.scalars(
        select(Refund).join(Payment).where(Payment.order_id == order.id).order_by(Refund.id)
    ).all()


def api(client, method, path, user, body=None, **headers):
    return getattr(client, method)(
        path,
        data=json.dumps(body) if body is not None else None,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(user)}", **headers},
    )


# -- the dispute flag -----------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_the_dispute_flag_is_shown_to_payment_roles_only(app, world, db_session, role):
    order, payment = paid_order(db_session, world)
    dispute(db_session, order, payment, reason="fraudulent", amount=5450)
    dispute(
        db_session, order, payment, reason="product_not_received", status="won", closed=True, outcome="won", amount=2000
    )
    html = page(as_user(app, world["staff"][role]), order)
    if role in TABLE[P.PAYMENTS]:
        [flag] = re.findall(r'<section class="alert alert-danger".*?</section>', html, re.S)
        assert "Disputed" in flag and "$54.50" in flag and "Fraudulent" in flag and "fraudulent" not in flag
        assert "Needs a response" in flag and "2031-12-20 23:59 UTC" in flag and "2031-12-01 09:30 UTC" in flag
        assert "Stripe dashboard" in flag and "before the evidence due date" in flag
        assert html.index("Disputed") < html.index(">Lines<")  # at the top, above the order's lines
        [closed] = re.findall(r'data-testid="disputes-closed".*?</section>', html, re.S)
        assert "$20.00" in closed and "Product not received" in closed and "Won" in closed
        assert "2031-12-24 10:00 UTC" in closed
    else:
        assert "isput" not in html and "Fraudulent" not in html and "Product not received" not in html
        assert "alert-danger" not in html and "2031-12-20" not in html


def test_a_closed_dispute_alone_does_not_flag_the_order(app, world, db_session):
    order, payment = paid_order(db_session, world)
    dispute(db_session, order, payment, reason="duplicate", status="lost", closed=True, outcome="lost")
    html = page(as_user(app, world["staff"]["support"]), order)
    assert 'data-testid="dispute-open"' not in html and "badge-danger" not in html
    assert "Duplicate charge" in html and "Lost" in html
    assert f'action="/admin/orders/{order.id}/refund"' in html  # a closed dispute no longer blocks refunds


@pytest.mark.parametrize("role", ROLES)
def test_the_order_list_marks_and_filters_disputed_orders_for_payment_roles(app, world, db_session, role):
    disputed, payment = paid_order(db_session, world)
    dispute(db_session, disputed, payment)
    calm, _ = paid_order(db_session, world)
    client = as_user(app, world["staff"][role])
    listing = client.get("/admin/orders/").get_data(as_text=True)
    row = re.search(rf"{disputed.number}</a>(.*?)</td>", listing, re.S).group(1)
    calm_row = re.search(rf"{calm.number}</a>(.*?)</td>", listing, re.S).group(1)
    filtered = client.get("/admin/orders/?flt0_1=open").get_data(as_text=True)  # the list's second filter
    if role in TABLE[P.PAYMENTS]:
        assert "Disputed" in row and "Disputed" not in calm_row
        assert "Dispute" in listing  # the filter is offered
        assert disputed.number in filtered and calm.number not in filtered
    else:
        assert "isput" not in listing
        assert disputed.number in filtered and calm.number in filtered  # the filter does nothing for them


# -- refunds by line ------------------------------------------------------------------------------
def test_a_refund_by_line_refunds_the_computed_share_and_never_the_same_units_twice(
    app, world, db_session, redis_client
):
    order, payment = paid_order(db_session, world)
    user = world["staff"]["support"]
    client = as_user(app, user)
    html = page(client, order)
    line_a, line_b = order.lines
    assert f'name="line-{line_a.id}"' in html and 'max="3"' in html and f'name="line-{line_b.id}"' in html

    done = flashed(client, client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, order, a=2)))
    # 2 x $10.00 of $50.00 of goods, for which $49.50 was paid (discount and tax prorated, shipping not): $19.80.
    assert f"Refunded $19.80 on order {order.number} (2 \u00d7 {line_a.sku})" in done
    [record] = refunds_of(db_session, order)
    assert (record.amount, record.status, record.actor) == (1980, "succeeded", user.email)
    assert [(rl.order_line_id, rl.quantity, rl.amount) for rl in record.lines] == [(line_a.id, 2, 1980)]
    assert db_session.get(Payment, payment.id).refunded_amount == 1980
    assert "2 of 3 refunded" in done and 'max="1"' in done  # one unit of A is left to refund
    assert f"2 &times; {line_a.sku}" in done  # the refund's lines in the refunds table

    again = flashed(client, client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, order, a=2)))
    assert f"Nothing was refunded. {line_a.sku}: quantity must be between 0 and 1" in again
    assert len(refunds_of(db_session, order)) == 1
    assert db_session.get(Payment, payment.id).refunded_amount == 1980


def test_a_refund_by_line_with_an_amount_refunds_that_amount_up_to_the_units_share(
    app, world, db_session, redis_client
):
    order, _ = paid_order(db_session, world)
    client = as_user(app, world["staff"]["manager"])
    too_much = flashed(
        client, client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, order, amount="30.00", b=1))
    )
    assert "A refund of these units must be between 1 and 1980." in too_much and refunds_of(db_session, order) == []
    done = flashed(
        client, client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, order, amount="15.00", b=1))
    )
    assert f"Refunded $15.00 on order {order.number}" in done
    [record] = refunds_of(db_session, order)
    assert record.amount == 1500 and [(rl.quantity, rl.amount) for rl in record.lines] == [(1, 1500)]


@pytest.mark.parametrize(
    "units,message",
    [
        ({"a": "two"}, "enter a whole number of units"),
        ({"a": "-1"}, "enter a whole number of units"),
        ({}, "Enter an amount, e.g. 12.50. Or refund by line"),
    ],
)
def test_a_refund_form_without_readable_units_refunds_nothing(app, world, db_session, redis_client, units, message):
    order, _ = paid_order(db_session, world)
    client = as_user(app, world["staff"]["admin"])
    html = flashed(client, client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, order, **units)))
    assert message in html
    assert refunds_of(db_session, order) == []


def test_refund_statuses_read_as_words(app, world, db_session):
    order, payment = paid_order(db_session, world)
    db_session.add_all(
        [
            Refund(payment_id=payment.id, amount=100, reason="first", actor="a@example.com", status="processing"),
            Refund(payment_id=payment.id, amount=200, reason="second", actor="a@example.com", status="pending"),
        ]
    )
    db_session.flush()
    html = page(as_user(app, world["staff"]["support"]), order)
    assert "in progress at Stripe" in html and "waiting for the provider" in html


# -- no refund while a dispute is open ------------------------------------------------------------
def test_an_open_dispute_replaces_the_refund_form_with_the_reason(app, world, db_session, redis_client):
    order, payment = paid_order(db_session, world)
    dispute(db_session, order, payment)
    client = as_user(app, world["staff"]["manager"])
    html = page(client, order)
    assert f'action="/admin/orders/{order.id}/refund"' not in html
    [blocked] = re.findall(r'data-testid="refund-blocked">(.*?)</p>', html, re.S)
    assert "This payment is disputed: Stripe does not allow refunds until the dispute closes." in blocked

    # A form rendered before the dispute opened is refused with the same words, and nothing is refunded.
    refused = flashed(
        client, client.post(f"/admin/orders/{order.id}/refund", data=refund_form(client, order, amount="5.00"))
    )
    assert "This payment is disputed: Stripe does not allow refunds until the dispute closes." in refused
    assert refunds_of(db_session, order) == []
    assert db_session.get(Payment, payment.id).refunded_amount == 0


# -- the admin API --------------------------------------------------------------------------------
def test_the_api_refunds_by_lines_and_answers_the_lines_and_the_amount(client, db_session, world, redis_client):
    order, payment = paid_order(db_session, world)
    line_a, line_b = order.lines
    support = world["staff"]["support"]
    body = {
        "lines": [{"line_id": line_a.id, "quantity": 1}, {"line_id": line_b.id, "quantity": 1}],
        "reason": "Wrong colour",
    }
    resp = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        support,
        body,
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 201, resp.get_json()
    answer = resp.get_json()
    # (1 x $10.00 + 1 x $20.00) of $50.00 of goods, for which $49.50 was paid: $29.70, split by price.
    assert answer["amount"] == {"amount": 2970, "currency": "USD"} and answer["status"] == "succeeded"
    assert answer["lines"] == [
        {"line_id": line_a.id, "quantity": 1, "amount": {"amount": 990, "currency": "USD"}},
        {"line_id": line_b.id, "quantity": 1, "amount": {"amount": 1980, "currency": "USD"}},
    ]
    assert answer["refunded_total"]["amount"] == 2970

    by_amount = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        support,
        {"amount": 100, "reason": "goodwill"},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert by_amount.status_code == 201 and by_amount.get_json()["lines"] == []

    [item] = [
        o
        for o in api(client, "get", "/api/v1/admin/orders?per_page=100", support).get_json()["items"]
        if o["id"] == order.id
    ]
    assert [(i["id"], i["refunded_quantity"]) for i in item["items"]] == [(line_a.id, 1), (line_b.id, 1)]


@pytest.mark.parametrize(
    "lines,field",
    [
        ([{"line_id": 999_999_999, "quantity": 1}], "lines.999999999"),  # not a line of this order
        ([{"line_id": "first", "quantity": 1}], "lines[0].line_id"),
        ([{"line_id": 1, "quantity": 0}], "lines[0].quantity"),
        ("everything", "lines"),
    ],
)
def test_bad_lines_are_422_with_the_field_and_refund_nothing(client, db_session, world, redis_client, lines, field):
    order, payment = paid_order(db_session, world)
    resp = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        world["staff"]["manager"],
        {"lines": lines, "reason": "x"},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "validation_failed" and field in error["details"]["fields"]
    assert refunds_of(db_session, order) == []


def test_the_api_refuses_more_units_than_are_left(client, db_session, world, redis_client):
    order, _ = paid_order(db_session, world)
    line_a = order.lines[0]
    manager = world["staff"]["manager"]
    first = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        manager,
        {"lines": [{"line_id": line_a.id, "quantity": 3}], "reason": "x"},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert first.status_code == 201 and first.get_json()["amount"]["amount"] == 2970
    again = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        manager,
        {"lines": [{"line_id": line_a.id, "quantity": 1}], "reason": "x"},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert again.status_code == 422
    assert "between 0 and 0" in again.get_json()["error"]["details"]["fields"][f"lines.{line_a.id}"]
    assert len(refunds_of(db_session, order)) == 1


def test_the_api_refuses_a_refund_of_a_disputed_payment(client, db_session, world, redis_client):
    order, payment = paid_order(db_session, world)
    dispute(db_session, order, payment)
    resp = api(
        client,
        "post",
        f"/api/v1/admin/orders/{order.id}/refunds",
        world["staff"]["admin"],
        {"amount": 100, "reason": "x"},
        **{"Idempotency-Key": str(uuid.uuid4())},
    )
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "payment_disputed"
    assert refunds_of(db_session, order) == []


@pytest.mark.parametrize("role", ROLES)
def test_the_admin_order_json_shows_disputes_to_payment_roles_only(client, db_session, world, role):
    order, payment = paid_order(db_session, world)
    open_one = dispute(db_session, order, payment)
    calm, _ = paid_order(db_session, world)
    items = {
        o["id"]: o
        for o in api(client, "get", "/api/v1/admin/orders?per_page=100", world["staff"][role]).get_json()["items"]
    }
    if role in TABLE[P.PAYMENTS]:
        assert items[order.id]["disputed"] is True and items[calm.id]["disputed"] is False
        assert items[order.id]["disputes"] == [
            {
                "id": open_one.id,
                "amount": {"amount": 5450, "currency": "USD"},
                "reason": "fraudulent",
                "status": "needs_response",
                "outcome": None,
                "evidence_due_by": "2031-12-20T23:59:00",
                "opened_at": "2031-12-01T09:30:00",
                "closed_at": None,
            }
        ]  # UTC, as the order's created_at
        assert items[calm.id]["disputes"] == []
    else:  # disputes are payment details: not even the flag
        assert "disputes" not in items[order.id] and "disputed" not in items[order.id]
        assert "isput" not in json.dumps(items[order.id])


def test_the_openapi_document_describes_refunds_by_line_and_disputes(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]

    def resolved(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    refund = spec["paths"]["/v1/admin/orders/{order_id}/refunds"]["post"]
    body = resolved(refund["requestBody"]["content"]["application/json"]["schema"])
    assert {"amount", "lines", "reason"} <= set(body["properties"])
    assert "lines" in resolved(refund["responses"]["201"]["content"]["application/json"]["schema"])["properties"]
    staff = schemas["StaffOrder"]["properties"]
    assert {"disputed", "disputes"} <= set(staff) and "Dispute" in schemas


# -- the manager's mail ---------------------------------------------------------------------------
def test_the_dispute_mail_tells_a_manager_what_and_what_to_do(app):
    from shop.notifications.jobs import render

    with app.test_request_context():
        message = render(
            "payment.dispute_opened",
            "manager@example.com",
            {
                "number": "A1B2C3",
                "amount": "$54.50",
                "reason": "product_not_received",
                "evidence_due_by": "2031-12-20 23:59 UTC",
                "link": "https://shop.example/admin/orders/7",
            },
        )
    assert message.subject == "Dispute opened on order A1B2C3"
    for text in (message.text, message.html):
        assert "A1B2C3" in text and "$54.50" in text and "Product not received" in text
        assert "2031-12-20 23:59 UTC" in text and "https://shop.example/admin/orders/7" in text
        assert "Stripe dashboard" in text and "before the evidence due date" in text


def test_the_dispute_mail_is_not_signed_as_a_shoppers_mail(app):
    from shop.notifications.jobs import render

    with app.test_request_context():
        message = render(
            "payment.dispute_opened",
            "manager@example.com",
            {
                "number": "A1B2C3",
                "amount": "$54.50",
                "reason": "fraudulent",
                "evidence_due_by": "",
                "link": "https://shop.example/admin/orders/7",
            },
        )
    assert "Reply to this e-mail with your order number" not in message.html
    assert "because you are a manager" in message.html
