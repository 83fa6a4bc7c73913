"""Unpaid stock holds per client: how much stock one shopper may keep reserved by pending orders at once.

A pending order holds its units (shop.inventory reservations) until it is paid or RESERVATION_TTL_SECONDS
pass. Without a bound, one client placing orders it never pays for makes everything look sold out. So at
checkout the live holds of the client -- pending orders with active reservations placed from the same IP,
with the same e-mail or by the same account -- are counted in PostgreSQL, and the new order is refused
(409 hold_limit_reached) when it would take the client past a HOLD_* limit of config.py.

Race-safety: checkout takes a transaction-scoped advisory lock per identity of the client (IP, e-mail,
account; in sorted order) before it locks the variants, and counts after that. Two checkouts of one
client therefore count one after the other, and the second sees the first's committed holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select, text

from shop.errors import Conflict
from shop.extensions import db


@dataclass(frozen=True)
class Client:
    """Who is placing an order: each identity is counted on its own."""

    ip: str | None
    email: str
    user_id: int | None

    def identities(self) -> list[tuple[str, str]]:
        ids = [("email", self.email)]
        if self.ip:
            ids.append(("ip", self.ip))
        if self.user_id is not None:
            ids.append(("user", str(self.user_id)))
        return ids


@dataclass(frozen=True)
class Held:
    """One live reservation of a pending order, with who placed the order."""

    order_id: int
    client_ip: str | None
    email: str
    user_id: int | None
    variant_id: int
    quantity: int

    def belongs_to(self, kind: str, value: str) -> bool:
        return {
            "email": self.email,
            "ip": self.client_ip,
            "user": str(self.user_id) if self.user_id is not None else None,
        }[kind] == value


@dataclass(frozen=True)
class Limits:
    orders: int  # pending orders per e-mail / account (0: no limit)
    orders_per_ip: int
    units: int  # units held per e-mail / account
    units_per_ip: int
    sku_share_percent: int  # of a SKU's stock on hand, per identity
    sku_min_units: int  # ... or at least this many

    @classmethod
    def from_config(cls, cfg) -> Limits:
        return cls(
            cfg["HOLD_MAX_ORDERS"],
            cfg["HOLD_MAX_ORDERS_PER_IP"],
            cfg["HOLD_MAX_UNITS"],
            cfg["HOLD_MAX_UNITS_PER_IP"],
            cfg["HOLD_SKU_SHARE_PERCENT"],
            cfg["HOLD_SKU_MIN_UNITS"],
        )

    @property
    def any(self) -> bool:
        return any((self.orders, self.orders_per_ip, self.units, self.units_per_ip, self.sku_share_percent))

    def sku_allowance(self, on_hand: int) -> int:
        """Units of one SKU an identity may hold unpaid."""
        return max(self.sku_min_units, on_hand * self.sku_share_percent // 100)


class HoldLimitReached(Conflict):
    def __init__(self, limit: str, message: str, **details):
        super().__init__("hold_limit_reached", message, {"limit": limit, **details})


def problem(
    client: Client,
    held: list[Held],
    wanted: dict[int, int],
    stock: dict[int, tuple[str, int]],
    limits: Limits,
    minutes: int,
) -> HoldLimitReached | None:
    """The limit this order would break (pure). `stock` is {variant_id: (sku, on_hand)}."""
    later = f"Unpaid orders are released after {minutes} minutes; pay for or cancel one of yours, then try again."
    for kind, value in client.identities():
        mine = [h for h in held if h.belongs_to(kind, value)]
        max_orders = limits.orders_per_ip if kind == "ip" else limits.orders
        orders = len({h.order_id for h in mine})
        if max_orders and orders + 1 > max_orders:
            plural = "s" if orders != 1 else ""
            return HoldLimitReached(
                "orders",
                f"You already have {orders} unpaid order{plural} holding stock. {later}",
                held=orders,
                allowed=max_orders,
            )
        max_units = limits.units_per_ip if kind == "ip" else limits.units
        units = sum(h.quantity for h in mine) + sum(wanted.values())
        if max_units and units > max_units:
            return HoldLimitReached(
                "units",
                f"This order would keep {units} items reserved for you unpaid; "
                f"the most is {max_units}. Buy fewer, or pay for your other orders first.",
                held=units - sum(wanted.values()),
                allowed=max_units,
            )
        if limits.sku_share_percent:
            over = {}
            for vid, qty in wanted.items():
                sku, on_hand = stock[vid]
                allowed = limits.sku_allowance(on_hand)
                if sum(h.quantity for h in mine if h.variant_id == vid) + qty > allowed:
                    over[sku] = allowed
            if over:
                names = ", ".join(f"{n} of {sku}" for sku, n in sorted(over.items()))
                return HoldLimitReached(
                    "sku_share",
                    f"One shopper may keep at most {names} reserved unpaid. "
                    "Buy fewer, or pay for your other orders first.",
                    skus=sorted(over),
                    allowed=over,
                )
    return None


def _lock_key(kind: str, value: str) -> int:
    """A stable signed 64-bit advisory-lock key for one identity (a collision only serialises more)."""
    digest = hashlib.blake2b(f"shop.hold:{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock(client: Client) -> None:
    """Serialise checkouts of this client for the rest of the transaction (module docstring).

    Lock order in checkout: cart -> promotions -> these advisory locks (sorted) -> variants; nothing takes
    them in another order, so they cannot deadlock. Skipped when no limit is set."""
    if not Limits.from_config(current_app.config).any:
        return
    for key in sorted(_lock_key(kind, value) for kind, value in client.identities()):
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def held_by(client: Client) -> list[Held]:
    """The client's live unpaid holds: active reservations of pending orders from its IP, e-mail or account."""
    from sqlalchemy import or_

    from shop.inventory.models import Reservation
    from shop.orders.models import Order

    who = [Order.email == client.email]
    if client.ip:
        who.append(Order.client_ip == client.ip)
    if client.user_id is not None:
        who.append(Order.user_id == client.user_id)
    rows = db.session.execute(
        select(Order.id, Order.client_ip, Order.email, Order.user_id, Reservation.variant_id, Reservation.quantity)
        .join(Reservation, Reservation.order_id == Order.id)
        .where(Order.status == "pending", Reservation.status == "active", or_(*who))
    ).all()
    return [Held(*row) for row in rows]


def check(client: Client, wanted: dict[int, int]) -> None:
    """Refuse (HoldLimitReached) an order that takes the client past a limit; call after `lock(client)`."""
    from shop.catalog.models import Variant

    cfg = current_app.config
    limits = Limits.from_config(cfg)
    if not limits.any:
        return
    stock = {
        vid: (sku, on_hand)
        for vid, sku, on_hand in db.session.execute(
            select(Variant.id, Variant.sku, Variant.on_hand).where(Variant.id.in_(sorted(wanted)))
        )
    }
    refusal = problem(client, held_by(client), wanted, stock, limits, max(1, cfg["RESERVATION_TTL_SECONDS"] // 60))
    if refusal is not None:
        raise refusal
