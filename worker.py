"""The RQ worker: `python worker.py [--burst] [queue ...]`.

Listens on default, mail and search (or the queues named) with the scheduler, inside the app's
context so jobs can use the database. `--burst` works until the queues are empty, then exits.
"""
import argparse

from rq import Worker

from shop import create_app
from shop.extensions import QUEUE_NAMES, redis_ext


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python worker.py")
    parser.add_argument("queues", nargs="*", metavar="queue", help=f"any of {', '.join(QUEUE_NAMES)} (default: all)")
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    args = parser.parse_args(argv)
    if unknown := set(args.queues) - set(QUEUE_NAMES):
        parser.error(f"unknown queue(s): {', '.join(sorted(unknown))}")
    app = create_app()
    with app.app_context():
        queues = [redis_ext.queue(name) for name in args.queues or QUEUE_NAMES]
        worker = Worker(queues, connection=redis_ext.client)
        worker.work(with_scheduler=True, burst=args.burst)


if __name__ == "__main__":
    main()
