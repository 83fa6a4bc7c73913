"""The SSRF guard: a partner URL may only make the shop talk to the public internet.

A URL someone types into the back-office must not turn the shop into a proxy for the machines around it (the
database, Redis, the cloud's metadata service). So every URL is checked when an endpoint is registered and again
before each request and each redirect: its scheme is http or https, it carries no credentials, and every address
its host resolves to (getaddrinfo, all answers) is public. The request then connects to the address that was
checked (sending.py pins it), so a DNS answer that changes between the check and the connection (DNS rebinding)
cannot slip through.

WEBHOOK_ALLOW_PRIVATE=1 (development and tests) lets loopback and private addresses through; the cloud metadata
addresses, unspecified and multicast addresses are refused always.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2000
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class UrlNotAllowed(ValueError):
    """The URL may not be reached; the message says why, in words an admin understands."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`, pinned) and what to call the host (Host header, TLS SNI)."""

    url: str
    scheme: str
    host: str  # as in the URL (IPv6 without brackets)
    port: int
    path: str  # path and query, as sent in the request line
    address: str  # the checked IP address to connect to


IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why the shop must not connect to `ip`, or None when it may."""
    if ip.version == 6:  # an IPv4 address inside IPv6 (mapped, 6to4, Teredo) is judged as that IPv4 address
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return _refusal(inner, allow_private)
    if ip.version == 4 and ip in IETF_PROTOCOL:  # 192.0.0.0/24: Python 3.11 before 3.11.10 calls it global
        return "a reserved address"
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    kind = (
        "a loopback address"
        if ip.is_loopback
        else "a link-local address"
        if ip.is_link_local
        else "a carrier-grade NAT address"
        if ip.version == 4 and ip in CGNAT
        else "a private address"
        if ip.is_private
        else "a reserved address"
        if ip.is_reserved or not ip.is_global
        else None
    )
    if kind is None:
        return None
    if allow_private and kind in (
        "a loopback address",
        "a private address",
        "a link-local address",
        "a carrier-grade NAT address",
    ):
        return None
    return kind


def parse(url: object) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL without credentials; UrlNotAllowed otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise UrlNotAllowed("The URL is empty.")
    if len(url) > MAX_URL:
        raise UrlNotAllowed(f"The URL is longer than {MAX_URL} characters.")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UrlNotAllowed("The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"The URL cannot be read ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlNotAllowed("Only http:// and https:// URLs can receive webhooks.")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("The URL must not contain a user name or password; authenticate with the signature.")
    host = parts.hostname
    if not host:
        raise UrlNotAllowed("The URL names no host.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


def check(url: str, *, allow_private: bool = False) -> Target:
    """The URL as a Target pinned to its first address, after checking every address its host resolves to.
    UrlNotAllowed names the reason (bad URL, a host that does not resolve, a refused address)."""
    scheme, host, port, path = parse(url)
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UrlNotAllowed(f"The host {host} cannot be resolved ({exc}).") from None
    addresses = []
    for family, _type, _proto, _name, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # An AF_INET or AF_INET6 answer's address is text; an IPv6 zone index is not part of the address.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if (why := _refusal(ip, allow_private)) is not None:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise UrlNotAllowed(f"{shown} is {why}: webhooks may only reach public internet addresses.")
        addresses.append(str(ip))
    if not addresses:
        raise UrlNotAllowed(f"The host {host} has no IPv4 or IPv6 address.")
    return Target(url=url, scheme=scheme, host=host, port=port, path=path, address=addresses[0])
