"""The storefront: server-rendered pages for shoppers."""

from flask import Blueprint

bp = Blueprint("storefront", __name__)

from shop.storefront import account, cart, checkout, orders, routes, stripe_return  # noqa: E402,F401
from shop.storefront import search as _search  # noqa: E402,F401 - /search and /search/suggest
