"""The JSON API under /api/v1 (see docs/API.md), its OpenAPI document and docs."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from shop.api import accounts, admin, admin_orders, admin_promotions, admin_webhooks, buying, docs, routes  # noqa: E402,F401 - routes attach themselves to bp
from shop.api import search as _search  # noqa: E402,F401 - GET /api/v1/search
