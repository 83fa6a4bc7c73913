"""The fault-injection suite (issue 10): a real shop under a shopper load while one server dies.

The tests share a private stack (PostgreSQL, Redis, Typesense under a temporary directory, started
once); each starts the shop as real processes (gunicorn, `worker.py`, the relay when `shop/outbox.py`
exists, the cron scheduler) on a database of its own copied from a migrated, seeded template, an
emptied Redis and a rebuilt search index, runs shoppers, injects one fault, lets the shop recover
and drain, then checks in SQL that nothing was lost or doubled. It takes a few minutes; `make test`
runs it. Skip it with

    .venv/bin/python -m pytest -m "not faults"          # or: make test FAST=1

Knobs (environment, seconds unless said): FAULT_SHOPPERS (3), FAULT_WARMUP (4), FAULT_AFTER (4),
FAULT_REDIS_DOWN (20), FAULT_REDIS_SIGNAL (TERM, or KILL for a crash), FAULT_DOWN (8, PostgreSQL and
Typesense), FAULT_WORKER_DOWN (the heartbeat TTL + 8, so /readyz?deep=1 can see it),
FAULT_HOLD_SECONDS (20, the reservation TTL), FAULT_DRAIN (150, the longest wait for queues and holds
to settle), FAULT_FRESH_STACK (0; 1 gives each test a private stack of its own). Each test prints a
summary line (run with -s to see it): wall time, answers, checkouts, payments, and what the drain
waited for.
"""
