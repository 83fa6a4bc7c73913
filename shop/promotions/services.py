"""Promotions in use: applying a code to a cart (throttled), the cart's discount, redemption inside the
checkout's transaction (counted under row locks), and giving redemptions back on cancellation.

The rules themselves live in shop.promotions.rules (pure); this module only gathers their inputs
from PostgreSQL and writes their outcome.

Locks (STYLE.md 7): redeeming locks the *limited* promotions it is about to use (a usage limit, a
per-customer limit, a limited code or first-order-only) with SELECT ... FOR UPDATE in id order, then
counts the active redemptions in fresh statements (READ COMMITTED: each statement sees what the
previous holder of the lock committed). Two checkouts using one limited promotion therefore count one
after the other, and never both see the last free use. Checkout takes its locks in the order
cart -> promotions -> variants everywhere, so checkouts cannot deadlock one another.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

from flask import current_app
from sqlalchemy import CursorResult, event, func, or_, select, update
from sqlalchemy.orm import Session, UOWTransaction

from shop import clock, events, pricing, ratelimit
from shop.catalog.changes import on_catalog_change
from shop.catalog.models import Category, Product, Variant
from shop.errors import Conflict, Invalid, TooMany, ValidationError
from shop.extensions import db
from shop.money import format_money, money
from shop.promotions import rules
from shop.promotions.models import Promotion, PromotionCode, Redemption

if TYPE_CHECKING:
    from shop.orders.models import Order


class Cart(Protocol):
    """What promotions reads of a cart (shop.cart's Cart: that package is above this one, so it is not imported)."""

    @property
    def id(self) -> Any: ...

    @property
    def user_id(self) -> int | None: ...

    @property
    def currency(self) -> str: ...

    @property
    def coupon_code(self) -> str | None: ...


WINDOW_SECONDS = 15 * 60
PER_CART = 10  # failed attempts per cart per window
PER_IP = 30  # failed attempts per IP per window


def _coupon_details(code: rules.CouponErrorCode, rule: rules.Rule | None, currency: str) -> dict[str, Any]:
    details: dict[str, Any] = {"code": code}
    if code == rules.MIN_SUBTOTAL and rule is not None and rule.min_subtotal is not None:
        details["min_subtotal"] = money(rule.min_subtotal, currency)
    return details


class CouponRejected(Invalid):
    """The code the shopper typed fails a rule (`code` names it)."""

    def __init__(self, code: rules.CouponErrorCode, rule: rules.Rule | None = None, currency: str = "USD") -> None:
        super().__init__(code, message(code, rule, currency), _coupon_details(code, rule, currency))


class CouponNoLongerApplies(Conflict):
    """At checkout, under the promotion's lock: the cart's code fails a rule it passed before (used up meanwhile)."""

    def __init__(self, code: rules.CouponErrorCode, rule: rules.Rule | None = None, currency: str = "USD") -> None:
        super().__init__(code, message(code, rule, currency), _coupon_details(code, rule, currency))


def message(code: rules.CouponErrorCode, rule: rules.Rule | None = None, currency: str = "USD") -> str:
    """The shopper's sentence for a code's refusal; the minimum subtotal is named when there is one."""
    if code == rules.MIN_SUBTOTAL and rule is not None and rule.min_subtotal is not None:
        return f"This code needs a subtotal of at least {format_money(rule.min_subtotal, currency)}."
    return rules.MESSAGES[code]


@dataclass
class Applied:
    """A cart's discount as priced now."""

    lines: list[rules.DiscountLine] = field(default_factory=list)
    error: rules.CouponErrorCode | None = None  # why the cart's code does not apply (it stays on the cart)
    names: dict[int, str] = field(default_factory=dict)  # promotion id -> name
    error_message: str | None = None  # the shopper's sentence for `error` (naming a minimum subtotal)
    # Sale prices on the lines (not part of the discount): promotion id -> what it took off the lines in all.
    sales: dict[int, int] = field(default_factory=dict)

    @property
    def goods(self) -> int:
        return rules.goods_discount(self.lines)

    @property
    def free_shipping(self) -> bool:
        return any(d.applies_to_shipping > 0 for d in self.lines)


# -- reading the inputs ---------------------------------------------------------------------------


def to_rule(p: Promotion, code: PromotionCode | None = None) -> rules.Rule:
    return rules.Rule(
        id=p.id,
        kind=p.kind,
        value=int(p.value or 0),
        automatic=bool(p.automatic) and code is None,
        active=bool(p.active),
        starts_at=p.starts_at,
        ends_at=p.ends_at,
        min_subtotal=p.min_subtotal,
        usage_limit=p.usage_limit,
        per_customer_limit=p.per_customer_limit,
        first_order_only=bool(p.first_order_only),
        stackable=bool(p.stackable),
        priority=int(p.priority or 0),
        applies_to=dict(p.applies_to or {}),
        excludes=dict(p.excludes or {}),
        code=code.code if code else None,
        code_id=code.id if code else None,
        code_usage_limit=code.usage_limit if code else None,
        name=p.name or "",
    )


def find_code(text: str) -> PromotionCode | None:
    return db.session.scalar(select(PromotionCode).where(func.upper(PromotionCode.code) == text.strip().upper()))


def live_automatic(at: datetime | None = None) -> list[Promotion]:
    at = at or clock.now()
    return list(
        db.session.scalars(
            select(Promotion)
            .where(
                Promotion.automatic.is_(True),
                Promotion.active.is_(True),
                or_(Promotion.starts_at.is_(None), Promotion.starts_at <= at),
                or_(Promotion.ends_at.is_(None), Promotion.ends_at > at),
            )
            .order_by(Promotion.id)
        )
    )


def category_ancestors() -> dict[int, frozenset[int]]:
    """Each category id -> itself and its ancestors (a rule on "Clothing" covers "Clothing > Tees")."""
    parents: dict[int, int | None] = dict(db.session.execute(select(Category.id, Category.parent_id)).all())
    out: dict[int, frozenset[int]] = {}
    for cid in parents:
        seen: set[int] = set()
        cur: int | None = cid
        while cur is not None and cur not in seen:
            seen.add(cur)
            cur = parents.get(cur)
        out[cid] = frozenset(seen)
    return out


def snapshot(lines: list[pricing.PricedLine], shipping_method: str | None = None) -> rules.CartSnapshot:
    ids = [line.variant_id for line in lines]
    where = (
        dict(db.session.execute(select(Variant.id, Product.id).join(Product).where(Variant.id.in_(ids))).all())
        if ids
        else {}
    )
    cats = (
        dict(
            db.session.execute(select(Product.id, Product.category_id).where(Product.id.in_(set(where.values())))).all()
        )
        if where
        else {}
    )
    ancestors = category_ancestors() if cats else {}

    def categories(variant_id: int) -> frozenset[int]:
        """The variant's product's category and its ancestors (none for a product without one, or gone)."""
        product_id = where.get(variant_id)
        category_id = cats.get(product_id) if product_id is not None else None
        return ancestors.get(category_id, frozenset()) if category_id is not None else frozenset()

    subtotal = sum(line.line_total for line in lines)
    shipping = (
        pricing.shipping_cost(shipping_method or "standard", subtotal, current_app.config["FREE_SHIPPING_THRESHOLD"])
        if lines
        else 0
    )
    return rules.CartSnapshot(
        tuple(
            rules.Line(
                line.variant_id,
                where.get(line.variant_id, 0),
                categories(line.variant_id),
                line.quantity,
                line.unit_price,
                getattr(line, "sale_stackable", False) if getattr(line, "sale_promotion_id", None) else None,
            )
            for line in lines
        ),
        shipping,
    )


def with_sale_prices(
    lines: list[pricing.PricedLine], at: datetime | None = None, live: list[Promotion] | None = None
) -> list[pricing.PricedLine]:
    """The lines at their sale prices where a live sale rule covers them (rules.sale_price: the product page's
    price), with the catalogue price kept as list_price; the other lines as they are. `live`: live_automatic(at),
    when the caller has it."""
    at = at or clock.now()
    if not lines:
        return lines
    sales = [r for r in (to_rule(p) for p in (live_automatic(at) if live is None else live)) if rules.is_sale_rule(r)]
    if not sales:
        return lines
    out = []
    for line, snap in zip(lines, snapshot(lines).lines):
        found = rules.sale_price(line.unit_price, snap, sales, at)
        out.append(
            replace(
                line,
                unit_price=found[0],
                list_price=line.unit_price,
                sale_promotion_id=found[1].id,
                sale_stackable=found[1].stackable,
            )
            if found
            else line
        )
    return out


def _sales(lines: Iterable[pricing.PricedLine]) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in lines:
        promotion_id = getattr(line, "sale_promotion_id", None)
        if promotion_id:
            out[promotion_id] = out.get(promotion_id, 0) + line.saving * line.quantity
    return out


def history(rule_list: list[rules.Rule], user_id: int | None, email: str | None) -> rules.History:
    from shop.orders.models import Order
    from shop.orders.states import CANCELLED

    ids = sorted({r.id for r in rule_list})
    code_ids = sorted({r.code_id for r in rule_list if r.code_id})
    active = Redemption.status == "active"
    uses = (
        dict(
            db.session.execute(
                select(Redemption.promotion_id, func.count())
                .where(Redemption.promotion_id.in_(ids), active)
                .group_by(Redemption.promotion_id)
            ).all()
        )
        if ids
        else {}
    )
    code_uses = (
        {
            code_id: n
            for code_id, n in db.session.execute(
                select(Redemption.code_id, func.count())
                .where(Redemption.code_id.in_(code_ids), active)
                .group_by(Redemption.code_id)
            ).all()
            if code_id is not None  # (never: the IN leaves NULL out)
        }
        if code_ids
        else {}
    )
    email = (email or "").strip().lower() or None
    if not (user_id or email):
        return rules.History(uses, code_uses, {}, 0, known_customer=False)
    who = [
        c
        for c in ((Redemption.user_id == user_id) if user_id else None, (Redemption.email == email) if email else None)
        if c is not None
    ]
    customer = (
        dict(
            db.session.execute(
                select(Redemption.promotion_id, func.count())
                .where(Redemption.promotion_id.in_(ids), active, or_(*who))
                .group_by(Redemption.promotion_id)
            ).all()
        )
        if ids
        else {}
    )
    mine = [
        c
        for c in (
            (Order.user_id == user_id) if user_id else None,
            (func.lower(Order.email) == email) if email else None,
        )
        if c is not None
    ]
    orders_before = (
        db.session.scalar(select(func.count()).select_from(Order).where(or_(*mine), Order.status != CANCELLED)) or 0
    )
    return rules.History(uses, code_uses, customer, orders_before, known_customer=True)


def _customer(cart: Cart, user: Any = None, email: str | None = None) -> tuple[int | None, str | None]:
    if user is not None:
        return user.id, (email or user.email)
    if cart.user_id is not None:
        from shop.accounts.models import User

        u = db.session.get(User, cart.user_id)
        return cart.user_id, (email or (u.email if u else None))
    return None, email


def _price(
    cart: Cart,
    lines: list[pricing.PricedLine],
    *,
    user: Any = None,
    email: str | None = None,
    shipping_method: str | None = None,
    promotions: dict[int, Promotion] | None = None,
    at: datetime | None = None,
    live: list[Promotion] | None = None,
) -> tuple[Applied, rules.Rule | None, rules.CouponErrorCode | None]:
    """The cart's discount now; also the code's rule and, if the code fails, why. `live`: live_automatic(at), when
    the caller has it."""
    at = at or clock.now()
    code_rule: rules.Rule | None = None
    error: rules.CouponErrorCode | None = None
    if cart.coupon_code:
        pc = find_code(cart.coupon_code)
        if pc is None:
            error = rules.NOT_FOUND
        else:
            code_rule = to_rule(promotions.get(pc.promotion_id, pc.promotion) if promotions else pc.promotion, pc)
    auto = [to_rule(p) for p in (live_automatic(at) if live is None else live)]
    if promotions:  # the locked, freshly read rows
        auto = [to_rule(promotions[r.id]) if r.id in promotions else r for r in auto]
    auto = [r for r in auto if not rules.is_sale_rule(r)]  # those are in the lines' prices already
    found: list[rules.DiscountLine] = []
    if code_rule is None and not auto:  # no rule in play: nothing to count or look up
        return _applied(cart, found, error, code_rule, lines)
    user_id, email = _customer(cart, user, email)
    hist = history([*auto, *([code_rule] if code_rule else [])], user_id, email)
    snap = snapshot(lines, shipping_method)
    if code_rule is not None:
        try:
            found = rules.evaluate_code(snap, code_rule, auto, hist, at)
        except rules.CodeRejected as exc:
            error = exc.code
    if code_rule is None or error:
        found = rules.evaluate(snap, auto, hist, at)
    return _applied(cart, found, error, code_rule, lines)


def _applied(
    cart: Cart,
    found: list[rules.DiscountLine],
    error: rules.CouponErrorCode | None,
    code_rule: rules.Rule | None,
    lines: list[pricing.PricedLine],
) -> tuple[Applied, rules.Rule | None, rules.CouponErrorCode | None]:
    sales = _sales(lines)
    ids = [d.promotion_id for d in found] + list(sales)
    names = (
        dict(db.session.execute(select(Promotion.id, Promotion.name).where(Promotion.id.in_(ids))).all()) if ids else {}
    )
    currency = getattr(cart, "currency", None) or "USD"
    return (
        Applied(found, error, dict(names), message(error, code_rule, currency) if error else None, sales),
        code_rule,
        error,
    )


def cart_discount(
    cart: Cart,
    lines: list[pricing.PricedLine],
    *,
    user: Any = None,
    email: str | None = None,
    shipping_method: str | None = None,
) -> Applied:
    """For showing a cart or a quote (no locks): the best discount now; a failing code is reported."""
    applied, _, _ = _price(cart, lines, user=user, email=email, shipping_method=shipping_method)
    return applied


# -- applying a code (throttled) ------------------------------------------------------------------


def _throttle(cart_id: Any, ip: str) -> list[tuple[str, str]]:
    """Count this attempt per cart and per IP; 429 with Retry-After past either limit."""
    cfg = current_app.config
    window = int(cfg.get("COUPON_ATTEMPT_WINDOW_SECONDS", WINDOW_SECONDS))
    counted = [
        ("coupon:cart", str(cart_id), int(cfg.get("COUPON_ATTEMPTS_PER_CART", PER_CART))),
        ("coupon:ip", ip or "unknown", int(cfg.get("COUPON_ATTEMPTS_PER_IP", PER_IP))),
    ]
    over: list[tuple[int, int]] = []
    for scope, subject, limit in counted:
        w = ratelimit.hit(scope, subject, window)
        if w.count > limit:
            over.append((w.retry_after, limit))
    if over:
        retry, limit = max(over)  # the limit that keeps the client out longest
        raise TooMany(
            "rate_limited",
            "Too many attempts to apply a code; try again later.",
            {"retry_after": retry},
            retry_after=retry,
            limit=limit,
        )
    return [(scope, subject) for scope, subject, _ in counted]


def check_code(cart: Cart, lines: list[pricing.PricedLine], code: Any, ip: str, user: Any = None) -> str:
    """Check a code against every rule for a locked, open cart priced as `lines` (at sale prices: the code is priced
    on what the shopper pays); the code as stored, or 422 naming the failed rule. Wrong guesses are throttled per
    cart and network; a code that works is not a guess."""
    if not isinstance(code, str) or not code.strip() or len(code.strip()) > 64:
        raise ValidationError({"code": "is required (at most 64 characters)"})
    counted = _throttle(cart.id, ip)
    pc = find_code(code)
    if pc is None:
        raise CouponRejected(rules.NOT_FOUND)
    at = clock.now()
    rule = to_rule(pc.promotion, pc)
    auto = [r for r in (to_rule(p) for p in live_automatic(at)) if not rules.is_sale_rule(r)]
    user_id, email = _customer(cart, user)
    try:
        rules.evaluate_code(snapshot(lines), rule, auto, history([rule, *auto], user_id, email), at)
    except rules.CodeRejected as exc:
        raise CouponRejected(exc.code, rule=rule, currency=cart.currency) from None
    for scope, subject in counted:
        ratelimit.take_back(scope, subject)
    return pc.code


# -- redemption inside checkout's transaction -----------------------------------------------------


def lock_promotions(ids: Collection[int]) -> dict[int, Promotion]:
    """Lock these promotion rows (FOR UPDATE, id order, re-read): their uses are counted one checkout
    at a time. Id order, so two checkouts locking the same promotions cannot deadlock."""
    if not ids:
        return {}
    return {
        p.id: p
        for p in db.session.scalars(
            select(Promotion)
            .where(Promotion.id.in_(sorted(set(ids))))
            .order_by(Promotion.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }


def price_for_checkout(
    cart: Cart,
    lines: list[pricing.PricedLine],
    *,
    user: Any,
    email: str,
    shipping_method: str,
    at: datetime | None = None,
    live: list[Promotion] | None = None,
) -> Applied:
    """Under the locks of the limited promotions in play: the discount, or 409 naming the rule the
    cart's code now fails (nothing is written). An automatic promotion that no longer applies
    (used up meanwhile) simply drops out; the order shows what was given. `live`: live_automatic(at), when the
    caller has it."""
    at = at or clock.now()
    live = live_automatic(at) if live is None else live
    candidates = [to_rule(p) for p in live]
    pc = find_code(cart.coupon_code) if cart.coupon_code else None
    if cart.coupon_code and pc is None:
        raise CouponNoLongerApplies(rules.NOT_FOUND)
    if pc is not None:
        candidates.append(to_rule(pc.promotion, pc))
    locked = lock_promotions([r.id for r in candidates if r.limited])
    applied, code_rule, error = _price(
        cart, lines, user=user, email=email, shipping_method=shipping_method, promotions=locked, at=at, live=live
    )
    if error:
        raise CouponNoLongerApplies(error, code_rule, cart.currency)
    return applied


def record(order: Order, applied: Applied, *, user_id: int | None, email: str, shipping_waived: int = 0) -> None:
    """Insert the order's redemptions (flushes; the checkout commits): its discounts', and its sale prices' (what
    each sale took off the lines), so a promotion's report counts a sale like any other promotion."""
    for d in applied.lines:
        amount = rules.goods_discount([d]) + (shipping_waived if d.applies_to_shipping else 0)
        db.session.add(
            Redemption(
                promotion_id=d.promotion_id,
                code_id=d.code_id,
                order_id=order.id,
                user_id=user_id,
                email=email.strip().lower(),
                discount=amount,
                status="active",
            )
        )
    for promotion_id, amount in applied.sales.items():
        if amount > 0 and promotion_id not in {d.promotion_id for d in applied.lines}:
            db.session.add(
                Redemption(
                    promotion_id=promotion_id,
                    code_id=None,
                    order_id=order.id,
                    user_id=user_id,
                    email=email.strip().lower(),
                    discount=amount,
                    status="active",
                )
            )
    db.session.flush()


def release(order_id: int) -> int:
    """Give back an order's redemptions (its cancellation, or its reservation's expiry). Flushes."""
    result = db.session.execute(
        update(Redemption)
        .where(Redemption.order_id == order_id, Redemption.status == "active")
        .values(status="released", released_at=clock.now())
    )
    # An UPDATE answers a CursorResult, which has the rowcount; Session.execute() is typed to answer a Result.
    return cast(CursorResult[Any], result).rowcount


@events.order_cancelled.connect
@events.ranked("promotions")
def _release_when_cancelled(order: Order, **_: Any) -> None:
    """A cancelled order's coupon uses count no more (also when its reservation expired)."""
    release(order.id)


# -- automatic sales on product pages ---------------------------------------------------------------

SCHEDULE_SECONDS = 10  # how long another process may take to see a new or edited automatic sale


class Schedule(TypedDict, total=False):
    """What _schedule() keeps in app.extensions (empty until it is first filled)."""

    rules: list[rules.Rule]
    cats: dict[int, frozenset[int]] | None  # category_ancestors(), when a rule names categories
    until: float  # time.monotonic() after which it is read again


class ProductSale(TypedDict):
    price: int  # the sale price of one unit
    regular: int
    ends_at: datetime | None
    name: str  # the promotion's


def _schedule() -> Schedule:
    """Every active automatic promotion (any window) as rules, plus the category ancestry they need.

    Kept per process for SCHEDULE_SECONDS, and dropped at once in this process when a promotion or a
    category changes, so product pages (whose catalogue data is cached in Redis) cost no query for
    it. Windows are checked at render time, so a sale starts and ends on its second."""
    import time as _time

    from flask import current_app

    memo: Schedule = current_app.extensions.setdefault("promotion_schedule", {})
    if memo.get("until", 0) > _time.monotonic():
        return memo
    rows = db.session.scalars(
        select(Promotion).where(Promotion.automatic.is_(True), Promotion.active.is_(True)).order_by(Promotion.id)
    ).all()
    auto = [to_rule(p) for p in rows]
    needs_cats = any((r.applies_to or {}).get("categories") or (r.excludes or {}).get("categories") for r in auto)
    memo.update(
        {
            "rules": auto,
            "cats": category_ancestors() if needs_cats else None,
            "until": _time.monotonic() + SCHEDULE_SECONDS,
        }
    )
    return memo


def forget_schedule() -> None:
    from flask import current_app

    if current_app:
        current_app.extensions.pop("promotion_schedule", None)


def _live(auto: list[rules.Rule], at: datetime) -> list[rules.Rule]:
    return [r for r in auto if (r.starts_at is None or r.starts_at <= at) and (r.ends_at is None or r.ends_at > at)]


def product_sales(data: dict[str, Any], at: datetime | None = None) -> dict[int, ProductSale]:
    """Variant id -> {price, regular, ends_at, name} for a product's variants under a live automatic
    percentage sale. Computed at render time from the (cached) product data and the promotions live
    now, so a sale shows from its first second to its last whatever the catalogue cache holds."""
    at = at or clock.now()
    schedule = _schedule()
    auto = _live(schedule["rules"], at)
    if not auto or not data.get("variants"):
        return {}
    cat = data["category"]["id"]
    cats = (schedule["cats"] or {}).get(cat, frozenset({cat})) if schedule["cats"] else frozenset({cat})
    out: dict[int, ProductSale] = {}
    for v in data["variants"]:
        unit = v["price_amount"]
        found = rules.sale_price(unit, rules.Line(v["id"], data["id"], cats, 1, unit), auto, at)
        if found:
            out[v["id"]] = {"price": found[0], "regular": unit, "ends_at": found[1].ends_at, "name": found[1].name}
    return out


def seconds_to_next_change(at: datetime | None = None) -> int | None:
    """Seconds until an automatic promotion starts or ends (None if none is due): a shared cache may
    not keep a product page past that moment."""
    at = at or clock.now()
    times = [t for r in _schedule()["rules"] for t in (r.starts_at, r.ends_at) if t is not None and t > at]
    due = min(times, default=None)
    return max(0, int((due - at).total_seconds())) if due else None


# A promotion or category change is seen at once by this process (others within SCHEDULE_SECONDS).
@event.listens_for(Session, "after_flush")
def _note_promotion_change(session: Session, flush_context: UOWTransaction) -> None:
    if any(isinstance(o, (Promotion, PromotionCode)) for o in (*session.new, *session.dirty, *session.deleted)):
        session.info["promotions_changed"] = True


@event.listens_for(Session, "after_commit")
def _drop_schedule(session: Session) -> None:
    if session.info.pop("promotions_changed", False):
        forget_schedule()


@on_catalog_change
def _categories_moved(product_ids: set[int], categories_changed: bool) -> None:
    if categories_changed:
        forget_schedule()
