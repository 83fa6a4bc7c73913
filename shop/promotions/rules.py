"""The promotion rules, evaluated purely: a cart snapshot, the rules, the customer's history and the
time in; discount lines (each with its reason) or a stable error code out. No database, no clock,
no floats: amounts are integer minor units.

Selection (deterministic and independent of the order the rules are listed):
  - every rule that applies is priced on its own against the cart;
  - the candidates are the set of all applicable *stackable* rules together, and each applicable
    *exclusive* rule alone;
  - the candidate giving the largest discount wins; ties go to the higher priority, then to the
    lowest promotion id;
  - stackable rules are applied in (priority desc, id asc) order, each capped by what the earlier
    ones left of every line (and of the shipping), so together they never exceed what they apply to.
A percentage or fixed discount never exceeds the eligible lines' total; free shipping never exceeds
the shipping; the goods' discount never exceeds the subtotal, so a total is never negative.

Sale prices: an automatic percentage rule without cart conditions or limits (is_sale_rule) is not a cart
discount but the line's price (sale_price), the one the product page shows; the cart's other rules are
evaluated on those prices. A line bought at an exclusive (not stackable) sale price takes no other offer;
one at a stackable sale price takes only stackable ones. A code kept off every line by that is
NOT_COMBINABLE.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class CouponErrorCode(StrEnum):
    """Stable error codes for a code the shopper typed (API.md: 422 `code` naming the failed rule)."""

    NOT_FOUND = "coupon_not_found"
    EXPIRED = "coupon_expired"
    NOT_STARTED = "coupon_not_started"
    MIN_SUBTOTAL = "coupon_min_subtotal"
    EXHAUSTED = "coupon_exhausted"
    CUSTOMER_LIMIT = "coupon_customer_limit"
    FIRST_ORDER_ONLY = "coupon_first_order_only"
    NOT_APPLICABLE = "coupon_not_applicable"
    NOT_COMBINABLE = "coupon_not_combinable"


# The rules below name them briefly.
(
    NOT_FOUND,
    EXPIRED,
    NOT_STARTED,
    MIN_SUBTOTAL,
    EXHAUSTED,
    CUSTOMER_LIMIT,
    FIRST_ORDER_ONLY,
    NOT_APPLICABLE,
    NOT_COMBINABLE,
) = CouponErrorCode

MESSAGES = {
    NOT_FOUND: "There is no such code.",
    EXPIRED: "This code has expired.",
    NOT_STARTED: "This code is not valid yet.",
    MIN_SUBTOTAL: "Your order does not reach this code's minimum subtotal yet.",
    EXHAUSTED: "This code has been used up.",
    CUSTOMER_LIMIT: "You have already used this code as many times as it allows.",
    FIRST_ORDER_ONLY: "This code is for a first order only.",
    NOT_APPLICABLE: "This code does not apply to anything in your cart.",
    NOT_COMBINABLE: "This code cannot be combined with a better offer already applied to your cart.",
}


@dataclass(frozen=True)
class Line:
    variant_id: int
    product_id: int
    category_ids: frozenset[int]  # the product's category and its ancestors
    quantity: int
    unit_price: int
    # On sale (unit_price is the sale price): whether the sale is stackable; None when not on sale.
    sale_stackable: bool | None = None

    @property
    def total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class CartSnapshot:
    lines: tuple[Line, ...]
    shipping: int = 0  # what shipping would cost without a discount

    @property
    def subtotal(self) -> int:
        return sum(line.total for line in self.lines)


@dataclass(frozen=True)
class Rule:
    """A promotion as the evaluator sees it; `code`/`code_id`/`code_usage_limit` when reached by a code."""

    id: int
    kind: str  # percent | fixed | free_shipping
    value: int = 0
    automatic: bool = False
    active: bool = True
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    min_subtotal: int | None = None
    usage_limit: int | None = None
    per_customer_limit: int | None = None
    first_order_only: bool = False
    stackable: bool = False
    priority: int = 0
    applies_to: dict[str, Any] = field(default_factory=dict)  # {"categories": [ids], "products": ..., "variants": ...}
    excludes: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    code_id: int | None = None
    code_usage_limit: int | None = None
    name: str = ""

    @property
    def limited(self) -> bool:
        """Whether using it must be counted under a lock (shop.promotions.services.lock_promotions)."""
        return (
            self.usage_limit is not None
            or self.per_customer_limit is not None
            or self.code_usage_limit is not None
            or self.first_order_only
        )


@dataclass(frozen=True)
class History:
    """Active redemptions so far: per promotion, per code, and this customer's per promotion; and how
    many earlier orders (not cancelled) the customer has. `known_customer` False (a guest whose e-mail
    is not known yet): the per-customer rules are left to checkout."""

    uses: dict[int, int] = field(default_factory=dict)  # promotion id -> count
    code_uses: dict[int, int] = field(default_factory=dict)  # code id -> count
    customer_uses: dict[int, int] = field(default_factory=dict)  # promotion id -> count
    orders_before: int = 0
    known_customer: bool = True


@dataclass(frozen=True)
class DiscountLine:
    promotion_id: int
    code: str | None
    code_id: int | None
    amount: int
    reason: str
    applies_to_lines: tuple[tuple[int, int], ...] = ()  # ((variant_id, amount), ...)
    applies_to_shipping: int = 0


class CodeRejected(Exception):
    def __init__(self, code: CouponErrorCode) -> None:
        super().__init__(MESSAGES[code])
        self.code = code
        self.message = MESSAGES[code]


# -- eligibility ----------------------------------------------------------------------------------


def _ids(spec: dict[str, Any] | None, key: str) -> set[int]:
    return {int(x) for x in (spec or {}).get(key) or ()}


def _matches(spec: dict[str, Any] | None, line: Line) -> bool:
    return bool(
        _ids(spec, "variants") & {line.variant_id}
        or _ids(spec, "products") & {line.product_id}
        or _ids(spec, "categories") & set(line.category_ids)
    )


def in_scope(rule: Rule, line: Line) -> bool:
    """In `applies_to` (empty: everything) and not in `excludes`."""
    scoped = any((rule.applies_to or {}).get(k) for k in ("categories", "products", "variants"))
    if scoped and not _matches(rule.applies_to, line):
        return False
    return not _matches(rule.excludes, line)


def eligible(rule: Rule, line: Line) -> bool:
    """In scope, and not kept off the line by its sale price (an exclusive sale takes no other offer, a
    stackable one only stackable offers)."""
    if line.sale_stackable is not None and not (line.sale_stackable and rule.stackable):
        return False
    return in_scope(rule, line)


def check(rule: Rule, cart: CartSnapshot, history: History, now: datetime) -> CouponErrorCode | None:
    """Why this rule cannot apply to this cart now (an error code), or None."""
    if not rule.active:
        return EXPIRED
    if rule.starts_at is not None and now < rule.starts_at:
        return NOT_STARTED
    if rule.ends_at is not None and now >= rule.ends_at:
        return EXPIRED
    if rule.usage_limit is not None and history.uses.get(rule.id, 0) >= rule.usage_limit:
        return EXHAUSTED
    if (
        rule.code_usage_limit is not None
        and rule.code_id is not None
        and history.code_uses.get(rule.code_id, 0) >= rule.code_usage_limit
    ):
        return EXHAUSTED
    if history.known_customer:
        if rule.per_customer_limit is not None and history.customer_uses.get(rule.id, 0) >= rule.per_customer_limit:
            return CUSTOMER_LIMIT
        if rule.first_order_only and history.orders_before > 0:
            return FIRST_ORDER_ONLY
    if rule.min_subtotal is not None and cart.subtotal < rule.min_subtotal:
        return MIN_SUBTOTAL
    if not any(eligible(rule, line) for line in cart.lines):
        return NOT_COMBINABLE if any(in_scope(rule, line) for line in cart.lines) else NOT_APPLICABLE
    return None


# -- pricing one rule -----------------------------------------------------------------------------


def _split(amount: int, weights: list[tuple[int, int]]) -> dict[int, int]:
    """`amount` spread over (key, weight) in proportion, exactly (largest remainder, then key order)."""
    total = sum(w for _, w in weights)
    if total <= 0 or amount <= 0:
        return {k: 0 for k, _ in weights}
    amount = min(amount, total)
    shares = {k: amount * w // total for k, w in weights}
    left = amount - sum(shares.values())
    order = sorted(weights, key=lambda kw: (-(amount * kw[1] % total), kw[0]))
    for k, w in order:
        if left <= 0:
            break
        if shares[k] < w:
            shares[k] += 1
            left -= 1
    return shares


def price(rule: Rule, cart: CartSnapshot, room: dict[int, int], shipping_room: int) -> tuple[dict[int, int], int]:
    """The rule's discount per line (variant id -> amount) and on shipping, never above `room`."""
    lines = [line for line in cart.lines if eligible(rule, line)]
    if rule.kind == "free_shipping":
        return {}, max(0, shipping_room)
    if rule.kind == "percent":
        pct = max(0, min(int(rule.value), 100))
        whole = sum(line.total for line in lines) * pct // 100  # rounded down, then spread exactly
        per_line = _split(whole, [(line.variant_id, line.total) for line in lines])
    elif rule.kind == "fixed":
        per_line = _split(max(0, int(rule.value)), [(line.variant_id, line.total) for line in lines])
    else:
        per_line = {}
    return {k: min(v, room.get(k, 0)) for k, v in per_line.items() if min(v, room.get(k, 0)) > 0}, 0


def _reason(rule: Rule) -> str:
    what = {"percent": f"{rule.value}% off", "fixed": "amount off", "free_shipping": "free shipping"}.get(
        rule.kind, rule.kind
    )
    source = f"code {rule.code}" if rule.code else ("automatic promotion" if rule.automatic else "promotion")
    label = f" ({rule.name})" if rule.name else ""
    return f"{what}: {source}{label}"


def _apply(rules: list[Rule], cart: CartSnapshot) -> list[DiscountLine]:
    room: dict[int, int] = {}
    for line in cart.lines:
        room[line.variant_id] = room.get(line.variant_id, 0) + line.total
    shipping_room = cart.shipping
    out = []
    for rule in sorted(rules, key=lambda r: (-r.priority, r.id)):
        per_line, ship = price(rule, cart, room, shipping_room)
        for k, v in per_line.items():
            room[k] -= v
        shipping_room -= ship
        amount = sum(per_line.values()) + ship
        out.append(
            DiscountLine(rule.id, rule.code, rule.code_id, amount, _reason(rule), tuple(sorted(per_line.items())), ship)
        )
    return out


# -- the evaluator --------------------------------------------------------------------------------


def _dedupe(rules: Iterable[Rule]) -> list[Rule]:
    """One rule per promotion id (the same promotion listed twice, or by code and automatically)."""
    by_id: dict[int, Rule] = {}
    for r in rules:
        have = by_id.get(r.id)
        if have is None or (r.code or "", r.code_id or 0) < (have.code or "", have.code_id or 0):
            by_id[r.id] = r
    return [by_id[k] for k in sorted(by_id)]


def evaluate(cart: CartSnapshot, rules: Iterable[Rule], history: History, now: datetime) -> list[DiscountLine]:
    """The discount lines for this cart: the best candidate (see the module's docstring)."""
    live = [r for r in _dedupe(rules) if check(r, cart, history, now) is None]
    candidates: list[tuple[list[Rule], list[DiscountLine]]] = []
    stackable = [r for r in live if r.stackable]
    if stackable:
        candidates.append((stackable, _apply(stackable, cart)))
    for r in live:
        if not r.stackable:
            candidates.append(([r], _apply([r], cart)))
    if not candidates:
        return []

    def score(c: tuple[list[Rule], list[DiscountLine]]) -> tuple[int, int, int]:
        chosen, lines = c
        return (-sum(d.amount for d in lines), -max(r.priority for r in chosen), min(r.id for r in chosen))

    _, best = min(candidates, key=score)
    return [d for d in best if d.amount > 0]


def evaluate_code(
    cart: CartSnapshot, code_rule: Rule, automatic: Iterable[Rule], history: History, now: datetime
) -> list[DiscountLine]:
    """The discount lines with a code applied: CodeRejected naming the rule it fails, including when
    it is valid but loses to an exclusive offer (or is exclusive and loses to others)."""
    error = check(code_rule, cart, history, now)
    if error:
        raise CodeRejected(error)
    lines = evaluate(cart, [code_rule, *automatic], history, now)
    if not any(d.promotion_id == code_rule.id for d in lines):
        raise CodeRejected(NOT_COMBINABLE)
    return lines


def goods_discount(lines: list[DiscountLine]) -> int:
    return sum(amount for d in lines for _, amount in d.applies_to_lines)


def shipping_discount(lines: list[DiscountLine]) -> int:
    return sum(d.applies_to_shipping for d in lines)


def is_sale_rule(r: Rule) -> bool:
    """An automatic percentage rule without cart conditions, customer rules or limits: it sets a sale price
    (the same on the product page, in the cart and on the order), not a cart discount."""
    return (
        r.automatic
        and r.kind == "percent"
        and r.code is None
        and r.min_subtotal is None
        and not r.first_order_only
        and r.per_customer_limit is None
        and r.usage_limit is None
    )


def sale_price(unit_price: int, line: Line, rules: Iterable[Rule], now: datetime) -> tuple[int, Rule] | None:
    """The sale price of one unit (product page, cart line, order line alike): the best live sale rule
    (is_sale_rule) that covers it, rounded down to the minor unit per unit; None when there is none."""
    best: tuple[int, Rule] | None = None
    snapshot = CartSnapshot((Line(line.variant_id, line.product_id, line.category_ids, 1, unit_price),))
    for r in sorted(rules, key=lambda r: (-r.priority, r.id)):
        if not is_sale_rule(r):
            continue
        if check(r, snapshot, History(known_customer=False), now) is not None:
            continue
        off = unit_price * max(0, min(r.value, 100)) // 100
        if off > 0 and (best is None or off > best[0]):
            best = (off, r)
    return (unit_price - best[0], best[1]) if best else None
