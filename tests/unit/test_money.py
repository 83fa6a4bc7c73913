import pytest

from shop.money import format_money, money, parse_major


def test_money_is_integer_minor_units_with_currency():
    assert money(1999, "USD") == {"amount": 1999, "currency": "USD"}
    assert money(None, "USD") is None


@pytest.mark.parametrize(
    "amount,currency,text",
    [
        (1999, "USD", "$19.99"),
        (0, "USD", "$0.00"),
        (123456789, "EUR", "€1,234,567.89"),
        (500, "JPY", "¥500"),
        (1234, "CHF", "12.34 CHF"),
    ],
)
def test_format_money_for_people(amount, currency, text):
    assert format_money(amount, currency) == text


@pytest.mark.parametrize("text,minor", [("19.99", 1999), ("20", 2000), (" 0.5 ", 50), ("0", 0)])
def test_parse_major_units(text, minor):
    assert parse_major(text, "USD") == minor


@pytest.mark.parametrize("text", ["abc", "-1", "1.999", "nan", "inf", ""])
def test_parse_major_refuses_what_is_not_a_price(text):
    with pytest.raises(ValueError):
        parse_major(text, "USD")
