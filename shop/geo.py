"""Countries and regions of addresses: ISO 3166-1 alpha-2 country codes, and ISO 3166-2 regions for the
countries whose tax depends on the region (those named "COUNTRY-REGION" in the tax table, the US by default).

The data is pycountry's (the ISO tables); this module only shapes it for forms and checks what a client sent.
A region is stored as its code within the country ("CA" for California), as the tax table names it.
"""

from __future__ import annotations

from functools import lru_cache

import pycountry

# Shorter names people know better than the ISO ones ("Korea, Republic of" -> "South Korea").
_COMMON = {
    "KR": "South Korea",
    "KP": "North Korea",
    "RU": "Russia",
    "IR": "Iran",
    "SY": "Syria",
    "VN": "Vietnam",
    "LA": "Laos",
    "BO": "Bolivia",
    "VE": "Venezuela",
    "TZ": "Tanzania",
    "MD": "Moldova",
    "FM": "Micronesia",
    "CD": "Congo (Democratic Republic)",
    "CG": "Congo",
    "PS": "Palestine",
    "VA": "Vatican City",
}


@lru_cache(maxsize=1)
def _countries() -> dict[str, str]:
    out = {}
    for c in pycountry.countries:
        out[c.alpha_2] = _COMMON.get(c.alpha_2) or getattr(c, "common_name", None) or c.name
    return out


def country_name(code: str | None) -> str:
    """ "GB" -> "United Kingdom"; an unknown code is given back as it is."""
    code = (code or "").strip().upper()
    return _countries().get(code, code)


def is_country(code: str | None) -> bool:
    return isinstance(code, str) and code.strip().upper() in _countries()


@lru_cache(maxsize=64)
def _regions(country: str) -> dict[str, str]:
    """Region code within the country -> name ("CA" -> "California"), sorted by name."""
    subs = pycountry.subdivisions.get(country_code=country) or []
    # Top-level subdivisions only (states, not the counties some countries list under them).
    top = [s for s in subs if not getattr(s, "parent_code", None)]
    pairs = sorted(((s.code.split("-", 1)[1], s.name) for s in top), key=lambda p: p[1])
    return dict(pairs)


def regional_countries(tax_rates: dict | None) -> list[str]:
    """The countries whose tax depends on the region: those with "COUNTRY-REGION" keys in the tax table."""
    return sorted({k.split("-", 1)[0].upper() for k in (tax_rates or {}) if "-" in k})


def regions(country: str | None) -> dict[str, str]:
    return _regions((country or "").strip().upper()) if country else {}


def region_code(country: str | None, value: str | None) -> str | None:
    """The region's code within the country for a code ("CA", "us-ca") or a name ("California"); None if unknown."""
    known = regions(country)
    value = (value or "").strip()
    if not value or not known:
        return None
    upper = value.upper()
    prefix = f"{(country or '').strip().upper()}-"
    if upper.startswith(prefix):
        upper = upper[len(prefix) :]
    if upper in known:
        return upper
    by_name = {name.casefold(): code for code, name in known.items()}
    return by_name.get(value.casefold())


def country_choices(first: list[str] | tuple = ()) -> list:
    """(value, label) choices for a <select>: the shop's main countries first, then every other by name."""
    names = _countries()
    main = [(c, names[c]) for c in first if c in names]
    rest = sorted(((c, n) for c, n in names.items() if c not in dict(main)), key=lambda p: p[1])
    if not main:
        return rest
    return [("Main countries", main), ("All countries", rest)]


def main_countries(tax_rates: dict | None) -> list[str]:
    """The countries the tax table names (where the shop sells most), US first."""
    named = {k.split("-", 1)[0].upper() for k in (tax_rates or {}) if k != "*"}
    return sorted(named, key=lambda c: (c != "US", country_name(c)))


def address_problems(address: dict, tax_rates: dict | None) -> tuple[dict, dict]:
    """(the address with its country and region normalised, {field: problem}).

    An unknown country code is refused; so is an unknown region of a country whose tax depends on the region
    (a missing one is left to the caller: the storefront asks for it, the API takes the country's rate)."""
    fields = {}
    address = dict(address)
    country = (address.get("country") or "").strip().upper()
    if country and not is_country(country):
        fields["country"] = "must be an ISO 3166-1 alpha-2 country code, e.g. US, GB or DE"
    elif country in regional_countries(tax_rates):
        region = (address.get("region") or "").strip()
        if region:
            code = region_code(country, region)
            if code is None:
                example = "CA" if "CA" in regions(country) else next(iter(sorted(regions(country))), "")
                fields["region"] = f"must be a region code of {country_name(country)} (ISO 3166-2), e.g. {example}"
            else:
                address["region"] = code
    return address, fields


def address_lines(a: dict | None) -> list[str]:
    """An address as its country writes it: "City, ST 12345" in the US (Canada and Australia alike),
    the postcode on its own line in the UK and Ireland, "12345 City" in most of Europe and elsewhere."""
    if not a:
        return []
    country = (a.get("country") or "").upper()
    city, region, postal = a.get("city") or "", a.get("region") or "", a.get("postal_code") or ""
    lines = [a.get("name") or "", a.get("line1") or "", a.get("line2") or ""]
    if country == "US":
        lines.append(f"{city}, {region} {postal}" if region else f"{city} {postal}")
    elif country in ("CA", "AU"):
        lines.append(" ".join(p for p in (city, region, postal) if p))
    elif country in ("GB", "IE"):
        lines += [city, region, postal]
    else:
        lines += [" ".join(p for p in (postal, city) if p), region]
    lines.append(country_name(country))
    return [line.strip() for line in lines if line and line.strip()]
