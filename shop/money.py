"""Money as integer minor units plus a currency code. No floats near a price."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Currencies whose minor unit is not 1/100.
_EXPONENT = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}
_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def exponent(currency: str) -> int:
    return _EXPONENT.get(currency.upper(), 2)


def money(amount: int | None, currency: str) -> dict | None:
    """The contract's Money object: {"amount": 1999, "currency": "USD"}."""
    if amount is None:
        return None
    return {"amount": int(amount), "currency": currency}


def foreign_currency(value, currency: str) -> str | None:
    """Why a money input is refused for naming another currency than `currency` (the shop's), else None.

    Money inputs are the contract's {"amount": 1999, "currency": "USD"} (a bare amount, or an object
    without a currency, means the shop's currency); an amount is never taken in another currency.
    """
    if isinstance(value, dict) and "currency" in value and value["currency"] != currency:
        return f"must be in {currency}, the shop's currency"
    return None


def minor_units(value):
    """The amount of a Money object, or `value` itself (a bare amount in minor units); unchecked."""
    return value.get("amount") if isinstance(value, dict) else value


def format_money(amount: int | None, currency: str) -> str:
    """1999, "USD" -> "$19.99" for people to read."""
    if amount is None:
        return ""
    exp = exponent(currency)
    value = Decimal(amount).scaleb(-exp)
    text = f"{value:,.{exp}f}"
    symbol = _SYMBOL.get(currency.upper())
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def parse_major(text: str, currency: str) -> int:
    """ "19.99" -> 1999 (minor units); raises ValueError on anything else."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise ValueError("not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError("must be zero or more")
    minor = value.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise ValueError("too many decimal places")
    return int(minor)
