"""One delivery attempt over HTTP: POST the signed body, follow up to MAX_REDIRECTS redirects by hand.

No database here: services.py claims the delivery, calls `post()` outside any transaction and records the result.
Each hop's URL passes the SSRF guard and the connection goes to the address the guard checked (the host name still
names the server in the Host header and in TLS's SNI and certificate check), so neither a redirect nor a DNS answer
that changed since the check can lead the shop to a private address.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

import certifi
import urllib3
from urllib3.exceptions import HTTPError

from shop import clock
from shop.partners import guard

TIMEOUT = 10.0  # seconds per request (connect and answer)
MAX_REDIRECTS = 3
EXCERPT = 2048  # bytes of the body sent and the answer received that the delivery log keeps
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "ShopWebhooks/1.0 (+Standard Webhooks)"


@dataclass
class Result:
    started_at: datetime
    url: str
    request_headers: dict
    status: int | None = None
    response_excerpt: str = ""
    error: str | None = None
    duration_ms: int = 0
    hops: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def _host_header(target: guard.Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _pool(target: guard.Target, timeout: float):
    """A connection pool to the checked address; TLS verifies the certificate against the URL's host name."""
    timeouts = urllib3.Timeout(connect=timeout, read=timeout)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeouts,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            assert_hostname=target.host,
            server_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeouts, retries=False)


def _excerpt(data: bytes) -> str:
    return data[:EXCERPT].decode("utf-8", errors="replace")


def post(url: str, body: str, headers: dict, *, allow_private: bool, timeout: float = TIMEOUT) -> Result:
    """POST `body` to `url` with `headers`; never raises for what the network or the partner does."""
    started, ticks = clock.now(), time.monotonic()
    sent_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    result = Result(started_at=started, url=url, request_headers=sent_headers)
    payload = body.encode()
    try:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                target = guard.check(url, allow_private=allow_private)
            except guard.UrlNotAllowed as exc:
                result.error = f"{'redirect refused' if hop else 'URL refused'}: {exc}"
                return result
            result.url = url
            result.hops.append(url)
            pool = _pool(target, timeout)
            try:
                response = pool.urlopen(
                    "POST",
                    target.path,
                    body=payload,
                    headers={**sent_headers, "Host": _host_header(target)},
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                )
                try:
                    result.status = response.status
                    result.response_excerpt = _excerpt(response.read(EXCERPT))
                    location = response.headers.get("Location")
                finally:
                    response.release_conn()
            finally:
                pool.close()
            if response.status not in REDIRECTS or not location:
                return result
            if hop == MAX_REDIRECTS:
                result.error = f"more than {MAX_REDIRECTS} redirects"
                return result
            url = urljoin(url, location)
    except (HTTPError, OSError) as exc:
        result.error = _network_error(exc, timeout)
        return result
    finally:
        result.duration_ms = int((time.monotonic() - ticks) * 1000)
    return result


def _network_error(exc: BaseException, timeout: float) -> str:
    """A one-line reason: a timeout, a refused connection, a TLS failure."""
    reason = getattr(exc, "reason", None) or exc
    text = f"{type(reason).__name__}: {reason}"
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or "timed out" in text.lower():
        return f"timed out after {timeout:g} s ({text})"[:500]
    if "refused" in text.lower():
        return f"connection refused ({text})"[:500]
    return text[:500]
