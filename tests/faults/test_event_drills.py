"""The event backbone loses nothing and doubles nothing (issue 13): thousands of events produced through real checkouts,
product creations and stock edits, over HTTP against a shop run as real processes (gunicorn, workers, the relay,
two `worker.py events` consumers), reach every consumer group exactly once in effect while

1. the relay is SIGKILLed between publishing a batch to the stream and marking it in the outbox (its successor
   publishes the batch again: the stream then holds duplicates, which consumers must apply once);
2. a consumer process is SIGKILLed with messages delivered to it and not acknowledged (the other consumer claims
   them with XAUTOCLAIM once they have been idle EVENT_CLAIM_IDLE_MS);
3. Redis is stopped for EVENT_DRILL_REDIS_DOWN (30) s and started again (events committed meanwhile wait in the
   outbox).

"Exactly once in effect" is counted from outside, per group: `sales` (the sales read model equals the report
computed from the order tables), `alerts` (one low-stock mail per manager and stock.low event), `webhooks` (a partner
endpoint subscribed to every type but stock.changed receives every such event id that occurred after it was
registered, signatures verified with the `standardwebhooks` package, none twice unless the shop's own log shows a
second attempt: the killed consumer may have been sending it, and partners deduplicate by webhook-id), and for every
group its claims in `consumed_event` equal the set of events it wants.
Knobs: EVENT_DRILL_EVENTS (2000 under `make test`, which must stay well under 20 minutes on two cores; the issue's
10,000 take about six minutes here: `EVENT_DRILL_EVENTS=10000 .venv/bin/python -m pytest tests/faults/test_event_drills.py`),
EVENT_DRILL_PRODUCERS (6), EVENT_DRILL_REDIS_DOWN (30), EVENT_DRILL_DRAIN (240 s).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.fakes.serving import ServedInThread
from tests.faults.harness import STREAM, Shoppers, ShopUnderTest, check_mail, check_search, drain, knob, wait_until

pytestmark = pytest.mark.faults

EVENTS = int(knob("EVENT_DRILL_EVENTS", 2_000))
REDIS_DOWN = knob("EVENT_DRILL_REDIS_DOWN", 30)
DRAIN = knob("EVENT_DRILL_DRAIN", 240)
CLAIM_IDLE_MS = 3000
PRODUCERS = int(knob("EVENT_DRILL_PRODUCERS", 6))  # threads editing stock and adding products over the admin API
# What the drill's partner subscribes to: every type but stock.changed (most of the events; a partner that wants
# stock levels would poll), so its deliveries are counted without doubling the drill's length.
PARTNER_TYPES = [
    "customer.created",
    "order.cancelled",
    "order.confirmed",
    "order.delivered",
    "order.placed",
    "order.refunded",
    "order.shipped",
    "payment.failed",
    "payment.succeeded",
    "product.created",
    "product.deleted",
    "product.updated",
    "refund.succeeded",
    "stock.low",
]
CATALOGUE = ("product.created", "product.updated", "product.deleted", "stock.changed")
GROUP_TYPES = {  # what each consumer group applies (docs/events.md, "The shop's consumer groups")
    "sales": (
        "order.placed",
        "order.confirmed",
        "order.cancelled",
        "order.shipped",
        "order.delivered",
        "order.refunded",
    ),
    "alerts": ("stock.low",),
    "order-mails": ("order.confirmed", "order.shipped", "order.delivered", "order.refunded"),
    "search": CATALOGUE,
    "cache": CATALOGUE,
    "webhooks": None,  # every type (it makes deliveries for the types an endpoint subscribes to)
}


class Receiver(ServedInThread):
    """A partner's endpoint: verifies each delivery with the reference `standardwebhooks` implementation and
    counts the event ids it accepted."""

    def __init__(self):
        received: Counter = Counter()
        bad: list = []
        lock = threading.Lock()
        self.received, self.bad, self.secret = received, bad, None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                from standardwebhooks.webhooks import Webhook

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    Webhook(outer.secret).verify(body, {k.lower(): v for k, v in self.headers.items()})
                    event_id = json.loads(body)["id"]
                except Exception as exc:  # noqa: BLE001 - a bad signature is counted, and refused
                    with lock:
                        bad.append(repr(exc))
                    self.send_response(400)
                    self.end_headers()
                    return
                with lock:
                    received[event_id] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        self.url = f"http://127.0.0.1:{self.port}/hooks"


class Staff:
    """The admin API as a back-office integration uses it: a token, stock edits, new products."""

    def __init__(self, shop: ShopUnderTest):
        self.base = shop.base
        self.session = requests.Session()
        self.login()

    def login(self) -> None:
        resp = requests.post(
            f"{self.base}/api/v1/auth/token", timeout=10, json={"email": "admin@demo.shop", "password": "demo-password"}
        )
        resp.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def call(self, method: str, path: str, **kw):
        """One request, retried through outages (503 and refused connections) as an integration would."""
        for _attempt in range(30):
            try:
                resp = self.session.request(method, self.base + path, timeout=15, **kw)
            except requests.RequestException:
                time.sleep(1)
                continue
            if resp.status_code == 401:
                self.login()
                continue
            if resp.status_code not in (502, 503, 504):
                return resp
            time.sleep(1)
        return None


def _events(shop: ShopUnderTest) -> int:
    return shop.sql("SELECT count(*) FROM outbox_job WHERE kind = 'event'")[0][0]


def _produce(
    shop: ShopUnderTest, staff: Staff, variant_ids: list[int], category: str, stop: threading.Event, edits: Counter
) -> None:
    """Stock edits (stock.changed, stock.low when one falls under its threshold) and now and then a new product."""
    rnd = random.Random()
    while not stop.is_set():
        if rnd.random() < 0.03:
            sku = f"DRILL-{uuid.uuid4().hex[:10]}"
            resp = staff.call(
                "POST",
                "/api/v1/admin/products",
                json={
                    "category": category,
                    "name": f"Drill product {sku}",
                    "status": "active",
                    "variants": [{"sku": sku, "price": 1200, "on_hand": 20}],
                },
            )
            edits[f"product {resp.status_code if resp is not None else 'none'}"] += 1
        else:
            resp = staff.call(
                "PUT",
                f"/api/v1/admin/variants/{rnd.choice(variant_ids)}/stock",
                # now and then under the low-stock threshold: stock.low, and a mail to the managers
                json={"on_hand": rnd.choice((2,) + (30, 40, 50, 60, 70, 80, 90, 100) * 2)},
            )
            edits[f"stock {resp.status_code if resp is not None else 'none'}"] += 1


def _relay_killed_between_publish_and_mark(shop: ShopUnderTest) -> dict:
    """Start a relay that pauses after publishing a batch (the drill failpoint SHOP_DRILL_PAUSE_AFTER_PUBLISH),
    wait until the stream holds more entries than the outbox has marked, SIGKILL it there, start a normal one."""
    conn = shop.redis()
    old = shop.proc("relay")
    old.send_signal(signal.SIGKILL)
    old.wait(30)
    marked = shop.sql("SELECT count(*) FROM outbox_job WHERE kind = 'event' AND dispatched_at IS NOT NULL")[0][0]
    before = conn.xlen(STREAM)
    paused = shop.spawn("relay", [sys.executable, "worker.py", "relay"], env={"SHOP_DRILL_PAUSE_AFTER_PUBLISH": "20"})
    wait_until(lambda: conn.xlen(STREAM) > before, 30, "the paused relay to publish a batch", every=0.05)
    published = conn.xlen(STREAM) - before
    still_marked = shop.sql("SELECT count(*) FROM outbox_job WHERE kind = 'event' AND dispatched_at IS NOT NULL")[0][0]
    paused.send_signal(signal.SIGKILL)
    paused.wait(30)
    shop.spawn("relay", [sys.executable, "worker.py", "relay"])
    return {"published_unmarked": published, "marked_before": marked, "marked_at_kill": still_marked}


def _consumer_killed_mid_batch(shop: ShopUnderTest, tries: int = 20) -> dict:
    """SIGKILL the first consumer process at a moment it holds delivered, unacknowledged messages."""
    conn = shop.redis()
    victim = shop.proc("events-1")
    mine = f":{victim.pid}:"  # consumer names are host:pid:group
    for _ in range(tries * 100):
        held = {}
        for group in GROUP_TYPES:
            try:
                for c in conn.xinfo_consumers(STREAM, group):
                    name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                    if mine in name and c["pending"]:
                        held[name] = c["pending"]
            except Exception:  # noqa: BLE001 - the group may not exist yet
                continue
        if held:
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
            return {"killed_holding": held}
        time.sleep(0.01)
    raise AssertionError("the consumer never held unacknowledged messages while events flowed")


def _check_alert_mails(shop: ShopUnderTest) -> list[str]:
    """Every stock.low event of an active product was mailed to every active manager exactly once (the hourly
    scan's own mails have other Message-IDs and are not counted)."""
    from email.parser import BytesHeaderParser

    from shop.notifications.jobs import message_id

    events = [
        r[0]
        for r in shop.sql(
            "SELECT o.kwargs->>'id' FROM outbox_job o JOIN variant v ON v.id = (o.kwargs->'data'->>'variant_id')::int "
            "JOIN product p ON p.id = v.product_id WHERE o.kind = 'event' AND o.function = 'stock.low' "
            "AND p.status = 'active'"
        )
    ]
    managers = [r[0] for r in shop.sql("SELECT id FROM user_account WHERE role = 'manager' AND is_active_account")]
    local = lambda mid: mid.strip("<>").partition("@")[0]  # noqa: E731 - the sender's domain does not matter
    expected = {
        local(message_id("inventory.low_stock", f"low-stock-event:{e}:user:{m}", "x@shop"))
        for e in events
        for m in managers
    }
    found: Counter = Counter()
    for path in shop.mail_dir.glob("*.eml"):
        with open(path, "rb") as fh:
            found[local(BytesHeaderParser().parse(fh)["Message-ID"] or "")] += 1
    missing = expected - set(found)
    twice = [k for k in expected if found[k] > 1]
    if not events or missing or twice:
        return [
            f"alerts: {len(events)} stock.low events x {len(managers)} managers: {len(missing)} mails missing, "
            f"{len(twice)} sent twice"
        ]
    return []


def _sales_from_orders(shop: ShopUnderTest) -> dict:
    """The report's totals computed from the order tables, as the report did before the read model."""
    sold = ("confirmed", "processing", "shipped", "delivered", "returned", "refunded")
    rows = shop.sql(
        'SELECT currency, count(*), sum(total) FROM "order" WHERE status = ANY(%s) GROUP BY currency', (list(sold),)
    )
    refunded = dict(
        shop.sql("SELECT p.currency, coalesce(sum(p.refunded_amount), 0) FROM payment p GROUP BY p.currency")
    )
    return {c: {"orders": n, "revenue": int(total), "refunded": int(refunded.get(c, 0))} for c, n, total in rows}


def _sales_from_api(staff: Staff) -> dict:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    resp = staff.call("GET", "/api/v1/admin/reports/sales", params={"from": today, "to": today})
    assert resp is not None and resp.status_code == 200, resp.text if resp is not None else "no answer"
    return {
        t["currency"]: {"orders": t["orders"], "revenue": t["revenue"]["amount"], "refunded": t["refunded"]["amount"]}
        for t in resp.json()["totals"]
    }


def test_events_reach_every_group_once_through_a_relay_kill_a_consumer_death_and_a_redis_stop(servers):
    began = time.monotonic()
    var = Path(tempfile.mkdtemp(prefix="events-drill-"))
    shop = ShopUnderTest(
        var, 30, servers, consumers=2, env={"EVENT_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS), "WEBHOOK_ALLOW_PRIVATE": "1"}
    )
    problems: list[str] = []
    stop, edits, faults = threading.Event(), Counter(), {}
    with Receiver() as receiver:
        try:
            shop.start()
            shop.flask("seed", "demo-staff")
            staff = Staff(shop)
            created = staff.call(
                "POST",
                "/api/v1/admin/webhooks",
                json={"url": receiver.url, "events": PARTNER_TYPES, "description": "drill partner"},
            )
            assert created is not None and created.status_code == 201, created.text if created is not None else ""
            receiver.secret = created.json()["secret"]
            pool = set(shop.skus)
            variant_ids = [vid for vid, sku in shop.sql("SELECT id, sku FROM variant ORDER BY id") if sku not in pool]
            category = shop.sql("SELECT slug FROM category ORDER BY id LIMIT 1")[0][0]
            load = Shoppers(shop.base, shop.skus, 3)
            load.start()
            producers = [
                threading.Thread(target=_produce, args=(shop, staff, variant_ids, category, stop, edits), daemon=True)
                for _ in range(PRODUCERS)
            ]
            for t in producers:
                t.start()

            wait_until(lambda: _events(shop) >= EVENTS * 0.2, 600, "20% of the events")
            faults["relay"] = _relay_killed_between_publish_and_mark(shop)
            wait_until(lambda: _events(shop) >= EVENTS * 0.45, 600, "45% of the events")
            faults["consumer"] = _consumer_killed_mid_batch(shop)
            wait_until(lambda: _events(shop) >= EVENTS * 0.65, 600, "65% of the events")
            before = _events(shop)
            shop.kill_server("redis", signal.SIGTERM)
            time.sleep(REDIS_DOWN)
            waiting = shop.sql("SELECT count(*) FROM outbox_job WHERE kind = 'event' AND dispatched_at IS NULL")[0][0]
            faults["redis"] = {"events_during": _events(shop) - before, "waiting_in_outbox": waiting}
            shop.restart_server("redis")
            wait_until(lambda: _events(shop) >= EVENTS, 900, f"{EVENTS} events")
            stop.set()
            load.stop()
            for t in producers:
                t.join(60)
            trace: list = []
            left, waited = drain(shop, DRAIN, trace)
            if left:
                problems.append(f"drain: after {waited:.0f}s still waiting for {left} ({trace})")
            wait_until(
                lambda: shop.sql("SELECT count(*) FROM webhook_delivery WHERE state = 'pending'")[0][0] == 0,
                120,
                "every webhook delivery to finish",
            )

            ids = dict(shop.sql("SELECT kwargs->>'id', function FROM outbox_job WHERE kind = 'event'"))
            total = len(ids)
            stream_entries = shop.redis().xlen(STREAM)
            if faults["relay"]["published_unmarked"] <= 0 or stream_entries <= total:
                problems.append(
                    f"relay kill: the stream holds {stream_entries} entries for {total} events, "
                    "so no batch was published twice"
                )
            if faults["redis"]["waiting_in_outbox"] <= 0:
                problems.append(f"redis stop: no event waited in the outbox ({faults['redis']})")
            for group, types in GROUP_TYPES.items():
                wanted = {i for i, t in ids.items() if types is None or t in types}
                claimed = {r[0] for r in shop.sql('SELECT event_id FROM consumed_event WHERE "group" = %s', (group,))}
                if claimed != wanted:
                    problems.append(
                        f"group {group}: applied {len(claimed)} of {len(wanted)} events "
                        f"({len(wanted - claimed)} missing, {len(claimed - wanted)} unknown)"
                    )
            # A delivery is sent again only when the shop's own log says its first attempt did not finish (the
            # consumer sending it was the one killed): partners deduplicate by webhook-id, as the standard asks.
            retried = {r[0] for r in shop.sql("SELECT event_id FROM webhook_delivery WHERE attempts > 1")}
            twice = {i: n for i, n in receiver.received.items() if n > 1 and i not in retried}
            # The endpoint hears what happened once it existed (not the seed's product.created from before it).
            [(registered,)] = shop.sql("SELECT created_at FROM webhook_endpoint")
            after = {
                r[0]
                for r in shop.sql(
                    "SELECT kwargs->>'id' FROM outbox_job WHERE kind = 'event' "
                    "AND (kwargs->>'occurred_at')::timestamptz >= %s AND function = ANY(%s)",
                    (registered, PARTNER_TYPES),
                )
            }
            missing = after - set(receiver.received)
            if missing or twice or receiver.bad:
                problems.append(
                    f"webhooks: {len(missing)} events never received, {len(twice)} received twice, "
                    f"{len(receiver.bad)} refused signatures {receiver.bad[:3]}"
                )
            problems += _check_alert_mails(shop)
            problems += check_mail(shop)  # one confirmation per confirmed order: the order-mails group's
            problems += check_search(shop)  # Typesense agrees with PostgreSQL: the search group's
            if (expected := _sales_from_orders(shop)) != (read := _sales_from_api(staff)):
                problems.append(f"sales: the read model says {read}, the order tables {expected}")
            print(
                f"\n[events] {time.monotonic() - began:.0f}s; {total} events "
                f"{dict(Counter(ids.values()).most_common())}; stream entries {stream_entries}; faults {faults}; "
                f"admin calls {dict(edits)}; checkouts {Counter(c['status'] for c in load.checkouts)}; "
                f"drained in {waited:.0f}s; webhooks sent again after an unfinished attempt "
                f"{sum(1 for i, n in receiver.received.items() if n > 1)}; logs in {shop.logs}",
                flush=True,
            )
        finally:
            stop.set()
            shop.stop()
    assert not problems, f"{len(problems)} invariants broken:\n" + "\n".join(problems)
    shutil.rmtree(var, ignore_errors=True)
