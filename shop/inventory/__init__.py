"""Inventory: stock on hand, low-stock lists (reservations arrive with checkout)."""
