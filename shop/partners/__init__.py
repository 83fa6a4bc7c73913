"""Partner webhooks: outside systems register an HTTPS endpoint and the event types they want, and the shop POSTs
each such event to them, signed the Standard Webhooks way, retried with backoff for more than a day.

    models.py     endpoints, deliveries (one per endpoint and event) and their attempts (the delivery log)
    guard.py      the SSRF guard: which URLs and addresses a delivery may reach
    signing.py    secrets (kept encrypted) and the webhook-signature header
    sending.py    one HTTP attempt, pinned to the address the guard checked, redirects followed by hand
    services.py   the rules: endpoints, deliveries, the retry schedule, disabling endpoints that keep failing
    consumer.py   consumer group "webhooks": an event -> a delivery per subscribed endpoint
    jobs.py       the RQ jobs: one delivery now, and the every-minute scan of due retries

See docs/webhooks.md for what partners see.
"""
# The "webhooks" consumer group is declared in shop.partners.consumer (listed in shop.consumers.CONSUMER_MODULES).
