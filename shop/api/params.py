"""Query-string parsing for the API: every bad value becomes a 422 naming the field."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict

from shop.bounds import YEARS, parse_day
from shop.errors import ValidationError

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class Params:
    """Collects field errors while reading; raise_if_invalid() reports them all at once."""

    def __init__(self, args: MultiDict):
        self.args = args
        self.errors: dict[str, str] = {}

    def int(self, name: str, default=None, *, lo: int | None = None, hi: int | None = None):
        raw = self.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.errors[name] = "must be a whole number"
            return default
        if lo is not None and value < lo:
            self.errors[name] = f"must be at least {lo}"
        elif hi is not None and value > hi:
            self.errors[name] = f"must be at most {hi}"
        return value

    def date(self, name: str, default=None, *, years: tuple[int, int] = YEARS):
        """A day like 2026-11-01 within `years` (a range's end + 1 day must still be a date)."""
        raw = self.args.get(name)
        if raw is None or raw == "":
            return default
        day = parse_day(raw, years)
        if day is None:
            self.errors[name] = f"must be a date like 2026-11-01 (years {years[0]} to {years[1]})"
            return default
        return day

    def bool(self, name: str, default: bool = False) -> bool:
        raw = self.args.get(name)
        if raw is None:
            return default
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        self.errors[name] = "must be true or false"
        return default

    def choice(self, name: str, choices, default: str) -> str:
        raw = self.args.get(name)
        if raw is None or raw == "":
            return default
        if raw not in choices:
            self.errors[name] = f"must be one of: {', '.join(choices)}"
            return default
        return raw

    def str(self, name: str, *, max_len: int = 200) -> str | None:
        raw = self.args.get(name)
        if raw is not None and len(raw) > max_len:
            self.errors[name] = f"must be at most {max_len} characters"
            return None
        return raw or None

    def raise_if_invalid(self) -> None:
        if self.errors:
            raise ValidationError(self.errors, "Some query parameters are not valid.")
