"""Checkout: from a cart to a pending order with reserved stock and a payment to make."""
