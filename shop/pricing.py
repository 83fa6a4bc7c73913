"""Totals, shipping and tax. Pure functions over integer minor units; no database, no floats.

Tax comes from a rate table (basis points by "COUNTRY" or "COUNTRY-REGION", "*" as the default)
behind the small TaxTable interface, so a tax service can replace it later. A module of its own, below every
domain that prices (cart, promotions, checkout, payments, accounts' address checks), so none imports another to
price.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHIPPING_METHODS = {
    # name: (label, price, free when the goods total reaches this amount or None)
    "standard": ("Standard (3-5 working days)", 595, 7500),
    "express": ("Express (next working day)", 1995, None),
}
DEFAULT_TAX_RATES = {"*": 0, "US-CA": 725, "US-NY": 400, "GB": 2000, "DE": 1900, "FR": 2000}


@dataclass(frozen=True)
class PricedLine:
    variant_id: int
    sku: str
    name: str
    options: dict
    quantity: int
    unit_price: int  # what one unit costs: the automatic sale price when a sale covers it
    # Under an automatic sale (shop.promotions.rules.sale_price): the catalogue price before it, the sale's
    # promotion and whether other stackable offers may add to it. None/None/False otherwise.
    list_price: int | None = None
    sale_promotion_id: int | None = None
    sale_stackable: bool = False

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity

    @property
    def saving(self) -> int:
        """What the sale takes off one unit (0 without a sale)."""
        return max(0, (self.list_price or self.unit_price) - self.unit_price)


@dataclass(frozen=True)
class Totals:
    subtotal: int
    discount: int
    shipping: int
    tax: int
    total: int
    lines: tuple = field(default=())


class TaxTable:
    """Rates in basis points (725 = 7.25%) by country, or country-region."""

    def __init__(self, rates: dict[str, int] | None = None):
        self.rates = {k.upper(): int(v) for k, v in (rates or DEFAULT_TAX_RATES).items()}

    def rate(self, country: str | None, region: str | None = None) -> int:
        country = (country or "").upper()
        region = (region or "").upper()
        return self.rates.get(f"{country}-{region}", self.rates.get(country, self.rates.get("*", 0)))

    def tax(self, taxable: int, country: str | None, region: str | None = None) -> int:
        """Round half up to the minor unit."""
        return (taxable * self.rate(country, region) + 5000) // 10000


def tax_table() -> TaxTable:
    """The shop's tax table: TAX_RATES (JSON) from the settings, else the defaults."""
    import json

    from flask import current_app

    raw = current_app.config.get("TAX_RATES")
    return TaxTable(json.loads(raw) if raw else None)


def shipping_cost(method: str, goods: int, free_standard_over: int | None = None) -> int:
    label, price, free_over = SHIPPING_METHODS[method]
    if free_over is not None and free_standard_over is not None:
        free_over = free_standard_over
    return 0 if free_over is not None and goods >= free_over else price


def totals(
    lines: list[PricedLine],
    *,
    shipping_method: str | None,
    country: str | None = None,
    region: str | None = None,
    discount: int = 0,
    tax_table: TaxTable | None = None,
    free_standard_over: int | None = None,
    free_shipping: bool = False,
) -> Totals:
    """The order's money: goods, discount, shipping (if a method is chosen; none with a free-shipping
    promotion), tax on goods after discount."""
    subtotal = sum(line.line_total for line in lines)
    discount = max(0, min(discount, subtotal))
    goods = subtotal - discount
    shipping = shipping_cost(shipping_method, goods, free_standard_over) if shipping_method and lines else 0
    if free_shipping:
        shipping = 0
    tax = (tax_table or TaxTable()).tax(goods, country, region) if country else 0
    return Totals(subtotal, discount, shipping, tax, goods + shipping + tax, tuple(lines))
