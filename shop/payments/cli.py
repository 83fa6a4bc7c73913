"""`flask --app wsgi payments check`: is this shop ready to take money through Stripe?

Everything the shop needs from Stripe is checked from here, before the first shopper finds out: the key (asked of
Stripe itself), the webhook signing secret, the public address, and the webhook endpoint Stripe delivers events to
(its URL, status and events). Each line says OK, WARN, FAIL (followed by how to fix it) or SKIP (not checkable
after an earlier failure); the exit code is 0 only when nothing failed, so a deploy script can run it. The signing
secret cannot be read back from Stripe: the proof that it is right is an event the shop accepted, which only happens
after its signature verified.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import AppGroup

payments_cli = AppGroup("payments", help="Check the payment provider's configuration.")

DASHBOARD_KEYS = "Stripe dashboard → Developers → API keys"
DASHBOARD_WEBHOOKS = "Stripe dashboard → Developers → Webhooks"
TEST_EVENT_HINT = (
    "send a test event from the Stripe dashboard (Developers → Webhooks → your endpoint → "
    "Send test event), then run this again."
)
# Key prefix -> (mode, kind). Restricted keys work too if they may read the account and the webhook endpoints.
KEY_KINDS = {
    "sk_live_": ("live", "secret key"),
    "sk_test_": ("test", "secret key"),
    "rk_live_": ("live", "restricted key"),
    "rk_test_": ("test", "restricted key"),
}


@dataclass
class Report:
    """The check's lines as they are printed, and how many failed or warned."""

    echo: object = click.echo
    failures: int = 0
    warnings: int = 0
    mode: str | None = None  # "live" or "test", from the key

    def _line(self, label: str, text: str, fix: str = "") -> None:
        self.echo(f"{label:<5} {text}")
        if fix:
            self.echo(f"      → {fix}")

    def ok(self, text: str) -> None:
        self._line("OK", text)

    def warn(self, text: str, fix: str = "") -> None:
        self.warnings += 1
        self._line("WARN", text, fix)

    def skip(self, text: str) -> None:
        """A check that could not run because an earlier one failed: neither a pass nor a new problem."""
        self._line("SKIP", text)

    def fail(self, text: str, fix: str = "") -> None:
        self.failures += 1
        self._line("FAIL", text, fix)


def key_mode(key: str) -> tuple[str, str] | None:
    """("live" | "test", "secret key" | "restricted key") from the key's prefix; None for anything else."""
    for prefix, kind in KEY_KINDS.items():
        if key.startswith(prefix):
            return kind
    return None


def _masked(key: str) -> str:
    """The prefix and the last four characters, as Stripe's dashboard shows keys: enough to tell them apart."""
    prefix = next((p for p in KEY_KINDS if key.startswith(p)), key[:3])
    return f"{prefix}…{key[-4:]}" if len(key) > len(prefix) + 4 else prefix + "…"


def _get(obj, *path, default=None):
    """obj[path[0]][path[1]]... on Stripe objects (dict-like) or plain dicts; `default` where a step is missing."""
    for name in path:
        if obj is None:
            return default
        obj = obj.get(name) if hasattr(obj, "get") else getattr(obj, name, None)
    return default if obj is None else obj


def _is_loopback_url(url: str) -> bool:
    from config import is_loopback

    return is_loopback(urlsplit(url).hostname or "")


def stripe_client(config):
    """The official SDK's client, as the gateway builds it, but with one retry only: the operator is waiting."""
    import stripe

    return stripe.StripeClient(
        config["STRIPE_SECRET_KEY"],
        base_addresses={"api": config["STRIPE_API_BASE"]},
        max_network_retries=1,
        http_client=stripe.RequestsClient(timeout=10),
    )


def _stripe_trouble(report: Report, exc: Exception, asking: str, permission: str) -> None:
    """One FAIL line for an SDK error while `asking` Stripe for something, never a traceback."""
    import stripe

    message = (getattr(exc, "user_message", None) or str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
    base = current_app.config["STRIPE_API_BASE"]
    if isinstance(exc, stripe.AuthenticationError):
        report.fail(
            f"Stripe refused the key ({message})",
            f"copy the secret key (sk_live_… or sk_test_…) from {DASHBOARD_KEYS} into STRIPE_SECRET_KEY.",
        )
    elif isinstance(exc, stripe.PermissionError):
        report.fail(
            f"The key may not {asking} ({message})",
            f"give the restricted key {permission} (Read) in {DASHBOARD_KEYS}, or use the secret key.",
        )
    elif isinstance(exc, stripe.APIConnectionError):
        cause = re.search(r"Network error: (\w+)", str(exc))
        report.fail(
            f"Stripe is unreachable at {base} while trying to {asking}" + (f" ({cause.group(1)})" if cause else ""),
            "check this server's outbound HTTPS (firewall, proxy, DNS) and STRIPE_API_BASE if you set it, "
            "then run this again.",
        )
    else:
        status = getattr(exc, "http_status", None)
        report.fail(
            f"Stripe answered an error ({status or type(exc).__name__}) while trying to {asking}: {message}",
            "run this again in a minute; if it persists, see status.stripe.com.",
        )


# -- the parts of the check ------------------------------------------------------------------------------
def check_key(report: Report, config) -> str | None:
    """The key's format; returns its mode ("live" or "test"), or None when it is missing or not a secret key."""
    key = config.get("STRIPE_SECRET_KEY") or ""
    if not key:
        report.fail(
            "STRIPE_SECRET_KEY is not set",
            f"set it to the secret key from {DASHBOARD_KEYS} (sk_test_… to rehearse, sk_live_… to take money).",
        )
        return None
    if key.startswith("pk_"):
        report.fail(
            "STRIPE_SECRET_KEY holds a publishable key (pk_…)",
            f"use the secret key (sk_live_… or sk_test_…) from {DASHBOARD_KEYS}; the shop needs no publishable key.",
        )
        return None
    if key.startswith("whsec_"):
        report.fail(
            "STRIPE_SECRET_KEY holds a webhook signing secret (whsec_…)",
            f"that value belongs in STRIPE_WEBHOOK_SECRET; STRIPE_SECRET_KEY is the sk_… key from {DASHBOARD_KEYS}.",
        )
        return None
    kind = key_mode(key)
    if kind is None:
        report.fail(
            f"STRIPE_SECRET_KEY ({_masked(key)}) does not look like a Stripe secret key",
            f"copy the key starting sk_live_, sk_test_ or rk_ from {DASHBOARD_KEYS}.",
        )
        return None
    mode, what = kind
    money = "real money" if mode == "live" else "test cards only, no money moves"
    report.ok(f"STRIPE_SECRET_KEY is a {mode}-mode {what} ({_masked(key)}): {money}")
    return mode


def check_account(report: Report, client, mode: str) -> bool:
    """GET /v1/account: the key is accepted, and the account can charge. False when Stripe could not be asked."""
    import stripe

    try:
        account = client.v1.accounts.retrieve_current()
    except stripe.StripeError as exc:
        _stripe_trouble(report, exc, "read the account", "the Account permission")
        return False
    name = (
        _get(account, "settings", "dashboard", "display_name")
        or _get(account, "business_profile", "name")
        or "(no display name)"
    )
    report.ok(f'Stripe accepted the key: account {_get(account, "id", default="?")} "{name}", {mode} mode')
    if _get(account, "charges_enabled", default=False):
        report.ok("Charges are enabled on the account")
    elif mode == "live":
        report.fail(
            "Charges are not enabled on the account: live payments would be refused",
            "finish activating the account in the Stripe dashboard (the banner on its home page says what is missing).",
        )
    else:
        report.warn(
            "Charges are not enabled on the account yet: test payments work, live ones will not",
            "activate the account in the Stripe dashboard before switching to the live key.",
        )
    return True


def check_webhook_secret(report: Report, config) -> None:
    secret = config.get("STRIPE_WEBHOOK_SECRET") or ""
    if not secret:
        report.fail(
            "STRIPE_WEBHOOK_SECRET is not set: every event Stripe sends would be refused (400)",
            f"copy the endpoint's signing secret (whsec_…) from {DASHBOARD_WEBHOOKS} → your endpoint → "
            "Signing secret → Reveal.",
        )
    elif not secret.startswith("whsec_"):
        report.fail(
            "STRIPE_WEBHOOK_SECRET does not look like a signing secret (it starts with whsec_)",
            f"copy the endpoint's signing secret from {DASHBOARD_WEBHOOKS} → your endpoint → Signing "
            "secret → Reveal (not an API key).",
        )
    else:
        report.ok("STRIPE_WEBHOOK_SECRET is set (whsec_…)")


def check_public_url(report: Report, config, mode: str | None) -> bool:
    """PUBLIC_BASE_URL as Stripe must reach it. False when no endpoint can be registered for it (loopback)."""
    base = config.get("PUBLIC_BASE_URL") or ""
    if not base:
        report.fail("PUBLIC_BASE_URL is not set", "set it to the shop's public address, e.g. https://shop.example.com.")
        return False
    scheme = urlsplit(base).scheme
    if _is_loopback_url(base):
        if mode == "live":
            report.fail(
                f"PUBLIC_BASE_URL is {base}: Stripe cannot deliver events to this machine's loopback",
                "set PUBLIC_BASE_URL to the shop's public https address.",
            )
        else:
            report.warn(
                f"PUBLIC_BASE_URL is {base}: Stripe cannot reach it, so no webhook endpoint is checked",
                "rehearsing on this machine? forward events with the Stripe CLI (`stripe listen "
                f"--forward-to {base}/webhooks/stripe`) and set STRIPE_WEBHOOK_SECRET to the secret it "
                "prints.",
            )
        return False
    if scheme != "https":
        if mode == "live":
            report.fail(
                f"PUBLIC_BASE_URL is {base}: live mode needs https (Stripe delivers live events over https "
                "only, and shoppers' sessions need it)",
                "serve the shop over https and set PUBLIC_BASE_URL=https://….",
            )
            return True
        report.warn(f"PUBLIC_BASE_URL is {base}: fine for test mode, but live mode will need https")
        return True
    report.ok(f"PUBLIC_BASE_URL is {base}")
    return True


def handled_events() -> list[str]:
    """Every event type the shop acts on, from the webhook handlers themselves."""
    from shop.payments.services import HANDLERS

    return sorted(HANDLERS)


def _missing_events(endpoint, wanted: list[str]) -> list[str]:
    enabled = set(_get(endpoint, "enabled_events", default=[]) or [])
    return [] if "*" in enabled else [name for name in wanted if name not in enabled]


def check_endpoint(report: Report, client, url: str) -> None:
    """GET /v1/webhook_endpoints: one endpoint at the shop's URL, enabled, sending every event the shop handles."""
    import stripe

    try:
        endpoints = list(client.v1.webhook_endpoints.list(params={"limit": 100}).data)
    except stripe.StripeError as exc:
        _stripe_trouble(report, exc, "list the webhook endpoints", "the Webhook Endpoints permission")
        return
    wanted = handled_events()
    here = [e for e in endpoints if (_get(e, "url") or "").rstrip("/") == url]
    if not here:
        elsewhere = ", ".join(sorted(_get(e, "url", default="?") for e in endpoints)) or "none"
        report.fail(
            f"No webhook endpoint sends events to {url} (endpoints in this mode: {elsewhere})",
            f"{DASHBOARD_WEBHOOKS} → Add endpoint: URL {url}, events: {', '.join(wanted)}; then put its "
            "signing secret in STRIPE_WEBHOOK_SECRET.",
        )
        return
    # Prefer an enabled endpoint that sends everything: that is the one whose secret should be configured.
    here.sort(key=lambda e: (_get(e, "status") != "enabled", len(_missing_events(e, wanted))))
    endpoint = here[0]
    endpoint_id = _get(endpoint, "id", default="?")
    if len(here) > 1:
        report.warn(
            f"{len(here)} webhook endpoints send events to {url}: each signs with its own secret, so the "
            "shop refuses one of them (400) and Stripe keeps retrying it",
            f"keep one ({endpoint_id}) and delete the others in {DASHBOARD_WEBHOOKS}.",
        )
    if _get(endpoint, "status") == "enabled":
        report.ok(f"Webhook endpoint {endpoint_id} at {url} is enabled")
    else:
        report.fail(
            f"Webhook endpoint {endpoint_id} at {url} is {_get(endpoint, 'status', default='not enabled')}: "
            "Stripe sends it nothing",
            f"enable it in {DASHBOARD_WEBHOOKS} → {endpoint_id} → ⋯ → Enable.",
        )
    missing = _missing_events(endpoint, wanted)
    if missing:
        report.fail(
            f"The endpoint does not send {len(missing)} of the {len(wanted)} events the shop handles: "
            f"{', '.join(missing)}",
            f"{DASHBOARD_WEBHOOKS} → {endpoint_id} → Update details → Select events: add them.",
        )
    else:
        report.ok(f"It sends all {len(wanted)} events the shop handles")


def check_last_event(report: Report, mode: str | None) -> None:
    """The newest Stripe event the shop accepted: stored only after its signature verified with the configured
    secret, so it is the proof the secret matches. Events of the built-in test gateway (no `livemode`) do not
    count. None yet is a warning: a new shop has simply not been sent one."""
    from sqlalchemy import select

    from shop.extensions import db
    from shop.payments.models import WebhookEvent

    try:
        row = db.session.execute(
            select(WebhookEvent.type, WebhookEvent.received_at, WebhookEvent.payload["livemode"].astext)
            .where(WebhookEvent.provider == "stripe", WebhookEvent.payload.has_key("livemode"))
            .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
            .limit(1)
        ).first()
        db.session.commit()
    except Exception as exc:  # noqa: BLE001 - reported; the database is not what this command checks
        db.session.rollback()
        report.warn(
            f"Could not read the received events from the database ({type(exc).__name__})",
            "check DATABASE_URL and that `flask --app wsgi db upgrade` ran.",
        )
        return
    if row is None:
        report.warn("No signed event received yet: " + TEST_EVENT_HINT)
        return
    kind, received_at, livemode = row
    if received_at.tzinfo is not None:
        received_at = received_at.astimezone(UTC)
    event_mode = "live" if livemode == "true" else "test"
    report.ok(f"Last signed event accepted: {kind} at {received_at:%Y-%m-%d %H:%M:%S} UTC ({event_mode} mode)")
    if mode and event_mode != mode:
        report.warn(
            f"That event came from {event_mode} mode; none from {mode} mode has been accepted yet",
            "the two modes have separate endpoints and signing secrets: " + TEST_EVENT_HINT,
        )


def check(config, echo=click.echo) -> Report:
    """Run every check for `config` (the app's), printing as it goes. Needs an app context."""
    from shop.security import external_url

    report = Report(echo=echo)
    provider = config.get("PAYMENT_PROVIDER")
    if provider == "test":
        echo("Payments: the built-in test gateway (PAYMENT_PROVIDER=test); Stripe is not checked.")
        if config.get("ENV_NAME") == "production":
            echo(
                "This shop takes no money. To take payments, set PAYMENT_PROVIDER=stripe and the STRIPE_* "
                "settings, then run this again."
            )
        return report
    if provider != "stripe":
        report.fail(f"PAYMENT_PROVIDER is {provider!r}", "set it to stripe (or test for the built-in test gateway).")
        return report
    echo(f"Payments: Stripe (PAYMENT_PROVIDER=stripe, {config['STRIPE_API_BASE']})")
    mode = report.mode = check_key(report, config)
    reachable = False
    client = stripe_client(config) if mode else None
    if client is not None:
        reachable = check_account(report, client, mode)
    check_webhook_secret(report, config)
    public = check_public_url(report, config, mode)
    if client is not None and reachable and public:
        check_endpoint(report, client, external_url("webhooks.stripe_webhook"))
    elif public:
        report.skip("Webhook endpoint not checked: it needs a key Stripe accepts (see above)")
    check_last_event(report, mode)
    return report


@payments_cli.command("check")
def payments_check() -> None:
    """Check the Stripe configuration line by line; exit 1 when something needed is missing."""
    logging.getLogger("stripe").setLevel(logging.WARNING)  # the SDK's request log would drown the report
    report = check(current_app.config)
    if report.failures:
        click.echo(
            f"\n{_count(report.failures, 'problem')} to fix before the shop can take payments; run this "
            "again once fixed."
        )
        click.get_current_context().exit(1)
    if current_app.config.get("PAYMENT_PROVIDER") == "stripe":
        warned = f" ({_count(report.warnings, 'warning')} above)" if report.warnings else ""
        kind = "real" if report.mode == "live" else "test"
        click.echo(f"\nReady to take {kind} payments through Stripe{warned}.")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
