"""Accounts: shoppers, staff, passwords, sessions, API tokens and the permission registry."""
