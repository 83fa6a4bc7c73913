"""gunicorn settings for production: `gunicorn -c deploy/gunicorn.conf.py wsgi:app` (docs/observability.md).

Every setting can still be given on the command line or in GUNICORN_CMD_ARGS. With PROMETHEUS_MULTIPROC_DIR set
(an empty directory the workers share, emptied before gunicorn starts), /metrics adds up every worker's figures;
child_exit drops a dead worker's live gauges (its counters stay counted)."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"  # keep-alive connections survive between requests (the sync worker closes each one)
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
accesslog = None  # the app writes one JSON line per request (LOG_FORMAT=json): no second access log


def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):  # figures of an earlier run would be added to this one's
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))


def child_exit(server, worker):
    from shop.telemetry.metrics import mark_process_dead

    mark_process_dead(worker.pid)
