"""Product search: Typesense when it answers, PostgreSQL full-text search when it does not.

engine.py   the client, the collection schema, documents built from the database
services.py search() and suggest(), with the database fallback
jobs.py     sync_products(), reindex() (new collection + alias swap), reconcile()
hooks.py    consumer group "search": product.* and stock.changed events -> sync jobs on the `search` queue;
            category changes -> a reindex job with their commit
"""
