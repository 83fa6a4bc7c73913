"""Carts for guests (by token) and users, priced from the catalogue at every read."""
