"""`flask --app wsgi payments check` against the local Stripe (tests/fakes/stripe.py): what an operator going live
reads, line by line, and the exit code a deploy script acts on."""

from __future__ import annotations

import pytest

from tests.fakes.stripe import FakeStripe

KEY = "sk_test_check"
WEBHOOK_SECRET = "whsec_check"
SHOP_URL = "https://shop.example.com"
ENDPOINT_URL = SHOP_URL + "/webhooks/stripe"


@pytest.fixture
def stripe_api(app, db_session, monkeypatch):
    """The suite's app in Stripe mode, talking to a local Stripe that accepts KEY only."""
    with FakeStripe(secret_key=KEY, webhook_secret=WEBHOOK_SECRET) as fake:
        for name, value in {
            "PAYMENT_PROVIDER": "stripe",
            "STRIPE_SECRET_KEY": KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": fake.url,
            "PUBLIC_BASE_URL": SHOP_URL,
        }.items():
            monkeypatch.setitem(app.config, name, value)
        yield fake


def handled() -> list[str]:
    from shop.webhooks.services import HANDLERS

    return sorted(HANDLERS)


def run_check(app):
    """(exit code, what was printed). The command never ends in an exception of its own: the runner would catch
    it silently, where an operator would see a traceback."""
    result = app.test_cli_runner().invoke(args=["payments", "check"])
    print(result.output)  # shown when a test fails
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def lines(output: str, label: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(label)]


def accept_signed_event(client, fake, kind="customer.created"):
    """Stripe's dashboard "Send test event": signed with the endpoint's secret, posted to the shop's webhook."""
    body, header = fake.event(kind, {"id": "cus_1", "object": "customer"})
    resp = client.post(
        "/webhooks/stripe", data=body, content_type="application/json", headers={"Stripe-Signature": header}
    )
    assert resp.status_code == 200


def test_a_ready_shop_passes_with_ok_lines_and_the_last_signed_event(app, client, stripe_api):
    stripe_api.add_webhook_endpoint(ENDPOINT_URL, handled())
    accept_signed_event(client, stripe_api)
    code, output = run_check(app)
    assert code == 0, output
    assert not lines(output, "FAIL") and not lines(output, "WARN"), output
    ok = "\n".join(lines(output, "OK"))
    assert "test-mode secret key" in ok and "Stripe accepted the key" in ok
    assert "Webhook endpoint" in ok and ENDPOINT_URL in ok and f"all {len(handled())} events" in ok
    assert "Last signed event accepted: customer.created at" in ok
    assert "Ready to take test payments through Stripe" in output
    assert KEY not in output  # the key itself is never printed
    assert stripe_api.calls("GET", "/v1/account") and stripe_api.calls("GET", "/v1/webhook_endpoints")


def test_no_event_received_yet_is_a_warning_that_says_how_to_send_one(app, db_session, stripe_api):
    stripe_api.add_webhook_endpoint(ENDPOINT_URL, ["*"])
    code, output = run_check(app)
    assert code == 0, output
    warning = "\n".join(lines(output, "WARN"))
    assert "No signed event received yet" in warning and "Send test event" in warning


def test_a_wrong_key_is_refused_by_stripe_and_fails(app, stripe_api, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_someone_elses")
    code, output = run_check(app)
    assert code == 1, output
    assert "Stripe refused the key" in "\n".join(lines(output, "FAIL"))
    assert "Developers → API keys" in output


def test_an_endpoint_missing_events_fails_and_names_them(app, stripe_api):
    events = handled()
    left_out = events[:2]
    stripe_api.add_webhook_endpoint(ENDPOINT_URL, events[2:] + ["customer.created"])
    code, output = run_check(app)
    assert code == 1, output
    failure = "\n".join(lines(output, "FAIL"))
    assert f"does not send {len(left_out)} of the {len(events)} events" in failure
    for name in left_out:
        assert name in failure
    for name in events[2:]:
        assert name not in failure


def test_no_endpoint_at_the_shops_url_fails_and_shows_the_one_found(app, stripe_api):
    stripe_api.add_webhook_endpoint("https://old-shop.example.com/webhooks/stripe", handled())
    code, output = run_check(app)
    assert code == 1, output
    failure = "\n".join(lines(output, "FAIL"))
    assert f"No webhook endpoint sends events to {ENDPOINT_URL}" in failure
    assert "https://old-shop.example.com/webhooks/stripe" in failure
    assert "Add endpoint" in output


def test_stripe_unreachable_fails_with_a_sentence_not_a_traceback(app, stripe_api):
    stripe_api.stop()
    code, output = run_check(app)
    assert code == 1, output
    assert "Stripe is unreachable" in "\n".join(lines(output, "FAIL"))
    assert "Traceback" not in output


def test_a_live_key_needs_an_https_address(app, stripe_api, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_live_" + "x" * 24)
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", "http://shop.example.com")
    code, output = run_check(app)
    assert code == 1, output
    failures = "\n".join(lines(output, "FAIL"))
    assert "live mode needs https" in failures
    assert "live-mode secret key" in output  # what the key is, read from its prefix


def test_the_test_gateway_is_reported_and_stripe_not_asked(app, stripe_api, monkeypatch):
    monkeypatch.setitem(app.config, "PAYMENT_PROVIDER", "test")
    code, output = run_check(app)
    assert code == 0, output
    assert "built-in test gateway" in output and "Stripe is not checked" in output
    assert stripe_api.calls() == []


def test_a_disabled_endpoint_fails(app, stripe_api):
    endpoint = stripe_api.add_webhook_endpoint(ENDPOINT_URL, handled(), status="disabled")
    code, output = run_check(app)
    assert code == 1, output
    assert f"{endpoint['id']} at {ENDPOINT_URL} is disabled" in "\n".join(lines(output, "FAIL"))


def test_charges_not_enabled_is_a_warning_in_test_mode(app, stripe_api):
    stripe_api.account["charges_enabled"] = False
    stripe_api.add_webhook_endpoint(ENDPOINT_URL, ["*"])
    code, output = run_check(app)
    assert code == 0, output
    assert "Charges are not enabled on the account yet" in "\n".join(lines(output, "WARN"))


def test_the_test_gateways_own_events_are_not_taken_for_stripes(app, client, stripe_api):
    """The built-in gateway posts to the same webhook (no `livemode` in its events): that proves nothing about the
    secret Stripe signs with."""
    import json

    import stripe

    body = json.dumps(
        {
            "id": "evt_test_gateway1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_test_unknown", "object": "payment_intent"}},
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    assert (
        client.post(
            "/webhooks/stripe", data=body, content_type="application/json", headers={"Stripe-Signature": header}
        ).status_code
        == 200
    )
    stripe_api.add_webhook_endpoint(ENDPOINT_URL, ["*"])
    code, output = run_check(app)
    assert code == 0, output
    assert "No signed event received yet" in output and "Last signed event accepted" not in output
