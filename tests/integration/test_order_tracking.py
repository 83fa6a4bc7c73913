"""Tracking of shipped orders (issue 11, item 6): staff give the carrier, the number and maybe a link when they
mark an order shipped (back-office form or admin API); the customer's order page and the shipped mail show them,
with a link made from the number for a well-known carrier. Bad tracking is a clear 422 and nothing is written."""

from __future__ import annotations

import email
import json
import re
from email import policy
from html import unescape

import pytest
from rq import Queue
from sqlalchemy import func, select

from shop import consumers
from shop.orders.models import Order, OrderEvent
from tests.integration.test_backoffice_orders import make_order
from tests.integration.test_jobs import mails, work
from tests.integration.test_permissions import as_user, csrf_token, token_for, world  # noqa: F401 - fixture

UPS_NUMBER = "1Z999AA10123456784"
UPS_LINK = f"https://www.ups.com/track?tracknum={UPS_NUMBER}"


@pytest.fixture
def mail_dir(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "MAIL_BACKEND", "file")
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path / "mail"))
    return tmp_path / "mail"


def api(client, order, user, body):
    return client.post(
        f"/api/v1/admin/orders/{order.id}/transition",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(user)}"},
    )


def reread(db_session, order) -> Order:
    db_session.expire_all()
    return db_session.get(Order, order.id)


def events(db_session, order) -> int:
    return db_session.scalar(select(func.count()).select_from(OrderEvent).where(OrderEvent.order_id == order.id))


def page_text(resp) -> str:
    return unescape(resp.get_data(as_text=True))


def visible(resp) -> str:
    """The page's text as a reader sees it: no tags, one space between words."""
    return " ".join(re.sub(r"<[^>]+>", " ", page_text(resp)).split()).replace(" ,", ",")


def shipped_mails(redis_client) -> list[dict]:
    consumers.drain(["order-mails"])  # sent from the order.shipped event
    return [j.args[2] for j in Queue("mail", connection=redis_client).jobs if j.args[0] == "order.shipped"]


def test_warehouse_ships_with_tracking_and_the_customer_sees_it_on_the_page_and_in_the_mail(
    app, world, db_session, redis_client, mail_dir
):
    order = make_order(db_session, world, "processing")
    db_session.commit()
    staff = as_user(app, world["staff"]["warehouse"])
    form = staff.get(f"/admin/orders/{order.id}").get_data(as_text=True)
    for label in (
        'for="tracking-carrier">Carrier<',
        'for="tracking-number">Tracking number<',
        'for="tracking-url">Tracking link (optional)<',
    ):
        assert label in form, label

    resp = staff.post(
        f"/admin/orders/{order.id}/transition",
        data={
            "csrf_token": csrf_token(staff),
            "status": "shipped",
            "note": "Left the dock",
            "tracking_carrier": " UPS ",
            "tracking_number": UPS_NUMBER,
            "tracking_url": "",
        },
    )
    assert resp.status_code == 302
    stored = reread(db_session, order)
    assert stored.status == "shipped"
    # No link was given: UPS is well known, so it is made from the number.
    assert (stored.tracking_carrier, stored.tracking_number, stored.tracking_url) == ("UPS", UPS_NUMBER, UPS_LINK)
    assert f"Tracking UPS {UPS_NUMBER} ( track the parcel" in visible(staff.get(f"/admin/orders/{order.id}"))

    # The customer's order page.
    shown = as_user(app, world["customer"]).get(f"/orders/{order.id}")
    assert f"Tracking: UPS {UPS_NUMBER} ( Track your parcel →" in visible(shown)
    page = page_text(shown)
    assert f'<a href="{UPS_LINK}" rel="noopener noreferrer" target="_blank">Track your parcel →' in page

    # The shipped mail: sent from the order.shipped event, rendered by the real mail job.
    with app.app_context():
        consumers.drain(["order-mails"])
        work(redis_client, "mail")
    [shipped] = [
        m
        for m in (email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in mails(mail_dir))
        if "on its way" in m["Subject"]
    ]
    plain = shipped.get_body(("plain",)).get_content()
    html = unescape(shipped.get_body(("html",)).get_content())
    assert f"Tracking: UPS {UPS_NUMBER} {UPS_LINK}" in plain
    assert f'UPS: <a href="{UPS_LINK}">{UPS_NUMBER}</a>' in html


def test_the_api_ships_with_tracking_keeps_a_given_link_and_shows_only_the_number_for_an_unknown_carrier(
    app, client, world, db_session, redis_client
):
    manager = world["staff"]["manager"]
    linked, plain = make_order(db_session, world, "processing"), make_order(db_session, world, "processing")
    db_session.commit()

    resp = api(
        client,
        linked,
        manager,
        {
            "status": "shipped",
            "tracking": {"carrier": "Speedy Couriers", "number": "SC-42", "url": "https://track.speedy.example/SC-42"},
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["tracking"] == {
        "carrier": "Speedy Couriers",
        "number": "SC-42",
        "url": "https://track.speedy.example/SC-42",
    }

    resp = api(
        client,
        plain,
        manager,
        {"status": "shipped", "note": "two boxes", "tracking": {"carrier": "Royal Mail", "number": "AB123456789GB"}},
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["tracking"] == {"carrier": "Royal Mail", "number": "AB123456789GB", "url": None}
    listed = client.get(
        "/api/v1/admin/orders?status=shipped", headers={"Authorization": f"Bearer {token_for(manager)}"}
    ).get_json()["items"]
    assert {o["id"]: o.get("tracking", {}).get("number") for o in listed}[plain.id] == "AB123456789GB"

    # The shipped mails carry it (a link only where there is one); so do the customer's pages.
    tracked = {m["number"]: m["tracking"] for m in shipped_mails(redis_client)}
    assert tracked[linked.number]["url"] == "https://track.speedy.example/SC-42"
    assert tracked[plain.number] == {"carrier": "Royal Mail", "number": "AB123456789GB"}
    customer = as_user(app, world["customer"])
    page = visible(customer.get(f"/orders/{plain.id}"))
    assert "Tracking: Royal Mail AB123456789GB" in page and "Track your parcel" not in page
    page = page_text(customer.get(f"/orders/{linked.id}"))
    assert '<a href="https://track.speedy.example/SC-42"' in page
    own = client.get(
        f"/api/v1/orders/{linked.id}", headers={"Authorization": f"Bearer {token_for(world['customer'])}"}
    ).get_json()
    assert own["tracking"] == {
        "carrier": "Speedy Couriers",
        "number": "SC-42",
        "url": "https://track.speedy.example/SC-42",
    }  # the customer's API too


@pytest.mark.parametrize(
    "status,tracking,field",
    [
        ("shipped", {"carrier": "UPS", "number": UPS_NUMBER, "url": "javascript:alert(1)"}, "tracking.url"),
        ("shipped", {"carrier": "UPS", "number": UPS_NUMBER, "url": "ftp://files.example/1"}, "tracking.url"),
        ("shipped", {"carrier": "UPS", "number": "9" * 101}, "tracking.number"),
        ("shipped", {"carrier": "UPS", "number": "<b>1Z</b>"}, "tracking.number"),
        ("shipped", {"carrier": "UPS"}, "tracking.number"),
        ("shipped", {"carrier": 42, "number": UPS_NUMBER}, "tracking.carrier"),
        ("shipped", {"carrier": "C" * 61, "number": UPS_NUMBER}, "tracking.carrier"),
        ("shipped", {"carrier": "UPS", "number": UPS_NUMBER, "colour": "brown"}, "tracking.colour"),
        ("shipped", "UPS 1Z999", "tracking"),
        ("cancelled", {"carrier": "UPS", "number": UPS_NUMBER}, "tracking"),  # tracking goes with shipped only
    ],
)
def test_bad_tracking_is_422_with_the_field_and_nothing_is_written(
    client, world, db_session, redis_client, status, tracking, field
):
    order = make_order(db_session, world, "processing")
    db_session.commit()
    before = events(db_session, order)
    resp = api(client, order, world["staff"]["admin"], {"status": status, "tracking": tracking})
    assert resp.status_code == 422
    error = resp.get_json()["error"]
    assert error["code"] == "validation_failed" and field in error["details"]["fields"], error
    stored = reread(db_session, order)
    assert stored.status == "processing" and stored.tracking_number is None and stored.tracking_url is None
    assert events(db_session, order) == before and shipped_mails(redis_client) == []


def test_the_back_office_shows_bad_tracking_next_to_the_fields_as_typed_and_ships_nothing(
    app, world, db_session, redis_client
):
    order = make_order(db_session, world, "processing")
    db_session.commit()
    before = events(db_session, order)
    staff = as_user(app, world["staff"]["manager"])
    resp = staff.post(
        f"/admin/orders/{order.id}/transition",
        data={
            "csrf_token": csrf_token(staff),
            "status": "shipped",
            "note": "",
            "tracking_carrier": "DHL",
            "tracking_number": "",
            "tracking_url": "ftp://dhl.example/1",
        },
    )
    assert resp.status_code == 422
    html = page_text(resp)
    assert "The order was not marked shipped" in html and 'role="alert"' in html
    assert "Tracking number is needed with tracking" in html
    assert "Tracking link (optional) must be a web link starting with https:// or http://" in html
    assert 'name="tracking_url" value="ftp://dhl.example/1"' in html  # what was typed, kept to be corrected
    assert 'aria-invalid="true" aria-describedby="tracking-number-error' in html
    stored = reread(db_session, order)
    assert stored.status == "processing" and stored.tracking_number is None
    assert events(db_session, order) == before and shipped_mails(redis_client) == []

    # Corrected, with no link: DHL is well known, so the link is made from the number.
    resp = staff.post(
        f"/admin/orders/{order.id}/transition",
        data={
            "csrf_token": csrf_token(staff),
            "status": "shipped",
            "tracking_carrier": "DHL Express",
            "tracking_number": "1234567890",
            "tracking_url": "",
        },
    )
    assert resp.status_code == 302
    stored = reread(db_session, order)
    assert stored.status == "shipped" and stored.tracking_url.startswith("https://www.dhl.com/")
    assert stored.tracking_url.endswith("tracking-id=1234567890")


@pytest.mark.parametrize(
    "carrier,number,link",
    [
        ("ups ground", "1Z 999 AA1", "https://www.ups.com/track?tracknum=1Z999AA1"),
        ("USPS Priority", "9400 1000", "https://tools.usps.com/go/TrackConfirmAction?tLabels=94001000"),
        ("Fed Ex", "7777/12", "https://www.fedex.com/fedextrack/?trknbr=7777%2F12"),
        ("FedEx Express", "777712", "https://www.fedex.com/fedextrack/?trknbr=777712"),
        ("Royal Mail", "AB123456789GB", None),
        ("Upstate Couriers", "U1", None),
    ],
)
def test_a_link_is_made_only_for_the_well_known_carriers(app, carrier, number, link):
    from shop.orders.services import clean_tracking

    assert clean_tracking({"carrier": carrier, "number": number}) == {"carrier": carrier, "number": number, "url": link}
