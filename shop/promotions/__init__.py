"""Promotions: coupons and automatic sales as rules, evaluated purely, redeemed under locks."""
