"""The floor for bench/catalog.py: the least a Flask request that touches PostgreSQL can cost.

One endpoint, `GET /bare`, runs `SELECT 1` through a SQLAlchemy engine on the shop's DATABASE_URL
and returns a tiny JSON body. It is served by the same gunicorn set-up as the shop, so the ratio of
a shop page's requests/s to this one's says how much the page costs beyond "Flask + one round trip
to the database". The engine gets the shop's own URL rewriting (psycopg 3 driver) and pool options
(pool_pre_ping included), so both sides pay the same per-request connection checkout.

    DATABASE_URL=postgresql://... gunicorn bench.bare_app:app
"""

from __future__ import annotations

from flask import Flask, jsonify
from sqlalchemy import create_engine, text

from config import from_environment

app = Flask(__name__)
settings = from_environment()
engine = create_engine(settings["SQLALCHEMY_DATABASE_URI"], **settings["SQLALCHEMY_ENGINE_OPTIONS"])


@app.get("/bare")
def bare():
    with engine.connect() as conn:
        one = conn.execute(text("SELECT 1")).scalar_one()
    return jsonify(ok=one == 1)
