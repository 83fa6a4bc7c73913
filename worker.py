"""The RQ worker: `python worker.py [queue ...]` listens on default, mail and search (with the scheduler)."""
import sys

from rq import Worker

from shop import create_app
from shop.extensions import QUEUE_NAMES, redis_ext


def main(argv: list[str]) -> None:
    app = create_app()
    names = argv or list(QUEUE_NAMES)
    with app.app_context():
        queues = [redis_ext.queue(name) for name in names]
        worker = Worker(queues, connection=redis_ext.client)
        worker.work(with_scheduler=True)


if __name__ == "__main__":
    main(sys.argv[1:])
