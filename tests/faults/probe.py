"""Run inside the shop's environment by the fault suite (a separate process, the shop's own settings):

    python -m tests.faults.probe search

prints, as its last line, a JSON object of the products whose Typesense document differs from the
one the shop would build from PostgreSQL now ({product id: "field db/typesense; ..."}; {} when in step).
"""

from __future__ import annotations

import json
import sys

FIELDS = ("name", "in_stock", "popularity", "price_min", "price_max")


def search_drift() -> dict:
    from sqlalchemy import select

    from shop import create_app
    from shop.catalog.models import Product
    from shop.extensions import db
    from shop.search import engine

    app = create_app()
    with app.app_context():
        ids = list(db.session.scalars(select(Product.id).where(Product.status == "active")))
        expected = {str(k): v for k, v in engine.build_documents(ids).items()}
        db.session.rollback()
        collection = engine.client(30).collections[engine.alias_name()]
        indexed = {d["id"]: d for d in map(json.loads, filter(None, collection.documents.export().splitlines()))}
    drift = {}
    for pid in sorted(set(expected) | set(indexed), key=int):
        want, have = expected.get(pid), indexed.get(pid)
        if want is None or have is None:
            drift[pid] = "missing in " + ("PostgreSQL" if want is None else "Typesense")
            continue
        diffs = [f"{f} {want.get(f)}/{have.get(f)}" for f in FIELDS if want.get(f) != have.get(f)]
        if diffs:
            drift[pid] = "; ".join(diffs)
    return drift


if __name__ == "__main__":
    if sys.argv[1:] != ["search"]:
        sys.exit("usage: python -m tests.faults.probe search")
    print(json.dumps(search_drift()))
