"""What the integer columns can hold, so a number beyond one is refused as bad input (422, or a form
error in the back-office) instead of failing inside PostgreSQL with a 500."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import BigInteger, SmallInteger

INT2_MAX = 2**15 - 1  # SmallInteger
INT4_MAX = 2**31 - 1  # Integer (PostgreSQL int4): ids, prices, stock, weights, limits
INT8_MAX = 2**63 - 1  # BigInteger: order totals, payments, refunds, promotion amounts
YEARS = (2000, 9000)  # dates typed for reports and promotions; outside is a typo (and 9999-12-31 + 1 day overflows)


def column_max(attribute) -> int:
    """The largest value the integer column behind a model attribute (e.g. `Variant.on_hand`) holds."""
    kind = attribute.type
    if isinstance(kind, BigInteger):
        return INT8_MAX
    if isinstance(kind, SmallInteger):
        return INT2_MAX
    return INT4_MAX


def is_whole(value, lo: int, hi: int) -> bool:
    """A JSON whole number (not a bool, not a float) from `lo` to `hi`."""
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def fits(value, attribute, lo: int = 0) -> bool:
    """A whole number from `lo` up to what `attribute`'s column holds."""
    return is_whole(value, lo, column_max(attribute))


def parse_day(raw: str, years: tuple[int, int] = YEARS) -> date | None:
    """A day typed like 2026-11-01 within `years`, or None when it is not one."""
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        return None
    return day if years[0] <= day.year <= years[1] else None


def one_of(column: str, values: Iterable[str]) -> str:
    """The SQL of a CHECK that `column` holds one of `values` (an enum's members): "status IN ('a', 'b')"."""
    return f"{column} IN ({', '.join(repr(str(value)) for value in values)})"
