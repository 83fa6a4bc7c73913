"""Background jobs: mail that never doubles, the low-stock scan, the cart clean-up, failed jobs in the
back-office, and the periodic jobs running when their time comes (the clock moved, never slept)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
import rq.cron
from croniter import croniter
from rq import Queue, SimpleWorker
from sqlalchemy import select, update

from shop import clock as shop_clock
from shop.extensions import QUEUE_NAMES
from shop.notifications import jobs as mail_jobs
from shop.notifications import notify
from shop.notifications.jobs import MailInProgress, send_notification
from shop.notifications.models import SentNotification
from tests.factories import make_category, make_product, make_user
from tests.fakes.sendgrid import FakeSendGrid
from tests.integration.test_buying_api import checkout, guest_cart

PAYLOAD = {"name": "Ann", "link": "https://shop.example/account/verify/abc", "hours": 24}


@pytest.fixture
def mail_dir(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "MAIL_BACKEND", "file")
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path / "mail"))
    return tmp_path / "mail"


def mails(directory) -> list:
    return sorted(directory.glob("*.eml")) if directory.exists() else []


@pytest.fixture
def sendgrid(app, monkeypatch):
    with FakeSendGrid() as fake:
        for key, value in {
            "MAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": fake.api_key,
            "SENDGRID_API_HOST": fake.url,
        }.items():
            monkeypatch.setitem(app.config, key, value)
        yield fake


def work(redis_client, *names):
    """Run what is queued with a real RQ worker, in this process (so on the test's transaction)."""
    queues = [Queue(n, connection=redis_client) for n in names or QUEUE_NAMES]
    SimpleWorker(queues, connection=redis_client).work(burst=True)


# -- mail that never doubles ----------------------------------------------------------------------
def test_the_same_job_run_twice_sends_one_mail(app, db_session, mail_dir):
    first = send_notification("order.shipped", "ann@example.com", {"number": "X1", "lines": [], "link": "l"})
    again = send_notification("order.shipped", "ann@example.com", {"number": "X1", "lines": [], "link": "l"})
    assert first and again is None
    assert len(mails(mail_dir)) == 1
    row = db_session.scalar(select(SentNotification).where(SentNotification.object_key == "order:X1"))
    assert row.status == "sent" and row.sent_at is not None and row.event == "order.shipped"


def test_two_copies_of_a_queued_job_send_one_mail(app, db_session, redis_client, mail_dir):
    for _ in range(2):
        notify("account.verify_email", "dup@example.com", PAYLOAD, key="user:1:verify:abc")
    db_session.commit()
    mail = Queue("mail", connection=redis_client)
    assert mail.count == 2 and all(j.kwargs == {"key": "user:1:verify:abc"} for j in mail.jobs)
    with app.app_context():
        work(redis_client, "mail")
    assert len(mails(mail_dir)) == 1
    assert mail.failed_job_registry.count == 0


def test_duplicate_jobs_reach_a_sendgrid_like_server_once(app, db_session, redis_client, sendgrid):
    for _ in range(3):
        notify("order.confirmed", "sg@example.com", {"number": "SG1", "lines": [], "link": "l", "total": "$1"})
    db_session.commit()
    with app.app_context():
        work(redis_client, "mail")
        send_notification("order.confirmed", "sg@example.com", {"number": "SG1", "lines": [], "link": "l"})
    assert len(sendgrid.messages) == 1


def test_a_failed_send_releases_its_claim_so_the_retry_sends_once(app, db_session, sendgrid):
    sendgrid.fail_next = 1
    with pytest.raises(Exception):
        send_notification(
            "account.password_reset", "re@example.com", {"name": "R", "link": "x", "minutes": 60}, key="user:9:reset:t1"
        )
    assert db_session.scalar(select(SentNotification).where(SentNotification.object_key == "user:9:reset:t1")) is None
    for _ in range(2):  # the retry, and a late duplicate
        send_notification(
            "account.password_reset", "re@example.com", {"name": "R", "link": "x", "minutes": 60}, key="user:9:reset:t1"
        )
    assert len(sendgrid.messages) == 1


def test_a_claim_in_flight_defers_the_duplicate_and_a_stale_one_is_taken_over(app, db_session, mail_dir, monkeypatch):
    args = ("order.delivered", "fl@example.com", {"number": "FL1", "lines": [], "link": "l"})
    claimed = mail_jobs.claim("order.delivered", "order:FL1", "fl@example.com")  # a job that is sending now
    assert claimed
    with pytest.raises(MailInProgress):  # RQ retries it later
        send_notification(*args)
    assert mails(mail_dir) == []
    # ...that worker was killed: ten minutes later its claim is stale and the mail goes out, once.
    later = datetime.now(UTC) + timedelta(minutes=10)
    monkeypatch.setattr(shop_clock, "now", lambda: later)  # the shop's one clock
    assert send_notification(*args)
    assert send_notification(*args) is None
    assert len(mails(mail_dir)) == 1


def test_each_new_reset_link_is_a_new_mail_and_order_mails_key_on_the_order(app, db_session, redis_client, mail_dir):
    from shop.accounts import services as accounts

    user = make_user("reset@example.com")
    tokens = iter(["tok-one", "tok-two"])
    serializer = accounts._serializer

    class FixedSerializer:
        def __init__(self, salt):
            self.inner = serializer(salt)

        def dumps(self, data):
            return next(tokens)

    import unittest.mock as mock

    with mock.patch.object(accounts, "_serializer", FixedSerializer):
        accounts.request_password_reset(user.email)
        accounts.request_password_reset(user.email)
    jobs = Queue("mail", connection=redis_client).jobs
    keys = [j.kwargs["key"] for j in jobs]
    assert len(set(keys)) == 2 and all(k.startswith(f"user:{user.id}:reset:") for k in keys)
    with app.app_context():
        work(redis_client, "mail")
    assert len(mails(mail_dir)) == 2


# -- low stock ------------------------------------------------------------------------------------
@pytest.fixture
def stock(db_session, redis_client):
    cat = make_category("Socks", slug="socks")
    sock = make_product(
        cat,
        "Sock",
        slug="sock",
        sizes=("S", "M", "L"),
        colours=("Grey",),
        price=500,
        stock={("S", "Grey"): 8, ("M", "Grey"): 8, ("L", "Grey"): 50},
    )
    v = {x.options["size"]: x for x in sock.variants}
    v["S"].low_stock_threshold = 10  # its own threshold: 8 <= 10 is low
    db_session.flush()  # M has none: the default (5) keeps 8 off the list
    return v


def test_low_stock_uses_each_variants_threshold_and_counts_reservations(app, db_session, stock, client):
    from shop.inventory.services import low_stock

    lines = {line.sku: line for line in low_stock()}
    assert stock["S"].sku in lines and stock["M"].sku not in lines
    assert lines[stock["S"].sku].threshold == 10 and lines[stock["S"].sku].available == 8
    stock["M"].reserved = 3  # 8 on hand, 3 held: 5 available, at the default threshold
    db_session.flush()
    lines = {line.sku: line for line in low_stock()}
    assert lines[stock["M"].sku].available == 5 and lines[stock["M"].sku].threshold == app.config["LOW_STOCK_THRESHOLD"]
    # the admin API and the back-office list say the same
    from tests.integration.test_buying_api import bearer

    staff = make_user(role="warehouse")
    body = client.get("/api/v1/admin/stock/low", headers=bearer(staff)).get_json()
    assert {i["sku"]: (i["available"], i["threshold"]) for i in body["items"]} == {
        stock["S"].sku: (8, 10),
        stock["M"].sku: (5, 5),
    }


def test_staff_with_stock_edit_set_a_variants_threshold_in_the_back_office(app, db_session, stock, client):
    staff = make_user(role="warehouse", password="correct horse battery")
    login = client.get("/admin/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login.get_data(as_text=True)).group(1)
    client.post("/admin/login", data={"email": staff.email, "password": "correct horse battery", "csrf_token": token})
    url = f"/admin/stock/edit/?id={stock['L'].id}"
    page = client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "low_stock_threshold" in html
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    resp = client.post(url, data={"on_hand": "50", "low_stock_threshold": "60", "csrf_token": token})
    assert resp.status_code in (302, 303), resp.get_data(as_text=True)[:2000]
    db_session.refresh(stock["L"])
    assert stock["L"].low_stock_threshold == 60
    assert "Sock" in client.get("/admin/low-stock/").get_data(as_text=True)


def test_the_scan_mails_each_manager_once_per_scan_with_what_went_low(app, db_session, redis_client, stock, mail_dir):
    from shop.inventory.jobs import scan_low_stock

    managers = [make_user(role="manager", name="Mo"), make_user(role="manager", name="Max")]
    retired = make_user(role="manager")
    retired.is_active_account = False
    make_user(role="warehouse")
    db_session.flush()
    at = datetime(2030, 5, 1, 10, 7, tzinfo=UTC)
    assert scan_low_stock(now=at) == [stock["S"].sku]
    assert scan_low_stock(now=at) == []  # a duplicate scan: nothing new
    with app.app_context():
        work(redis_client, "mail")
    sent = mails(mail_dir)
    assert len(sent) == 2
    texts = {p.read_text(errors="replace") for p in sent}
    assert all(stock["S"].sku in t and stock["M"].sku not in t for t in texts)
    assert {m.email for m in managers} == {re.search(r"^To: (.+)$", t, re.M).group(1).strip() for t in texts}

    # an hour later nothing changed: no mail. Then M goes low: only M is listed.
    assert scan_low_stock(now=at + timedelta(hours=1)) == []
    stock["M"].on_hand = 2
    db_session.flush()
    assert scan_low_stock(now=at + timedelta(hours=2)) == [stock["M"].sku]
    # S restocked, then low again: reported again
    stock["S"].on_hand = 100
    db_session.flush()
    assert scan_low_stock(now=at + timedelta(hours=3)) == []
    stock["S"].on_hand = 1
    db_session.flush()
    assert scan_low_stock(now=at + timedelta(hours=4)) == [stock["S"].sku]
    with app.app_context():
        work(redis_client, "mail")
    assert len(mails(mail_dir)) == 6


# -- abandoned carts ------------------------------------------------------------------------------
def test_abandoned_carts_are_purged(app, db_session, stock):
    from shop.cart.jobs import purge_abandoned_carts
    from shop.cart.models import Cart, CartItem

    user = make_user()
    old = datetime.now(UTC) - timedelta(days=31)
    carts = {
        "old guest": Cart(status="open", updated_at=old),
        "new guest": Cart(status="open"),
        "old user": Cart(status="open", user_id=user.id, updated_at=old),
        "old merged": Cart(status="merged", updated_at=old),
        "old converted": Cart(status="converted", updated_at=old),
        "new converted": Cart(status="converted"),
    }
    db_session.add_all(carts.values())
    db_session.flush()
    db_session.add(CartItem(cart_id=carts["old guest"].id, variant_id=stock["S"].id, quantity=1))
    db_session.flush()
    db_session.execute(
        update(Cart).where(Cart.id.in_([c.id for n, c in carts.items() if n.startswith("old")])).values(updated_at=old)
    )
    ids = {n: c.id for n, c in carts.items()}
    assert purge_abandoned_carts() == 3
    db_session.expire_all()
    left = set(db_session.scalars(select(Cart.id).where(Cart.id.in_(ids.values()))))
    assert left == {ids["new guest"], ids["old user"], ids["new converted"]}


# -- failed jobs in the back-office ---------------------------------------------------------------
def explode(what):
    raise RuntimeError(f"boom: {what}")


def _login(client, user, password="correct horse battery"):
    token = re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/admin/login").get_data(as_text=True)
    ).group(1)
    client.post("/admin/login", data={"email": user.email, "password": password, "csrf_token": token})


def test_admins_see_failed_jobs_and_requeue_or_delete_them(app, db_session, client, redis_client):
    from rq import Retry

    q = Queue("default", connection=redis_client)
    first = q.enqueue(explode, "first", retry=Retry(max=1))  # retried once, then it lands in failed
    second = q.enqueue(explode, "second")
    with app.app_context():
        work(redis_client, "default")
    assert set(q.failed_job_registry.get_job_ids()) == {first.id, second.id}

    manager = make_user(role="manager")
    _login(client, manager)
    assert client.get("/admin/jobs/").status_code == 403
    client.post("/admin/logout", data={})
    admin = make_user(role="admin")
    client2 = app.test_client()
    _login(client2, admin)
    page = client2.get("/admin/jobs/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and first.id in html and "explode" in html and "boom: first" in html
    assert "RuntimeError" in html
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    assert client2.post("/admin/jobs/requeue", data={"queue": "default", "job_id": first.id}).status_code == 400
    resp = client2.post("/admin/jobs/requeue", data={"queue": "default", "job_id": first.id, "csrf_token": token})
    assert resp.status_code == 302
    assert first.id in q.job_ids and first.id not in q.failed_job_registry.get_job_ids()
    client2.post("/admin/jobs/delete", data={"queue": "default", "job_id": second.id, "csrf_token": token})
    assert q.failed_job_registry.count == 0 and not redis_client.exists(f"rq:job:{second.id}")
    counts = client2.get("/admin/jobs/").get_data(as_text=True)
    assert re.search(r'data-queue="default"><td>default</td><td>1</td>', counts)


def test_every_enqueue_path_retries(app, db_session, redis_client):
    from shop.afterwards import after_commit
    from shop.payments.services import refund_after_commit, refund_remaining_job

    after_commit("default", explode, "x")
    refund_after_commit(1, "test", "system")
    notify("order.shipped", "r@example.com", {"number": "R1", "lines": [], "link": "l"})
    db_session.commit()
    jobs = Queue("default", connection=redis_client).jobs + Queue("mail", connection=redis_client).jobs
    assert len(jobs) == 3 and all(j.retries_left and j.retry_intervals for j in jobs)
    assert any(j.func == refund_remaining_job for j in jobs)


# -- the schedule, with the clock moved ----------------------------------------------------------
LOCAL = datetime.now().astimezone().tzinfo


def local(*args) -> datetime:
    """A wall-clock time where the scheduler runs (cron fields are local time), in UTC."""
    return datetime(*args).replace(tzinfo=LOCAL).astimezone(UTC)


def due(expression: str, since: datetime, until: datetime) -> bool:
    nxt = croniter(expression, since.astimezone(LOCAL).replace(tzinfo=None)).get_next(datetime)
    return nxt.replace(tzinfo=LOCAL) <= until.astimezone(LOCAL)


@pytest.fixture
def clock(monkeypatch):
    class Clock:
        at = local(2030, 1, 1, 10, 30, 0)

        def move_to(self, when):
            self.at = when

    c = Clock()
    monkeypatch.setattr(rq.cron, "now", lambda: c.at)
    return c


def test_periodic_jobs_are_enqueued_exactly_when_due(app, redis_client, clock):
    from shop.schedule import PERIODIC, build_scheduler

    cron = build_scheduler(redis_client)
    by_path = {path: (queue, expr) for path, queue, expr, _ in PERIODIC}
    assert {j.func_name for j in cron.get_jobs()} == set(by_path)
    for path, queue, expr in [
        ("shop.orders.jobs.expire_reservations", "default", "* * * * *"),
        ("shop.inventory.jobs.scan_low_stock", "default", "7 * * * *"),
    ]:
        assert by_path[path] == (queue, expr)
    assert by_path["shop.cart.jobs.purge_abandoned_carts"][1].endswith("* * *")  # daily
    assert cron.enqueue_jobs() == []  # nothing is due at the moment it starts

    last = clock.at
    for when in (
        local(2030, 1, 1, 10, 30, 59),
        local(2030, 1, 1, 10, 31),
        local(2030, 1, 1, 10, 35, 1),
        local(2030, 1, 1, 11, 7),
        local(2030, 1, 2, 3, 30),
    ):
        clock.move_to(when)
        enqueued = sorted(j.func_name for j in cron.enqueue_jobs())
        expected = sorted(p for p, (q, e) in by_path.items() if due(e, last, when))
        assert enqueued == expected, when
        if when.minute == 31 and when.hour == local(2030, 1, 1, 10, 31).hour:
            assert enqueued == ["shop.orders.jobs.expire_reservations", "shop.partners.jobs.deliver_due"]
        last = when
    assert "shop.inventory.jobs.scan_low_stock" in expected and "shop.cart.jobs.purge_abandoned_carts" in expected
    jobs = {j.func_name: j for name in QUEUE_NAMES for j in Queue(name, connection=redis_client).jobs}
    for path, (queue, _) in by_path.items():
        assert jobs[path].origin == queue and jobs[path].retries_left == 2
    cron.save()  # what the scheduler stores in Redis (the Retry stays out of it) serialises


def test_scheduled_jobs_run_by_a_worker_do_their_work(app, db_session, client, redis_client, clock, mail_dir, stock):
    """The clock reaches the next day: the due jobs are queued, a real worker runs them, and their
    effects show: an expired hold's order is cancelled, managers get the low-stock mail, old carts go."""
    from shop.cart.models import Cart
    from shop.inventory.models import Reservation
    from shop.orders.models import Order
    from shop.schedule import PERIODIC, build_scheduler

    stock["S"].on_hand = 20  # not low (threshold 10); the order below holds 12 of them
    make_user(role="manager", name="Mo")
    db_session.commit()
    cart = guest_cart(client, stock["S"].sku, 12)
    placed = checkout(client, cart)
    assert placed.status_code == 201, placed.get_json()
    order_id = placed.get_json()["order"]["id"]
    db_session.execute(
        update(Reservation)
        .where(Reservation.order_id == order_id)
        .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    )
    old_cart = Cart(status="open")
    db_session.add(old_cart)
    db_session.flush()
    db_session.execute(
        update(Cart).where(Cart.id == old_cart.id).values(updated_at=datetime.now(UTC) - timedelta(days=40))
    )
    old_cart_id = old_cart.id
    db_session.commit()
    redis_client.delete(*[k for k in redis_client.keys("rq:*")] or ["-"])

    mine = {
        "shop.orders.jobs.expire_reservations",
        "shop.inventory.jobs.scan_low_stock",
        "shop.cart.jobs.purge_abandoned_carts",
    }
    cron = build_scheduler(redis_client, [p for p in PERIODIC if p[0] in mine])
    clock.move_to(local(2030, 1, 2, 3, 0))
    assert sorted(j.func_name for j in cron.enqueue_jobs()) == sorted(mine)
    with app.app_context():
        work(redis_client)
    q = Queue("default", connection=redis_client)
    assert q.count == 0 and q.failed_job_registry.count == 0
    db_session.expire_all()
    assert db_session.get(Order, order_id).status == "cancelled"
    assert db_session.get(Cart, old_cart_id) is None
    # the scan ran after the expiry in queue order: the hold is back on the shelf (20 > 10), so nothing
    # is low and no manager is mailed; with the hold (8 available) S would have been listed.
    assert mails(mail_dir) == []
    stock["S"].on_hand = 3
    db_session.commit()
    clock.move_to(local(2030, 1, 2, 4, 7))
    assert "shop.inventory.jobs.scan_low_stock" in {j.func_name for j in cron.enqueue_jobs()}
    with app.app_context():
        work(redis_client)
    [mail] = mails(mail_dir)
    assert stock["S"].sku in mail.read_text(errors="replace")
