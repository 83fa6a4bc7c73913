"""Payments behind a gateway interface (Stripe PaymentIntents, or the built-in test gateway)."""
